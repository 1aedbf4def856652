"""What compiled queries mean: conditions per event, the time window, group keys and the prefilter strings.

It proves, on events shaped like decoded Defender rows (strings ``""`` for null, longs ``int``
or ``None``, datetimes as integer ticks): every operator and its negation, with KQL's null rules
(string operators are total; ``==`` with a null long is false and ``!=`` true; ordering with null
is null, so ``not(X < 5)`` does not keep a null X; three-valued ``and``/``or``); how the
now()-relative ``Timestamp`` conditions become an inclusive tick-exact ``TimeWindow`` and how it
moves with ``now``; and which strings the byte prefilter may require for each combination.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rmmwatch.kql import strings
from rmmwatch.kql.compiled import CompiledQuery, TimeWindow
from rmmwatch.kql.compiler import compile_query
from rmmwatch.kql.datetimes import TICKS_PER_DAY, TICKS_PER_HOUR, parse_datetime
from rmmwatch.kql.errors import KqlError
from rmmwatch.kql.schema import DEVICE_PROCESS_EVENTS

TABLE = "DeviceProcessEvents"
BY = " | summarize count() by DeviceId"
NOW = parse_datetime("2026-11-20T12:00:00.1234567Z")
NEW_YEAR = parse_datetime("2026-01-01")


def event(**fields: Any) -> dict[str, Any]:
    """A decoded DeviceProcessEvents row: every string ``""`` and every other column null, then ``fields``."""
    row: dict[str, Any] = {
        name: ("" if kind in ("string", "dynamic") else None) for name, kind in DEVICE_PROCESS_EVENTS.items()
    }
    row.update(fields)
    return row


def where(*predicates: str) -> CompiledQuery:
    """Compile ``DeviceProcessEvents | where p1 | where p2 ... | summarize count() by DeviceId``."""
    wheres = "".join(f" | where {p}" for p in predicates)
    return compile_query(f"{TABLE}{wheres}{BY}")


def _vector(predicate: str, fields: dict[str, Any], expected: bool) -> object:
    shown = ", ".join(f"{k}={v!r}" for k, v in fields.items()) or "all null"
    return pytest.param(predicate, fields, expected, id=f"where {predicate} | {shown} -> {expected}")


EXE = {"FileName": "client32.exe"}
NULL_STRING = {"FileName": ""}

STRING_VECTORS = [
    _vector('FileName has "client32"', EXE, True),
    _vector('FileName has "client"', EXE, False),
    _vector('FileName has "CLIENT32"', EXE, True),
    _vector('FileName !has "client"', EXE, True),
    _vector('FileName !has "exe"', EXE, False),
    _vector('FileName has_cs "client32"', EXE, True),
    _vector('FileName has_cs "Client32"', EXE, False),
    _vector('FileName !has_cs "Client32"', EXE, True),
    _vector('FileName has_any ("x", "client32")', EXE, True),
    _vector('FileName has_any ("x", "client")', EXE, False),
    _vector("FileName has_any ()", EXE, False),
    _vector('FileName has_all ("client32", "EXE")', EXE, True),
    _vector('FileName has_all ("client32", "dll")', EXE, False),
    _vector("FileName has_all ()", EXE, True),
    _vector('FileName contains "ENT3"', EXE, True),
    _vector('FileName !contains "ENT3"', EXE, False),
    _vector('FileName contains_cs "ENT3"', EXE, False),
    _vector('FileName !contains_cs "ENT3"', EXE, True),
    _vector('FileName startswith "CLIENT"', EXE, True),
    _vector('FileName !startswith "CLIENT"', EXE, False),
    _vector('FileName startswith_cs "CLIENT"', EXE, False),
    _vector('FileName !startswith_cs "CLIENT"', EXE, True),
    _vector('FileName endswith ".EXE"', EXE, True),
    _vector('FileName !endswith ".EXE"', EXE, False),
    _vector('FileName endswith_cs ".EXE"', EXE, False),
    _vector('FileName !endswith_cs ".EXE"', EXE, True),
    _vector('FileName == "client32.exe"', EXE, True),
    _vector('FileName == "Client32.exe"', EXE, False),
    _vector('FileName != "Client32.exe"', EXE, True),
    _vector('FileName <> "client32.exe"', EXE, False),
    _vector('FileName =~ "CLIENT32.EXE"', EXE, True),
    _vector('FileName =~ "client32"', EXE, False),
    _vector('FileName in ("a", "client32.exe")', EXE, True),
    _vector('FileName in ("CLIENT32.EXE")', EXE, False),
    _vector('FileName !in ("CLIENT32.EXE")', EXE, True),
    _vector('FileName in~ ("CLIENT32.EXE")', EXE, True),
    _vector('FileName !in~ ("CLIENT32.EXE")', EXE, False),
    _vector('FileName in (dynamic(["a", "client32.exe"]))', EXE, True),
    _vector("isempty(FileName)", EXE, False),
    _vector("isnotempty(FileName)", EXE, True),
    # strings are never null: a null string is "" and every string operator answers
    _vector('FileName has "x"', NULL_STRING, False),
    _vector('FileName !has "x"', NULL_STRING, True),
    _vector('FileName has ""', NULL_STRING, True),
    _vector('FileName !has ""', NULL_STRING, False),
    _vector('FileName contains ""', NULL_STRING, True),
    _vector('FileName !contains "x"', NULL_STRING, True),
    _vector('FileName startswith "x"', NULL_STRING, False),
    _vector('FileName !startswith "x"', NULL_STRING, True),
    _vector('FileName == ""', NULL_STRING, True),
    _vector('FileName != ""', NULL_STRING, False),
    _vector('FileName != "x"', NULL_STRING, True),
    _vector('FileName =~ ""', NULL_STRING, True),
    _vector('FileName in ("")', NULL_STRING, True),
    _vector('FileName in ("x")', NULL_STRING, False),
    _vector('FileName !in ("x")', NULL_STRING, True),
    _vector('FileName in~ ("X")', NULL_STRING, False),
    _vector('FileName !in~ ("X")', NULL_STRING, True),
    _vector("isempty(FileName)", NULL_STRING, True),
    _vector("isnotempty(FileName)", NULL_STRING, False),
    _vector("isnull(FileName)", NULL_STRING, False),
    _vector("isnotnull(FileName)", NULL_STRING, True),
    _vector('AdditionalFields has "Sig"', {"AdditionalFields": '{"Sig":1}'}, True),
    _vector('AdditionalFields has "x"', {}, False),
]

LONG_VECTORS = [
    _vector("ProcessId == 7", {"ProcessId": 7}, True),
    _vector("ProcessId == 7.0", {"ProcessId": 7}, True),
    _vector("ProcessId != 7", {"ProcessId": 7}, False),
    _vector("ProcessId < 8", {"ProcessId": 7}, True),
    _vector("ProcessId < 7", {"ProcessId": 7}, False),
    _vector("ProcessId <= 7", {"ProcessId": 7}, True),
    _vector("ProcessId > 7", {"ProcessId": 7}, False),
    _vector("ProcessId >= 7", {"ProcessId": 7}, True),
    _vector("8 > ProcessId", {"ProcessId": 7}, True),
    _vector("ProcessId between (1 .. 7)", {"ProcessId": 7}, True),
    _vector("ProcessId between (8 .. 9)", {"ProcessId": 7}, False),
    _vector("ProcessId !between (1 .. 7)", {"ProcessId": 7}, False),
    _vector("ProcessId in (1, 7)", {"ProcessId": 7}, True),
    _vector("ProcessId in (-7)", {"ProcessId": -7}, True),
    _vector("ProcessId !in (7)", {"ProcessId": 7}, False),
    _vector("isempty(ProcessId)", {"ProcessId": 0}, False),
    _vector("isnotempty(ProcessId)", {"ProcessId": 0}, True),
    _vector("isnull(ProcessId)", {"ProcessId": 0}, False),
    # null long: == false, != true, ordering null (and not(null) is null), in false, !in true
    _vector("ProcessId == 7", {}, False),
    _vector("ProcessId != 7", {}, True),
    _vector("ProcessId < 8", {}, False),
    _vector("not(ProcessId < 8)", {}, False),
    _vector("ProcessId >= 8", {}, False),
    _vector("not(ProcessId >= 8)", {}, False),
    _vector("8 > ProcessId", {}, False),
    _vector("ProcessId between (1 .. 7)", {}, False),
    _vector("ProcessId !between (1 .. 7)", {}, False),
    _vector("not(ProcessId between (1 .. 7))", {}, False),
    _vector("ProcessId in (7)", {}, False),
    _vector("ProcessId !in (7)", {}, True),
    _vector("isempty(ProcessId)", {}, True),
    _vector("isnotempty(ProcessId)", {}, False),
    _vector("isnull(ProcessId)", {}, True),
    _vector("isnotnull(ProcessId)", {}, False),
]

DATETIME_AND_BOOL_VECTORS = [
    _vector("Timestamp > datetime(2026-01-01)", {"Timestamp": NEW_YEAR + 1}, True),
    _vector("Timestamp > datetime(2026-01-01)", {"Timestamp": NEW_YEAR}, False),
    _vector("Timestamp >= datetime(2026-01-01)", {"Timestamp": NEW_YEAR}, True),
    _vector("Timestamp > datetime(2026-01-01)", {}, False),
    _vector("Timestamp == datetime(2026-01-01)", {"Timestamp": NEW_YEAR}, True),
    _vector("ProcessCreationTime between (datetime(2026-01-01) .. 1d)", {"ProcessCreationTime": NEW_YEAR}, True),
    _vector(
        "ProcessCreationTime between (datetime(2026-01-01) .. 1d)",
        {"ProcessCreationTime": NEW_YEAR + TICKS_PER_DAY},
        True,
    ),
    _vector(
        "ProcessCreationTime between (datetime(2026-01-01) .. 1d)",
        {"ProcessCreationTime": NEW_YEAR + TICKS_PER_DAY + 1},
        False,
    ),
    _vector("IsProcessRemoteSession", {"IsProcessRemoteSession": True}, True),
    _vector("IsProcessRemoteSession", {"IsProcessRemoteSession": False}, False),
    _vector("IsProcessRemoteSession", {}, False),
    _vector("not(IsProcessRemoteSession)", {"IsProcessRemoteSession": False}, True),
    _vector("not(IsProcessRemoteSession)", {}, False),
    _vector("IsProcessRemoteSession == true", {}, False),
    _vector("IsProcessRemoteSession != true", {}, True),
    _vector("true", {}, True),
    _vector("false", {}, False),
]

HAS_X = {"FileName": "x"}
THREE_VALUED_VECTORS = [
    # X = ProcessId is null: "ProcessId < 5" is null
    _vector('ProcessId < 5 and FileName has "x"', HAS_X, False),
    _vector('not(ProcessId < 5 and FileName has "x")', HAS_X, False),
    _vector('not(ProcessId < 5 and FileName has "y")', HAS_X, True),
    _vector('ProcessId < 5 or FileName has "x"', HAS_X, True),
    _vector('ProcessId < 5 or FileName has "y"', HAS_X, False),
    _vector('not(ProcessId < 5 or FileName has "y")', HAS_X, False),
    _vector('not(ProcessId < 5 or FileName has "x")', HAS_X, False),
    _vector('FileName has "x" and not(ProcessId < 5)', HAS_X, False),
    _vector('not(not(FileName has "x"))', HAS_X, True),
    _vector('(FileName has "y" or FileName has "x") and isempty(ProcessId)', HAS_X, True),
    # chains of three or more terms are one n-ary node: the same three-valued rules
    _vector('ProcessId < 5 or FileName has "y" or FileName has "z"', HAS_X, False),
    _vector('ProcessId < 5 or FileName has "y" or FileName has "x"', HAS_X, True),
    _vector('not(ProcessId < 5 or FileName has "y" or FileName has "z")', HAS_X, False),
    _vector('not(FileName has "y" or FileName has "z" or FileName has "w")', HAS_X, True),
    _vector('(FileName has "x" and ProcessId < 5 and FileName has "x")', HAS_X, False),
    _vector('not(FileName has "x" and ProcessId < 5 and FileName has "x")', HAS_X, False),
    _vector('not(FileName has "x" and ProcessId < 5 and FileName has "y")', HAS_X, True),
]


@pytest.mark.parametrize(
    ("predicate", "fields", "expected"),
    STRING_VECTORS + LONG_VECTORS + DATETIME_AND_BOOL_VECTORS + THREE_VALUED_VECTORS,
)
def test_condition_matches(predicate: str, fields: dict[str, Any], expected: bool) -> None:
    """``where predicate`` keeps the event exactly when KQL would."""
    assert where(predicate).matches(event(**fields)) is expected


def test_a_none_string_is_treated_as_empty() -> None:
    """A string column given as ``None`` (not decoded) still behaves as KQL's ``""``."""
    assert where('FileName !has "x"').matches({"FileName": None}) is True
    assert where("isempty(FileName)").matches({"FileName": None}) is True
    assert where('FileName == ""').matches({"FileName": None}) is True


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("CLIENT32.EXE", False, id="equal but for case -> False"),
        pytest.param("other.exe", True, id="different -> True"),
        pytest.param("", True, id="null string -> True"),
    ],
)
def test_not_equals_ci(value: str, expected: bool) -> None:
    """``!~`` is the negation of ``=~`` (case-insensitive inequality)."""
    assert where('FileName !~ "client32.exe"').matches(event(FileName=value)) is expected


@pytest.mark.parametrize(
    ("predicates", "fields", "expected"),
    [
        pytest.param(("ProcessId < 5", 'FileName has "x"'), HAS_X, False, id="null then true -> dropped"),
        pytest.param(('FileName has "x"', "ProcessId < 5"), HAS_X, False, id="true then null -> dropped"),
        pytest.param(('FileName has "x"', "ProcessId != 5"), HAS_X, True, id="true then != null -> kept"),
        pytest.param(('FileName has "x"', 'FileName has "y"'), HAS_X, False, id="true then false -> dropped"),
    ],
)
def test_successive_wheres_all_must_be_true(
    predicates: tuple[str, ...], fields: dict[str, Any], expected: bool
) -> None:
    """Several ``| where`` operators keep an event only if every one is true (null drops it)."""
    assert where(*predicates).matches(event(**fields)) is expected


# -- the time window -------------------------------------------------------------------------------

DAY, HOUR = TICKS_PER_DAY, TICKS_PER_HOUR


@pytest.mark.parametrize(
    ("predicates", "low", "high"),
    [
        pytest.param(("Timestamp between (ago(5d) .. now())",), -5 * DAY, 0, id="between ago(5d) and now()"),
        pytest.param(("Timestamp between (now(-5d) .. now())",), -5 * DAY, 0, id="between now(-5d) and now()"),
        pytest.param(("Timestamp > ago(1h)",), -HOUR + 1, None, id="> is exclusive: one tick later"),
        pytest.param(("Timestamp >= ago(1h)",), -HOUR, None, id=">= is inclusive"),
        pytest.param(("Timestamp < now()",), None, -1, id="< is exclusive: one tick earlier"),
        pytest.param(("Timestamp <= now()",), None, 0, id="<= is inclusive"),
        pytest.param(("ago(5d) < Timestamp",), -5 * DAY + 1, None, id="reversed <"),
        pytest.param(("ago(5d) <= Timestamp",), -5 * DAY, None, id="reversed <="),
        pytest.param(("now() > Timestamp",), None, -1, id="reversed >"),
        pytest.param(
            ("Timestamp between (ago(5d) .. now()) and Timestamp > ago(1d)",),
            -DAY + 1,
            0,
            id="two conditions in one where intersect",
        ),
        pytest.param(
            ("Timestamp >= ago(5d)", "Timestamp <= ago(1d)"), -5 * DAY, -DAY, id="conditions in two wheres intersect"
        ),
        pytest.param(
            ("Timestamp between (ago(2d) .. ago(1d)) and Timestamp between (ago(3d) .. ago(1h))",),
            -2 * DAY,
            -DAY,
            id="two betweens intersect",
        ),
        pytest.param(("Timestamp > datetime(2026-01-01)",), None, None, id="an absolute datetime is no window"),
        pytest.param(('FileName has "x"',), None, None, id="no Timestamp condition: unbounded"),
    ],
)
def test_window_extraction(predicates: tuple[str, ...], low: int | None, high: int | None) -> None:
    """now()-relative top-level conditions on Timestamp become inclusive tick bounds relative to now."""
    assert where(*predicates).window == TimeWindow(low, high)


def test_absolute_timestamp_condition_stays_a_condition() -> None:
    """``Timestamp > datetime(...)`` is evaluated per event, not folded into the window."""
    query = where("Timestamp > datetime(2026-01-01)")
    assert query.condition_texts == ("Timestamp > datetime(2026-01-01T00:00:00.0000000Z)",)
    assert query.matches(event(Timestamp=NEW_YEAR + 1)) is True
    assert query.matches(event(Timestamp=NEW_YEAR)) is False


def test_window_conditions_are_not_evaluated_per_event() -> None:
    """The window is applied by the store as time passes; ``matches`` ignores it."""
    query = where("Timestamp between (ago(5d) .. now())", 'FileName has "x"')
    assert query.conditions and len(query.conditions) == 1
    assert query.matches(event(FileName="x", Timestamp=NOW - 10 * DAY)) is True


SEED_WINDOW = TimeWindow(-5 * DAY, 0)


@pytest.mark.parametrize(
    ("ticks", "expected"),
    [
        pytest.param(NOW - 5 * DAY, True, id="exactly now-5d: in"),
        pytest.param(NOW - 5 * DAY - 1, False, id="one tick earlier: out"),
        pytest.param(NOW - 5 * DAY + 1, True, id="one tick later than now-5d: in"),
        pytest.param(NOW, True, id="exactly now: in"),
        pytest.param(NOW + 1, False, id="one tick after now: out"),
        pytest.param(NOW - 1, True, id="one tick before now: in"),
    ],
)
def test_seed_window_contains_edges(ticks: int, expected: bool) -> None:
    """``between (now(-5d) .. now())`` is inclusive at both ends, to the tick."""
    assert SEED_WINDOW.contains(ticks, NOW) is expected


@pytest.mark.parametrize(
    ("predicate", "ticks", "expected"),
    [
        pytest.param("Timestamp > ago(1h)", NOW - HOUR, False, id="> ago(1h): exactly now-1h is out"),
        pytest.param("Timestamp > ago(1h)", NOW - HOUR + 1, True, id="> ago(1h): one tick later is in"),
        pytest.param("Timestamp >= ago(1h)", NOW - HOUR, True, id=">= ago(1h): exactly now-1h is in"),
        pytest.param("Timestamp < now()", NOW, False, id="< now(): now is out"),
        pytest.param("Timestamp < now()", NOW - 1, True, id="< now(): one tick earlier is in"),
        pytest.param("Timestamp < now()", NOW - 100 * DAY, True, id="< now(): no lower bound"),
    ],
)
def test_exclusive_bounds_are_exact(predicate: str, ticks: int, expected: bool) -> None:
    """Exclusive bounds shift by exactly one tick, so ``contains`` agrees with KQL at the edge."""
    assert where(predicate).window.contains(ticks, NOW) is expected


@pytest.mark.parametrize(
    ("window", "active_from", "active_until"),
    [
        pytest.param(SEED_WINDOW, NOW, NOW + 5 * DAY, id="seed: from the event's time for 5 days"),
        pytest.param(TimeWindow(-HOUR + 1, None), None, NOW + HOUR - 1, id="> ago(1h): always, until 1h later"),
        pytest.param(TimeWindow(None, -1), NOW + 1, None, id="< now(): from one tick later, forever"),
        pytest.param(TimeWindow(None, None), None, None, id="unbounded: always"),
    ],
)
def test_active_from_and_until(window: TimeWindow, active_from: int | None, active_until: int | None) -> None:
    """``active_from``/``active_until`` are the first and last ``now`` at which an event at ``NOW`` counts."""
    assert window.active_from(NOW) == active_from
    assert window.active_until(NOW) == active_until


bounds = st.one_of(st.none(), st.integers(-10 * DAY, 10 * DAY))


@settings(max_examples=400)
@given(low=bounds, high=bounds, ticks=st.integers(-(10**15), 10**15), offset=st.integers(-20 * DAY, 20 * DAY))
def test_contains_agrees_with_active_range(low: int | None, high: int | None, ticks: int, offset: int) -> None:
    """An event counts at ``now`` exactly when ``active_from <= now <= active_until``."""
    window = TimeWindow(low, high)
    now = ticks + offset
    start, end = window.active_from(ticks), window.active_until(ticks)
    assert window.contains(ticks, now) is ((start is None or start <= now) and (end is None or now <= end))


# -- group keys and contributions ---------------------------------------------------------------------

SEED_QUERY = """let Time_start = now(-5d);
let Time_end = now();
DeviceProcessEvents
| where Timestamp between (Time_start..Time_end)
| where ProcessVersionInfoCompanyName has 'netsupport'
| summarize FirstSeen=min(Timestamp), LastSeen=max(Timestamp),
  Report=make_set(ReportId), Count=count() by DeviceId, DeviceName"""


def test_seed_group_key_and_contribution() -> None:
    """The seed groups by (DeviceId, DeviceName) and each event brings Timestamp, Timestamp, ReportId."""
    query = compile_query(SEED_QUERY)
    row = event(DeviceId="d1", DeviceName="host", Timestamp=NOW, ReportId=42, ProcessVersionInfoCompanyName="x")
    assert query.group_key(row) == ("d1", "host")
    assert query.contribution(row) == (NOW, NOW, 42, None)


def test_countif_contributes_its_condition() -> None:
    """``countif`` contributes True only where its condition is true (null counts as not)."""
    query = compile_query(f"{TABLE} | summarize countif(ProcessId > 5) by DeviceId")
    assert [query.contribution(event(ProcessId=p)) for p in (7, 3, None)] == [(True,), (False,), (False,)]


def test_extend_constant_is_a_group_value() -> None:
    """An ``extend`` constant is the same value in every event's key and contribution."""
    query = compile_query(f"{TABLE} | extend Tag = 'rmm' | summarize make_set(Tag) by Tag, DeviceId")
    assert query.group_key(event(DeviceId="d")) == ("rmm", "d")
    assert query.contribution(event(DeviceId="d")) == ("rmm",)


def test_let_scalar_after_by_is_its_value_or_refused() -> None:
    """``let Tag = 'rmm'; ... by Tag`` groups under 'rmm' (or the compiler refuses it): never a silent null."""
    text = f"let Tag = 'rmm';\n{TABLE} | summarize make_set(Tag) by Tag, DeviceId"
    outcome = _compile_or_error(text)
    if isinstance(outcome, KqlError):
        assert "Tag" in outcome.message
    else:
        assert outcome.group_key(event(DeviceId="d")) == ("rmm", "d")
        assert outcome.contribution(event(DeviceId="d")) == ("rmm",)


def _compile_or_error(text: str) -> CompiledQuery | KqlError:
    try:
        return compile_query(text)
    except KqlError as exc:
        return exc


# -- the prefilter's required strings ----------------------------------------------------------------


#: (predicate, required strings): None means "no requirement" (every message must be parsed),
#: an empty set means "can never match".
REQUIRED_CASES: list[tuple[str, set[str] | None]] = [
    ('FileName has "x"', {"x"}),
    ('FileName has "x" or AccountName has "y"', {"x", "y"}),
    ('FileName has "x" or ProcessId > 5', None),
    ('not(FileName has "x")', None),
    ('FileName !has "x"', None),
    ('FileName has "x" and AccountName has "longer"', {"longer"}),
    ('FileName has "longer" and AccountName has "x"', {"longer"}),
    ('FileName has "x" and ProcessId > 5', {"x"}),
    ('(FileName has "x" or AccountName has "y") and FolderPath has "zzz"', {"zzz"}),
    ('(FileName has "xx" or AccountName has "yy") and FolderPath has "z"', {"xx", "yy"}),
    ('FileName has_any ("ab", "cd")', {"ab", "cd"}),
    ('FileName has_any ("ab", "")', None),
    ("FileName has_any ()", set()),
    ('FileName has_all ("ab", "cdef")', {"cdef"}),
    ('FileName in ("ab", "cd")', {"ab", "cd"}),
    ('FileName in ("ab", "")', None),
    ('FileName in~ ("AB")', {"AB"}),
    ('FileName !in ("ab")', None),
    ("ProcessId in (1, 2)", None),
    ('FileName == "ab"', {"ab"}),
    ('FileName == ""', None),
    ('FileName != "ab"', None),
    ('FileName =~ "AB"', {"AB"}),
    ('FileName has ""', None),
    ('FileName contains "x"', {"x"}),
    ('FileName startswith "x"', {"x"}),
    ('FileName endswith_cs "X"', {"X"}),
    ("isempty(FileName)", None),
    ("isnull(FileName)", set()),
    ('isnull(FileName) or FileName has "x"', {"x"}),
    ("false", set()),
    ('FileName has "x" or false', {"x"}),
    ("true", None),
    ('FileName has "x" and false', set()),
]
REQUIRED = [pytest.param(p, r, id=f"{p} -> {sorted(r) if r is not None else None}") for p, r in REQUIRED_CASES]


@pytest.mark.parametrize(("predicate", "required"), REQUIRED)
def test_required_strings(predicate: str, required: set[str] | None) -> None:
    """``required`` is a sound set of strings one of which every match contains (None: cannot say)."""
    assert where(predicate).required == required


def test_required_combines_successive_wheres() -> None:
    """Successive wheres are a conjunction: the more selective requirement is kept."""
    assert where('FileName has "x"', 'AccountName has "longer"').required == frozenset({"longer"})
    assert where('FileName has "x"', "ProcessId > 5").required == frozenset({"x"})


#: Words that make the predicates above true or false, and delimiters between them.
PREFILTER_WORDS = ["x", "X", "y", "xx", "yy", "z", "zzz", "longer", "ab", "AB", "cd", "cdef", "abx", " ", "-"]
PREFILTERED = [predicate for predicate, required in REQUIRED_CASES if required]
small_texts = st.lists(st.sampled_from(PREFILTER_WORDS), max_size=4).map("".join)


@settings(max_examples=300)
@given(
    predicate=st.sampled_from(PREFILTERED),
    texts=st.tuples(small_texts, small_texts, small_texts),
    process_id=st.one_of(st.none(), st.integers(0, 9)),
)
def test_required_strings_are_sound(predicate: str, texts: tuple[str, str, str], process_id: int | None) -> None:
    """Whenever an event matches, one of the required strings occurs in it, in some case."""
    query = where(predicate)
    row = event(FileName=texts[0], AccountName=texts[1], FolderPath=texts[2], ProcessId=process_id)
    assert query.required
    if query.matches(row):
        haystack = strings.fold(" | ".join(texts))
        assert any(strings.fold(needle) in haystack for needle in query.required)
