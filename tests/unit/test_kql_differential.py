"""rmmwatch's KQL semantics agree with an independent engine, duckdb-kql (real KQL text over DuckDB).

duckdb-kql (PyPI ``duckdb-kql``, repo mmaitre314/duckdb-kql) is the reference docs/semantics.md
§5 names: its ``has`` boundary rule was measured against the Kusto emulator. This
file proves, with the *same* KQL text given to both engines:

* a seeded random sweep of the string operators (``has``, ``!has``, ``has_cs``, ``hasprefix``,
  ``hassuffix``, ``contains``, ``startswith``, ``endswith``, ``=~``, ``==``, ``in~``, ``has_any``,
  ...) over random strings mixing ASCII, delimiters, é/Ä, U+0130, KELVIN SIGN and a combining
  mark gives the same answers, both through the operator table's rows and through compiled
  ``where`` conditions;
* null handling of a long column and three-valued ``and``/``or``/``not`` agree;
* the seed hunting query over a dozen events (several devices, company-name variants, a null
  DeviceName, a null ReportId, a duplicate delivery, timestamps on the window edges) gives the
  same rows from ``window.summarize`` as from duckdb-kql at a pinned ``now()``;
* so do a DeviceNetworkEvents and a DeviceFileCertificateInfo rule in the published pack's shapes,
  loaded together with the seed rule and fed bare rows of the three tables in one stream.

DuckDB timestamps are microseconds, so the summarize comparison uses microsecond timestamps;
tick (100 ns) precision is proved separately in test_kql_compiler.py and test_kql_datetimes.py.

Known divergences are pinned explicitly, never filtered silently: U+0130 under the
case-insensitive term operators (the ``has``/``!has`` and list sweeps leave U+0130 out for that
reason, as do the ``hasprefix``/``hassuffix`` sweeps; the other sweeps keep it; see
``test_dotted_capital_i_under_has_is_a_known_divergence``),
and a word-final capital sigma (fixed: fold maps it per character).
"""

from __future__ import annotations

import datetime as dt
import json
import random
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import duckdb_kql
import orjson
import pytest
from duckdb import DuckDBPyConnection

from rmmwatch.events import Detector
from rmmwatch.hunt import rule_rows
from rmmwatch.kql import strings
from rmmwatch.kql.compiled import CompiledQuery
from rmmwatch.kql.compiler import compile_query
from rmmwatch.kql.datetimes import TICKS_PER_MICROSECOND, format_datetime, parse_datetime
from rmmwatch.kql.operators import HAS, STRING_OPERATORS
from rmmwatch.rules import parse_rule

TABLE = "DeviceProcessEvents"
EPOCH = dt.datetime(1970, 1, 1)  # naive UTC, as duckdb-kql returns datetimes
DOTTED_CAPITAL_I = "\u0130"
KELVIN = "\u212a"
ACUTE = "\u0301"


@pytest.fixture
def con() -> Iterator[DuckDBPyConnection]:
    """A fresh in-memory DuckDB connection set up for KQL (UTC)."""
    connection = duckdb_kql.connect()
    yield connection
    connection.close()


def kql_string(text: str) -> str:
    """A double-quoted KQL string literal (the sweep alphabets hold no quote, backslash or newline)."""
    assert not set(text) & {'"', "\\", "\n", "\r"}
    return f'"{text}"'


def where(predicate: str) -> CompiledQuery:
    """rmmwatch's compiled ``DeviceProcessEvents | where <predicate>``."""
    return compile_query(f"{TABLE} | where {predicate} | summarize count()")


def duckdb_columns(con: DuckDBPyConnection, predicates: Sequence[str]) -> dict[int, tuple[Any, ...]]:
    """duckdb-kql's value of each predicate on each row of the table: row id -> values (None is null)."""
    projection = ", ".join(f"c{k} = {p}" for k, p in enumerate(predicates))
    rows = duckdb_kql.kql(con, f"{TABLE} | project i, {projection}").fetchall()
    return {row[0]: tuple(row[1:]) for row in rows}


def load_strings(con: DuckDBPyConnection, values: Sequence[str]) -> None:
    """Create the one-string-column table (row id ``i``) that the sweeps query."""
    con.execute(f"CREATE TABLE {TABLE} (i BIGINT, ProcessCommandLine VARCHAR)")
    con.executemany(f"INSERT INTO {TABLE} VALUES (?, ?)", list(enumerate(values)))


# -- (a) string operators: a seeded random sweep ----------------------------------------------------------

ASCII_PART = ["a", "b", "A", "B", "n", "N", "k", "K", "i", "I", "1", "2", "_", "-", ".", " "]
UNICODE_PART = ["\u00e9", "\u00c9", "\u00c4", "\u00e4", KELVIN, ACUTE]
WITHOUT_DOTTED_I = ASCII_PART + UNICODE_PART
WITH_DOTTED_I = [*WITHOUT_DOTTED_I, DOTTED_CAPITAL_I]


def table_answer(op: str, haystack: str, needle: str) -> bool:
    """The operator table's answer: the row's prepared needle, negated for a negated spelling."""
    row, negated = STRING_OPERATORS[op]
    return row.test(haystack, needle) is not negated


class Sweep(NamedTuple):
    """One seeded random sweep: operators, the alphabet of haystacks and needles, and its size."""

    operators: list[str]
    alphabet: list[str]
    seed: int
    rows: int
    needles: int


#: duckdb-kql rebuilds a term regex per row, so the term-operator sweeps are smaller; the
#: substring and equality ones are cheap and larger.
SWEEPS = [
    pytest.param(
        Sweep(["has", "!has"], WITHOUT_DOTTED_I, seed=1, rows=60, needles=16),
        id="has and !has (U+0130 left out: known divergence)",
    ),
    pytest.param(Sweep(["has_cs", "!has_cs"], WITH_DOTTED_I, seed=2, rows=60, needles=12), id="has_cs and !has_cs"),
    pytest.param(
        Sweep(["hasprefix", "!hasprefix", "hassuffix", "!hassuffix"], WITHOUT_DOTTED_I, seed=5, rows=60, needles=16),
        id="hasprefix and hassuffix (U+0130 left out: known divergence)",
    ),
    pytest.param(
        Sweep(
            ["hasprefix_cs", "!hasprefix_cs", "hassuffix_cs", "!hassuffix_cs"],
            WITH_DOTTED_I,
            seed=6,
            rows=60,
            needles=12,
        ),
        id="hasprefix_cs and hassuffix_cs",
    ),
    pytest.param(
        Sweep(
            ["contains", "!contains", "contains_cs", "!contains_cs", "startswith", "!startswith", "startswith_cs"],
            WITH_DOTTED_I,
            seed=3,
            rows=120,
            needles=24,
        ),
        id="contains and startswith families",
    ),
    pytest.param(
        Sweep(["endswith", "!endswith", "endswith_cs", "=~", "==", "!="], WITH_DOTTED_I, seed=4, rows=120, needles=24),
        id="endswith family and equality",
    ),
]


def _is_term(char: str) -> bool:
    return char.isalpha() or char.isnumeric()


def _random_text(rng: random.Random, alphabet: Sequence[str], longest: int) -> str:
    """Either characters drawn at random, or short words of term characters joined by delimiters."""
    if rng.random() < 0.5:
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, longest)))
    letters = [c for c in alphabet if _is_term(c)]
    delimiters = [c for c in alphabet if not _is_term(c)]
    words = ["".join(rng.choice(letters) for _ in range(rng.randint(1, 3))) for _ in range(rng.randint(1, 3))]
    return "".join(word + "".join(rng.choice(delimiters) for _ in range(rng.randint(0, 2))) for word in words)


def _swap_case(text: str) -> str:
    return "".join(c.swapcase() if len(c.swapcase()) == 1 else c for c in text)


def _needles(rng: random.Random, alphabet: Sequence[str], haystacks: Sequence[str], count: int) -> list[str]:
    """Needles: a third random, a third slices of a haystack, a third whole terms of one (case swapped or not)."""
    needles: list[str] = []
    while len(needles) < count:
        haystack = rng.choice(haystacks)
        terms = list(strings.terms(haystack))
        kind = rng.randrange(3)
        if kind == 0 or not haystack:
            needle = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 3)))
        elif kind == 1 or not terms:
            start = rng.randrange(len(haystack))
            needle = haystack[start : rng.randint(start, len(haystack))]
        else:
            needle = rng.choice(terms)
        needles.append(_swap_case(needle) if rng.random() < 0.5 else needle)
    return needles


@pytest.mark.parametrize("sweep", SWEEPS)
def test_string_operator_sweep_agrees_with_duckdb_kql(con: DuckDBPyConnection, sweep: Sweep) -> None:
    """Over random strings, every operator answers as duckdb-kql does, compiled and through its table row."""
    rng = random.Random(sweep.seed)
    haystacks = ["", " ", "NetSupport Ltd", "netsupport_ltd"]
    haystacks += [_random_text(rng, sweep.alphabet, 9) for _ in range(sweep.rows - len(haystacks))]
    needles = _needles(rng, sweep.alphabet, haystacks, sweep.needles)
    load_strings(con, haystacks)
    cases = [(op, needle) for op in sweep.operators for needle in needles]
    predicates = [f"ProcessCommandLine {op} {kql_string(needle)}" for op, needle in cases]
    reference = duckdb_columns(con, predicates)
    compiled = [where(p) for p in predicates]

    disagreements: list[str] = []
    positives = 0
    for row, haystack in enumerate(haystacks):
        for k, (op, needle) in enumerate(cases):
            expected = reference[row][k]
            positives += expected is True
            ours = compiled[k].matches({"ProcessCommandLine": haystack})
            if ours is not expected:
                disagreements.append(f"{haystack!r} {op} {needle!r}: rmmwatch {ours}, duckdb-kql {expected}")
            if table_answer(op, haystack, needle) is not expected:
                disagreements.append(f"table: {haystack!r} {op} {needle!r}: duckdb-kql {expected}")
    assert disagreements == []
    assert 0.05 < positives / (len(haystacks) * len(cases)) < 0.95  # the sweep is not one-sided


def test_list_operator_sweep_agrees_with_duckdb_kql(con: DuckDBPyConnection) -> None:
    """``in``, ``!in``, ``in~``, ``!in~``, ``has_any`` and ``has_all`` over random lists agree with duckdb-kql."""
    rng = random.Random(4)
    haystacks = ["", "NetSupport Ltd", "client32.exe"] + [_random_text(rng, WITHOUT_DOTTED_I, 6) for _ in range(45)]
    load_strings(con, haystacks)
    predicates: list[str] = []
    for _ in range(6):
        items = ", ".join(kql_string(n) for n in _needles(rng, WITHOUT_DOTTED_I, haystacks, rng.randint(1, 3)))
        predicates += [f"ProcessCommandLine {op} ({items})" for op in ("in", "!in", "in~", "!in~", "has_any")]
        predicates.append(f"ProcessCommandLine has_all ({items})")
    reference = duckdb_columns(con, predicates)
    compiled = [where(p) for p in predicates]
    disagreements = [
        f"{haystack!r} {predicate}: duckdb-kql {reference[row][k]}"
        for row, haystack in enumerate(haystacks)
        for k, predicate in enumerate(predicates)
        if compiled[k].matches({"ProcessCommandLine": haystack}) is not reference[row][k]
    ]
    assert disagreements == []
    positives = sum(value is True for values in reference.values() for value in values)
    assert 0.05 < positives / (len(haystacks) * len(predicates)) < 0.95  # the sweep is not one-sided


def test_dotted_capital_i_under_has_is_a_known_divergence(con: DuckDBPyConnection) -> None:
    """U+0130 under ``has``: rmmwatch folds it to ``i`` (simple lowercase), duckdb-kql's ``has`` does not."""
    # docs/semantics.md does not settle it. duckdb-kql's `has` is an RE2 `(?i)` regex, and RE2 folds with
    # CaseFolding.txt's simple (C+S) entries, where U+0130 has none; yet duckdb-kql's own `=~` and
    # `contains` use DuckDB's lower(), which maps U+0130 to `i`, as rmmwatch does for every operator.
    # Both answers are pinned so that a change on either side is noticed and decided.
    load_strings(con, [DOTTED_CAPITAL_I + "stanbul"])
    has, equals, contains = duckdb_columns(
        con,
        ['ProcessCommandLine has "istanbul"', 'ProcessCommandLine =~ "istanbul"', 'ProcessCommandLine contains "ist"'],
    )[0]
    assert (has, equals, contains) == (False, True, True)
    assert HAS.test(DOTTED_CAPITAL_I + "stanbul", "istanbul") is True
    assert (
        where('ProcessCommandLine =~ "istanbul"').matches({"ProcessCommandLine": DOTTED_CAPITAL_I + "stanbul"}) is True
    )


ODOS_UPPER = "\u039f\u0394\u039f\u03a3"  # capital omicron, delta, omicron, sigma
ODOS_LOWER = "\u03bf\u03b4\u03bf\u03c3"  # the same in small letters, with a medial sigma


@pytest.mark.parametrize(
    "predicate",
    [
        pytest.param(f"ProcessCommandLine has {kql_string(ODOS_LOWER)}", id="has"),
        pytest.param(f"ProcessCommandLine =~ {kql_string(ODOS_LOWER)}", id="=~"),
        pytest.param(f"ProcessCommandLine endswith {kql_string(ODOS_LOWER[-1])}", id="endswith"),
    ],
)
def test_word_final_capital_sigma_agrees_with_duckdb_kql(con: DuckDBPyConnection, predicate: str) -> None:
    """A word-final capital sigma folds like any capital sigma, as in duckdb-kql."""
    load_strings(con, [ODOS_UPPER])
    (expected,) = duckdb_columns(con, [predicate])[0]
    assert expected is True
    assert where(predicate).matches({"ProcessCommandLine": ODOS_UPPER}) is expected


# -- null handling and three-valued logic ---------------------------------------------------------------

NULLABLE_ROWS: list[tuple[int | None, str]] = [(None, ""), (3, "a"), (5, "b"), (7, "x y"), (None, "x")]

NULL_PREDICATES = [
    "ProcessId == 5",
    "ProcessId != 5",
    "ProcessId < 5",
    "ProcessId <= 5",
    "ProcessId > 5",
    "ProcessId >= 5",
    "not(ProcessId < 5)",
    "not(ProcessId >= 5)",
    "ProcessId between (3 .. 5)",
    "ProcessId !between (3 .. 5)",
    "not(ProcessId between (3 .. 5))",
    "ProcessId in (5, 7)",
    "ProcessId !in (5, 7)",
    "isempty(ProcessId)",
    "isnotempty(ProcessId)",
    "isnull(ProcessId)",
    "isnotnull(ProcessId)",
    'ProcessId < 5 and ProcessCommandLine has "x"',
    'ProcessId < 5 or ProcessCommandLine has "x"',
    'not(ProcessId < 5 and ProcessCommandLine has "y")',
    'not(ProcessId < 5 or ProcessCommandLine has "y")',
    'not(ProcessId < 5 or ProcessCommandLine has "x")',
    'ProcessId < 5 or ProcessCommandLine has "y" or ProcessId > 6',
    'not(ProcessId < 5 or ProcessCommandLine has "y" or ProcessId == 9)',
    'not(ProcessId > 4 and ProcessCommandLine has "x" and ProcessId != 9)',
    "isempty(ProcessCommandLine)",
    'ProcessCommandLine != "a"',
    'ProcessCommandLine !in~ ("A")',
]


NOT_EQUALS_CI = 'ProcessCommandLine !~ "A"'


@pytest.fixture(scope="module")
def null_reference() -> dict[str, list[bool]]:
    """duckdb-kql's ``where`` verdict for every null-handling predicate on every row, in one query."""
    connection = duckdb_kql.connect()
    try:
        connection.execute(f"CREATE TABLE {TABLE} (i BIGINT, ProcessId BIGINT, ProcessCommandLine VARCHAR)")
        rows = [(i, *r) for i, r in enumerate(NULLABLE_ROWS)]
        connection.executemany(f"INSERT INTO {TABLE} VALUES (?, ?, ?)", rows)
        predicates = [*NULL_PREDICATES, NOT_EQUALS_CI]
        values = duckdb_columns(connection, predicates)
    finally:
        connection.close()
    return {p: [values[i][k] is True for i in range(len(NULLABLE_ROWS))] for k, p in enumerate(predicates)}


@pytest.mark.parametrize(
    "predicate",
    [
        *NULL_PREDICATES,
        pytest.param(
            NOT_EQUALS_CI,
        ),
    ],
)
def test_null_handling_agrees_with_duckdb_kql(null_reference: dict[str, list[bool]], predicate: str) -> None:
    """``where`` keeps the same rows as duckdb-kql when a long is null: comparisons, in, between, not, and/or."""
    query = where(predicate)
    kept = [query.matches({"ProcessId": pid, "ProcessCommandLine": text}) for pid, text in NULLABLE_ROWS]
    assert kept == null_reference[predicate]


# -- (b) the seed hunting query, end to end ----------------------------------------------------------------

SEED_QUERY = """let Time_start = now(-5d);
let Time_end = now();
//
DeviceProcessEvents
| where Timestamp between (Time_start..Time_end)
| where ProcessVersionInfoCompanyName has 'netsupport'
| summarize FirstSeen=min(Timestamp), LastSeen=max(Timestamp),
  Report=make_set(ReportId), Count=count() by DeviceId, DeviceName"""

SEED_RULE_YAML = "id: seed\nname: NetSupport seed\nquery: |\n" + "".join(
    f"  {line}\n" for line in SEED_QUERY.splitlines()
)

NOW = dt.datetime(2026, 11, 20, 12, 0, 0, 123456)
DAY = dt.timedelta(days=1)
MICRO = dt.timedelta(microseconds=1)

#: (Timestamp, DeviceId, DeviceName, company, ReportId); None is JSON null (KQL "" for strings).
SEED_EVENTS: list[tuple[dt.datetime, str, str | None, str | None, int | None]] = [
    (NOW - 5 * DAY, "d1", "host-a", "NetSupport Ltd", 101),  # exactly on the low edge
    (NOW - 5 * DAY - MICRO, "d1", "host-a", "NetSupport Ltd", 100),  # one microsecond too old
    (NOW - 2 * DAY, "d1", "host-a", "NETSUPPORT LTD.", 102),
    (NOW - DAY, "d1", "host-a", "NetSupport-Ltd", 102),  # the same ReportId again: one set member
    (NOW, "d1", "host-a", "NetSupport Ltd", 103),  # exactly now
    (NOW + MICRO, "d1", "host-a", "NetSupport Ltd", 104),  # one microsecond in the future
    (NOW - 3 * DAY, "d2", "host-b", "netsupport_ltd", 201),
    (NOW - 3 * DAY, "d2", "HOST-B", "NetSupport Ltd", 202),  # another DeviceName: another group
    (NOW - DAY, "d2", "host-b", "NetSupportLtd", 203),  # not a term: no match
    (NOW - DAY, "d2", "host-b", "MyNetSupport", 204),
    (NOW - 4 * DAY, "d3", None, "NetSupport Ltd", None),  # null DeviceName and null ReportId still count
    (NOW - 4 * DAY + MICRO, "d3", None, "NetSupport Ltd", 301),
    (NOW - DAY, "d4", "host-d", "NetSupport1", 401),
    (NOW - DAY, "d4", "host-d", "NetSupport\u00c4", 402),
    (NOW - DAY, "d5", "host-e", None, 501),  # null company
    (NOW - DAY, "d5", "host-e", "Net Support Ltd", 502),
]


def _ticks(moment: dt.datetime) -> int:
    return (moment - EPOCH) // MICRO * TICKS_PER_MICROSECOND


def _message(moment: dt.datetime, device: str, name: str | None, company: str | None, report: int | None) -> bytes:
    """One bare Advanced Hunting row, as the Defender API gives it."""
    row = {
        "Timestamp": format_datetime(_ticks(moment)),
        "DeviceId": device,
        "DeviceName": name,
        "ProcessVersionInfoCompanyName": company,
        "ReportId": report,
        "ActionType": "ProcessCreated",
    }
    return orjson.dumps(row)


def rmmwatch_rows(now: dt.datetime) -> list[dict[str, Any]]:
    """The seed rule's output from rmmwatch: Detector over the rows (one delivered twice), then summarize."""
    rule = parse_rule(SEED_RULE_YAML, "seed")
    messages = [_message(*event) for event in SEED_EVENTS]
    messages.append(messages[2])  # at-least-once delivery: a duplicate must count once
    result = Detector([rule]).process(messages)
    assert result.problems == []
    return rule_rows(rule, result.matches, _ticks(now))


def duckdb_rows(con: DuckDBPyConnection, now: dt.datetime) -> list[dict[str, Any]]:
    """The seed query's output from duckdb-kql at a pinned now(), rendered as rmmwatch renders rows."""
    con.execute(
        f"CREATE TABLE {TABLE} (Timestamp TIMESTAMP, DeviceId VARCHAR, DeviceName VARCHAR,"
        " ProcessVersionInfoCompanyName VARCHAR, ReportId BIGINT)"
    )
    # KQL strings are never null: an ingested null string is "".
    con.executemany(
        f"INSERT INTO {TABLE} VALUES (?, ?, ?, ?, ?)",
        [(t, d, n or "", c or "", r) for t, d, n, c, r in SEED_EVENTS],
    )
    relation = duckdb_kql.kql(con, SEED_QUERY, query_now=now)
    assert relation.columns == ["DeviceId", "DeviceName", "FirstSeen", "LastSeen", "Report", "Count"]
    rows = [
        {
            "DeviceId": device,
            "DeviceName": name,
            "FirstSeen": format_datetime(_ticks(first)),
            "LastSeen": format_datetime(_ticks(last)),
            "Report": sorted(json.loads(report)),
            "Count": count,
        }
        for device, name, first, last, report, count in relation.fetchall()
    ]
    return sorted(rows, key=lambda r: (r["DeviceId"], r["DeviceName"]))


@pytest.mark.parametrize(
    ("now", "groups"),
    [
        pytest.param(NOW, 4, id="now: both edges in, the future event out"),
        pytest.param(NOW + MICRO, 4, id="now+1us: the low-edge event drops, the future event enters"),
        pytest.param(NOW - MICRO, 4, id="now-1us: the event at now is still in the future"),
        pytest.param(NOW - 3 * DAY, 4, id="three days earlier: d2's events exactly now"),
        pytest.param(NOW - 3 * DAY - MICRO, 2, id="3 days + 1us earlier: d2's events 1us in the future"),
        pytest.param(NOW + 4 * DAY, 1, id="four days later: only the newest events remain"),
        pytest.param(NOW + 10 * DAY, 0, id="ten days later: nothing left, no rows"),
    ],
)
def test_seed_query_rows_agree_with_duckdb_kql(con: DuckDBPyConnection, now: dt.datetime, groups: int) -> None:
    """The seed rule's rows (groups, first/last seen, report set, count) equal duckdb-kql's at the same now()."""
    expected = duckdb_rows(con, now)
    assert rmmwatch_rows(now) == expected
    assert len(expected) == groups


def test_seed_query_rows_at_now_are_the_expected_ones(con: DuckDBPyConnection) -> None:
    """At the pinned now, both engines give exactly these rows (a readable anchor for the sweep above)."""
    first_d1 = format_datetime(_ticks(NOW - 5 * DAY))
    rows = duckdb_rows(con, NOW)
    assert rows == rmmwatch_rows(NOW)
    assert [(r["DeviceId"], r["DeviceName"], r["Report"], r["Count"]) for r in rows] == [
        ("d1", "host-a", [101, 102, 103], 4),
        ("d2", "HOST-B", [202], 1),
        ("d2", "host-b", [201], 1),
        ("d3", "", [301], 2),
    ]
    assert rows[0]["FirstSeen"] == first_d1 == "2026-11-15T12:00:00.1234560Z"
    assert rows[0]["LastSeen"] == format_datetime(parse_datetime("2026-11-20T12:00:00.123456Z"))


# -- (c) rules of the other two tables, loaded together, end to end ---------------------------------------

NETWORK_QUERY = """let Time_start = now(-5d);
let Time_end = now();
DeviceNetworkEvents
| where Timestamp between (Time_start..Time_end)
| where RemoteUrl has_any ('anydesk.com', 'api.playanext.com')
    and InitiatingProcessVersionInfoCompanyName has 'anydesk'
| summarize FirstSeen=min(Timestamp), LastSeen=max(Timestamp), Report=make_set(ReportId), Count=count(),
    Ports=make_set(RemotePort), HighPort=max(RemotePort) by DeviceId, DeviceName, RemoteUrl"""

CERTIFICATE_QUERY = """DeviceFileCertificateInfo
| where Timestamp > ago(5d)
| where Signer has_any ('AnyDesk Software', 'philandro Software')
| summarize FirstSeen=min(Timestamp), Count=count(), Untrusted=countif(IsTrusted == false),
    Files=dcount(SHA1), Report=make_set(ReportId) by DeviceId, DeviceName, Signer"""

#: (Timestamp, DeviceId, RemoteUrl, company, RemotePort, ReportId): relays, case variants, lookalikes under
#: and around the vendor's domain, another vendor's process, null ports, window edges.
NETWORK_EVENTS: list[tuple[dt.datetime, str, str, str | None, int | None, int]] = [
    (NOW - 5 * DAY, "n1", "relay-7.net.anydesk.com", "AnyDesk Software GmbH", 6568, 1),  # the low edge
    (NOW - 5 * DAY - MICRO, "n1", "relay-7.net.anydesk.com", "AnyDesk Software GmbH", 6568, 2),  # too old
    (NOW - DAY, "n1", "relay-7.net.anydesk.com", "ANYDESK SOFTWARE GMBH", 443, 3),
    (NOW - DAY, "n1", "relay-7.net.anydesk.com", "AnyDesk Software GmbH", None, 4),  # null port
    (NOW, "n1", "boot.net.AnyDesk.com", "philandro Software GmbH", 80, 5),  # company without 'anydesk'
    (NOW - 2 * DAY, "n2", "anydesk.com.login-check.example", "AnyDesk Software GmbH", 443, 6),  # under the domain
    (NOW - 2 * DAY, "n2", "myanydesk.com", "AnyDesk Software GmbH", 443, 7),  # a longer term
    (NOW - 2 * DAY, "n2", "anydesk.community", "AnyDesk Software GmbH", 443, 8),
    (NOW - 3 * DAY, "n3", "api.playanext.com", "AnyDesk", 443, 9),
    (NOW - 3 * DAY, "n3", "api.playanext.com", None, 443, 10),  # null company: "" in KQL
    (NOW + MICRO, "n3", "api.playanext.com", "AnyDesk", 443, 11),  # the future
]

#: (Timestamp, DeviceId, Signer, IsTrusted, SHA1, ReportId): signers, lookalikes, null trust, repeated files.
CERTIFICATE_EVENTS: list[tuple[dt.datetime, str, str | None, bool | None, str, int]] = [
    (NOW - 4 * DAY, "c1", "AnyDesk Software GmbH", True, "a1", 21),
    (NOW - 3 * DAY, "c1", "AnyDesk Software GmbH", False, "a2", 22),
    (NOW - 2 * DAY, "c1", "AnyDesk Software GmbH", None, "a2", 23),  # null trust: countif is false
    (NOW - DAY, "c1", "ANYDESK SOFTWARE GMBH", True, "a3", 24),  # another Signer value: another group
    (NOW - DAY, "c2", "philandro Software GmbH", False, "p1", 25),
    (NOW - DAY, "c2", "AnyDeskSoft Ltd", True, "x1", 26),  # a longer term: no match
    (NOW - DAY, "c2", "AnyDesk Softwares GmbH", True, "x2", 27),
    (NOW - DAY, "c3", None, False, "u1", 28),  # unsigned
    (NOW - 6 * DAY, "c3", "AnyDesk Software GmbH", True, "a9", 29),  # out of the window
]


def _network_row(event: tuple[dt.datetime, str, str, str | None, int | None, int]) -> dict[str, Any]:
    moment, device, url, company, port, report = event
    return {
        "Timestamp": format_datetime(_ticks(moment)),
        "DeviceId": device,
        "DeviceName": f"{device}.corp.example",
        "ActionType": "ConnectionSuccess",
        "RemoteUrl": url,
        "RemotePort": port,
        "InitiatingProcessVersionInfoCompanyName": company,
        "ReportId": report,
    }


def _certificate_row(event: tuple[dt.datetime, str, str | None, bool | None, str, int]) -> dict[str, Any]:
    moment, device, signer, trusted, sha1, report = event
    return {
        "Timestamp": format_datetime(_ticks(moment)),
        "DeviceId": device,
        "DeviceName": f"{device}.corp.example",
        "Signer": signer,
        "IsSigned": signer is not None,
        "IsTrusted": trusted,
        "SHA1": sha1,
        "ReportId": report,
    }


def three_table_rmmwatch_rows(now: dt.datetime) -> dict[str, list[dict[str, Any]]]:
    """Every table's rule loaded in one detector, fed bare rows of the three tables (each told by its own
    columns) mixed in one stream, a duplicate delivery included."""
    rules = {
        "process": parse_rule(SEED_RULE_YAML, "seed"),
        "network": parse_rule(_rule_yaml("net", NETWORK_QUERY), "net"),
        "certificate": parse_rule(_rule_yaml("cert", CERTIFICATE_QUERY), "cert"),
    }
    messages = [_message(*event) for event in SEED_EVENTS]
    messages += [orjson.dumps(_network_row(event)) for event in NETWORK_EVENTS]
    messages += [orjson.dumps(_certificate_row(event)) for event in CERTIFICATE_EVENTS]
    # At-least-once delivery: a network and a certificate record delivered twice must count once.
    messages += [orjson.dumps(_network_row(NETWORK_EVENTS[2])), orjson.dumps(_certificate_row(CERTIFICATE_EVENTS[1]))]
    result = Detector(list(rules.values())).process(messages)
    assert result.problems == []
    assert result.other_tables == 0
    return {table: rule_rows(r, [m for m in result.matches if m.rule is r], _ticks(now)) for table, r in rules.items()}


def _rule_yaml(rule_id: str, query: str) -> str:
    return f"id: {rule_id}\nname: {rule_id}\nquery: |\n" + "".join(f"  {line}\n" for line in query.splitlines())


def _render(value: Any) -> Any:
    return format_datetime(_ticks(value)) if isinstance(value, dt.datetime) else value


def duckdb_table_rows(con: DuckDBPyConnection, table: str, now: dt.datetime) -> list[dict[str, Any]]:
    """The network or certificate query's rows from duckdb-kql at a pinned now(), rendered as rmmwatch does."""
    if table == "network":
        con.execute(
            "CREATE TABLE DeviceNetworkEvents (Timestamp TIMESTAMP, DeviceId VARCHAR, DeviceName VARCHAR,"
            " RemoteUrl VARCHAR, InitiatingProcessVersionInfoCompanyName VARCHAR, RemotePort BIGINT, ReportId BIGINT)"
        )
        con.executemany(
            "INSERT INTO DeviceNetworkEvents VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(t, d, f"{d}.corp.example", u, c or "", p, r) for t, d, u, c, p, r in NETWORK_EVENTS],
        )
        query, sets, order = NETWORK_QUERY, ("Report", "Ports"), ("DeviceId", "DeviceName", "RemoteUrl")
    else:
        con.execute(
            "CREATE TABLE DeviceFileCertificateInfo (Timestamp TIMESTAMP, DeviceId VARCHAR, DeviceName VARCHAR,"
            " Signer VARCHAR, IsTrusted BOOLEAN, SHA1 VARCHAR, ReportId BIGINT)"
        )
        con.executemany(
            "INSERT INTO DeviceFileCertificateInfo VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(t, d, f"{d}.corp.example", s or "", tr, h, r) for t, d, s, tr, h, r in CERTIFICATE_EVENTS],
        )
        query, sets, order = CERTIFICATE_QUERY, ("Report",), ("DeviceId", "DeviceName", "Signer")
    relation = duckdb_kql.kql(con, query, query_now=now)
    rows = []
    for values in relation.fetchall():
        out = {name: _render(value) for name, value in zip(relation.columns, values, strict=True)}
        for name in sets:
            out[name] = sorted(json.loads(out[name]))
        rows.append(out)
    return sorted(rows, key=lambda r: tuple(r[c] for c in order))


@pytest.mark.parametrize("table", ["network", "certificate"])
@pytest.mark.parametrize(
    "now",
    [
        pytest.param(NOW, id="now"),
        pytest.param(NOW + MICRO, id="now+1us"),
        pytest.param(NOW - 2 * DAY, id="two days earlier"),
        pytest.param(NOW + 4 * DAY, id="four days later"),
    ],
)
def test_network_and_certificate_rules_agree_with_duckdb_kql(
    con: DuckDBPyConnection, table: str, now: dt.datetime
) -> None:
    """A DeviceNetworkEvents rule (has_any of domains and a company, make_set and max of a nullable long) and a
    DeviceFileCertificateInfo rule (countif over a nullable bool, dcount), loaded with the process rule and fed
    bare rows of the three tables, give duckdb-kql's rows at the same now()."""
    expected = duckdb_table_rows(con, table, now)
    assert three_table_rmmwatch_rows(now)[table] == expected


def test_the_three_tables_rows_at_now_are_the_expected_ones(con: DuckDBPyConnection) -> None:
    """At the pinned now, the readable anchor: which groups each table's rule returns."""
    rows = three_table_rmmwatch_rows(NOW)
    assert [(r["DeviceId"], r["RemoteUrl"], r["Report"], r["Ports"]) for r in rows["network"]] == [
        ("n1", "relay-7.net.anydesk.com", [1, 3, 4], [443, 6568]),
        ("n2", "anydesk.com.login-check.example", [6], [443]),
        ("n3", "api.playanext.com", [9], [443]),
    ]
    assert [(r["DeviceId"], r["Signer"], r["Count"], r["Untrusted"], r["Files"]) for r in rows["certificate"]] == [
        ("c1", "ANYDESK SOFTWARE GMBH", 1, 0, 1),
        ("c1", "AnyDesk Software GmbH", 3, 1, 2),
        ("c2", "philandro Software GmbH", 1, 1, 1),
    ]
    assert rows["network"] == duckdb_table_rows(con, "network", NOW)
    assert [r["DeviceId"] for r in rows["process"]] == ["d1", "d2", "d2", "d3"]
