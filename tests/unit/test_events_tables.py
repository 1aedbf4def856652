"""Decode+match over three tables: each record meets only its own table's rules, and only those awake.

Proves that a record's table is its ``category`` (or, for a bare row, the table whose own columns it
carries, as docs/semantics.md §2 says), so that a network record never reaches a process rule even
through a column both tables share, and the other way round; that a rule whose literal is absent
from a message is not evaluated (nor are the columns only it reads converted), yet the answer is the
one of evaluating every rule (the ``off`` engine); and that alerts carry the key fields of their
own table.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest
from load.bench_core import pack_rules

from rmmwatch.events import Detector
from rmmwatch.kql.schema import TABLES, TRIGGER_COLUMNS, distinctive_columns
from rmmwatch.rules import Rule, load_rules
from rmmwatch.synthetic import Generator, GeneratorConfig
from tests.helpers import CERTIFICATE, NETWORK, PROCESS, T0, certificate_row, mixed, network_row, row, rule

ENGINES = ["python", "ahocorasick", "auto", "off"]

# Rules that test columns two tables share: the table alone must keep them apart.
PROCESS_COMPANY = rule(
    "DeviceProcessEvents | where InitiatingProcessVersionInfoCompanyName has 'anydesk' | summarize count() by DeviceId",
    "process-company",
)
NETWORK_COMPANY = rule(
    "DeviceNetworkEvents | where InitiatingProcessVersionInfoCompanyName has 'anydesk' | summarize count() by DeviceId",
    "network-company",
)
PROCESS_SHA1 = rule("DeviceProcessEvents | where SHA1 startswith '4f6b1c7e' | summarize count() by DeviceId", "p-sha1")
CERTIFICATE_SHA1 = rule(
    "DeviceFileCertificateInfo | where SHA1 startswith '4f6b1c7e' | summarize count() by DeviceId", "c-sha1"
)
SHARED = [PROCESS_COMPANY, NETWORK_COMPANY, PROCESS_SHA1, CERTIFICATE_SHA1]

# One record per table, each carrying every shared value the rules above look for.
TEMPTING = "4f6b1c7e0d2a9b8c3e5f1a0d7c6b5a4e3d2c1b0a"
RECORDS = {
    PROCESS: row(device="p", SHA1=TEMPTING, InitiatingProcessVersionInfoCompanyName="AnyDesk Software GmbH"),
    NETWORK: network_row(device="n", SHA1=TEMPTING),
    CERTIFICATE: certificate_row(device="c", InitiatingProcessVersionInfoCompanyName="AnyDesk Software GmbH"),
}
EXPECTED = {
    PROCESS: ["process-company", "p-sha1"],
    NETWORK: ["network-company"],
    CERTIFICATE: ["c-sha1"],
}

SHAPES: dict[str, Callable[[str, dict[str, Any]], bytes]] = {
    "envelope": lambda category, r: mixed((category, r)),
    "storage export record": lambda category, r: orjson.dumps({"category": category, "properties": r}),
    "bare row": lambda category, r: orjson.dumps(r),
    "array of bare rows": lambda category, r: orjson.dumps([r]),
}


def _rules_of(detector: Detector, messages: list[bytes]) -> list[tuple[str, str]]:
    result = detector.process(messages)
    assert result.problems == []
    return [(m.rule.id, m.group[0]) for m in result.matches]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("category", [PROCESS, NETWORK, CERTIFICATE])
def test_a_record_meets_only_the_rules_of_its_table(category: str, shape: str, engine: str) -> None:
    """Whatever its shape, a record matches its own table's rules, never another's on a shared column."""
    record = RECORDS[category]
    detector = Detector(SHARED, prefilter_engine=engine)
    expected = [(rule_id, record["DeviceId"]) for rule_id in EXPECTED[category]]
    assert _rules_of(detector, [SHAPES[shape](category, record)]) == expected


@pytest.mark.parametrize("engine", ENGINES)
def test_one_message_of_three_tables_dispatches_each_record(engine: str) -> None:
    """An Event Hubs message mixing the three tables: each record is judged by its own table's rules."""
    message = mixed(*[(category, record) for category, record in RECORDS.items()])
    detector = Detector(SHARED, prefilter_engine=engine)
    assert _rules_of(detector, [message]) == [
        ("process-company", "p"),
        ("p-sha1", "p"),
        ("network-company", "n"),
        ("c-sha1", "c"),
    ]


@pytest.mark.parametrize("shape", ["bare row", "array of bare rows"])
def test_a_bare_network_row_never_reaches_a_process_rule(shape: str) -> None:
    """With only a process rule loaded, a bare DeviceNetworkEvents row (RemoteUrl, ...) is skipped, not judged
    by that rule through the InitiatingProcessVersionInfoCompanyName both tables have."""
    detector = Detector([PROCESS_COMPANY])
    result = detector.process([SHAPES[shape](NETWORK, network_row(device="n"))])
    assert result.matches == []
    assert result.other_tables == 1
    assert result.records == 0


def test_a_bare_certificate_row_never_reaches_a_process_rule() -> None:
    """The same for a certificate row and a process rule on SHA1, a column both tables have."""
    result = Detector([PROCESS_SHA1]).process([orjson.dumps(certificate_row(device="c"))])
    assert (result.matches, result.other_tables) == ([], 1)


BARE = {
    "process columns": {"Timestamp": "x", "FileName": "a.exe", "ProcessCommandLine": "a"},
    "network columns": {"Timestamp": "x", "RemoteUrl": "a.example", "InitiatingProcessFileName": "a.exe"},
    "certificate columns": {"Timestamp": "x", "Signer": "A", "SHA1": "00"},
    "columns of two tables": {"Timestamp": "x", "RemoteUrl": "a.example", "Signer": "A"},
    "shared columns only": {"Timestamp": "x", "DeviceId": "d", "InitiatingProcessFileName": "a.exe", "SHA1": "00"},
}


@pytest.mark.parametrize(
    ("columns", "loaded", "declared", "expected"),
    [
        ("process columns", [PROCESS_COMPANY, NETWORK_COMPANY], None, PROCESS),
        ("network columns", [PROCESS_COMPANY, NETWORK_COMPANY], None, NETWORK),
        ("certificate columns", [PROCESS_COMPANY], None, CERTIFICATE),
        ("network columns", [PROCESS_COMPANY], None, NETWORK),
        ("columns of two tables", [NETWORK_COMPANY, CERTIFICATE_SHA1], None, None),
        ("shared columns only", [PROCESS_COMPANY], None, PROCESS),
        ("shared columns only", [NETWORK_COMPANY], None, NETWORK),
        ("shared columns only", [PROCESS_COMPANY, NETWORK_COMPANY], None, None),
        ("shared columns only", [PROCESS_COMPANY, NETWORK_COMPANY], "DeviceNetworkEvents", NETWORK),
        ("process columns", [PROCESS_COMPANY, NETWORK_COMPANY], "DeviceNetworkEvents", NETWORK),
    ],
)
def test_the_table_of_a_bare_row(columns: str, loaded: list[Rule], declared: str | None, expected: str | None) -> None:
    """A bare row's table: the declared one; else the one whose own columns it carries; else, with rules of one
    table loaded, that table; columns of two tables, or none with several tables loaded, tell nothing."""
    assert Detector(loaded, table=declared).row_category(BARE[columns]) == expected


def test_distinctive_columns_belong_to_exactly_one_table() -> None:
    """The columns that tell a bare row's table are each in one table's schema and in no other."""
    distinctive = distinctive_columns()
    for column, table in distinctive.items():
        assert [t for t, (_, schema) in TABLES.items() if column in schema] == [table]
    assert {distinctive[c] for c in ("FileName", "RemoteUrl", "Signer")} == set(TABLES)
    assert "InitiatingProcessVersionInfoCompanyName" not in distinctive
    assert "SHA1" not in distinctive


def test_an_unknown_declared_table_is_refused() -> None:
    """``table=`` must name a table rmmwatch knows."""
    with pytest.raises(ValueError, match="unknown table 'DeviceFileEvents'"):
        Detector([PROCESS_COMPANY], table="DeviceFileEvents")


def test_records_of_tables_without_rules_are_counted_as_other_tables() -> None:
    """Loaded rules read processes only: the network and certificate records are skipped and counted."""
    message = mixed(*[(category, record) for category, record in RECORDS.items()])
    result = Detector([PROCESS_COMPANY]).process([message])
    assert (result.records, result.other_tables, [m.rule.id for m in result.matches]) == (1, 2, ["process-company"])


# -- only the rules whose literal occurs are evaluated ---------------------------------------------------


def _counting(rules: list[Rule]) -> dict[str, int]:
    """Count each rule's ``where`` evaluations (the compiled query's closure, wrapped in place)."""
    counts = {r.id: 0 for r in rules}
    for r in rules:
        inner = r.query._evaluate

        def evaluate(event: Any, inner: Any = inner, rule_id: str = r.id) -> Any:
            counts[rule_id] += 1
            return inner(event)

        object.__setattr__(r.query, "_evaluate", evaluate)
    return counts


@pytest.mark.parametrize("engine", ["python", "auto"])
def test_a_rule_whose_literal_is_absent_is_not_evaluated(engine: str) -> None:
    """A message mentioning AnyDesk only: the TeamViewer rules are never evaluated, the AnyDesk rule of the
    network table once per network record, and a rule without a literal once per record of its table."""
    rules = [
        rule("DeviceNetworkEvents | where RemoteUrl has 'anydesk.com' | summarize count() by DeviceId", "n-anydesk"),
        rule("DeviceNetworkEvents | where RemoteUrl has 'teamviewer.com' | summarize count() by DeviceId", "n-tv"),
        rule("DeviceProcessEvents | where FileName has 'teamviewer' | summarize count() by DeviceId", "p-tv"),
        rule("DeviceNetworkEvents | where RemotePort == 5938 | summarize count() by DeviceId", "n-port"),
    ]
    counts = _counting(rules)
    message = mixed(
        (NETWORK, network_row(device="a", url="boot.net.anydesk.com")),
        (NETWORK, network_row(device="b", url="www.example.org", RemotePort=5938)),
        (PROCESS, row(device="c")),
    )
    result = Detector(rules, prefilter_engine=engine).process([message])
    assert [(m.rule.id, m.group[0]) for m in result.matches] == [("n-anydesk", "a"), ("n-port", "b")]
    assert counts == {"n-anydesk": 2, "n-tv": 0, "p-tv": 0, "n-port": 2}


def test_off_evaluates_every_rule_of_the_table_on_every_record() -> None:
    """The reference the prefilter is held to: ``off`` evaluates each rule on each record of its table."""
    rules = [
        rule("DeviceNetworkEvents | where RemoteUrl has 'anydesk.com' | summarize count() by DeviceId", "n-anydesk"),
        rule("DeviceNetworkEvents | where RemoteUrl has 'teamviewer.com' | summarize count() by DeviceId", "n-tv"),
        rule("DeviceProcessEvents | where FileName has 'teamviewer' | summarize count() by DeviceId", "p-tv"),
    ]
    counts = _counting(rules)
    message = mixed((NETWORK, network_row(device="a")), (NETWORK, network_row(device="b")), (PROCESS, row()))
    Detector(rules, prefilter_engine="off").process([message])
    assert counts == {"n-anydesk": 2, "n-tv": 2, "p-tv": 1}


def test_a_wrong_column_spoils_a_record_only_for_the_rules_that_read_it() -> None:
    """RemotePort is a string in this record: the rule that reads it reports the record (when awake), the
    AnyDesk rule still matches it; asleep (prefiltered), the port rule's column is not even converted."""
    port = rule("DeviceNetworkEvents | where RemotePort == 5938 and RemoteUrl has 'teamviewer' | summarize count()"
                " by DeviceId", "n-port")  # fmt: skip
    anydesk = rule("DeviceNetworkEvents | where RemoteUrl has 'anydesk.com' | summarize count() by DeviceId", "n-ad")
    message = mixed((NETWORK, network_row(device="a", RemotePort="443")))
    prefiltered = Detector([port, anydesk]).process([message])
    everything = Detector([port, anydesk], prefilter_engine="off").process([message])
    assert [m.rule.id for m in prefiltered.matches] == [m.rule.id for m in everything.matches] == ["n-ad"]
    assert prefiltered.problems == []
    assert [(p.reason, p.record) for _, p in everything.problems] == [("wrong_type", 0)]
    assert "RemotePort is a JSON str" in everything.problems[0][1].detail


def test_a_wrong_column_a_matching_rule_needs_is_reported_and_that_rule_does_not_count_it() -> None:
    """A group column of the wrong type: the rule that groups by it drops the record and reports it; another
    rule awake on the same record still counts it."""
    by_port = rule("DeviceNetworkEvents | where RemoteUrl has 'anydesk' | summarize count() by RemotePort", "by-port")
    by_device = rule("DeviceNetworkEvents | where RemoteUrl has 'anydesk' | summarize count() by DeviceId", "by-dev")
    message = mixed((NETWORK, network_row(device="a", RemotePort=[443])))
    for engine in ENGINES:
        result = Detector([by_port, by_device], prefilter_engine=engine).process([message])
        assert [m.rule.id for m in result.matches] == ["by-dev"]
        assert [p.reason for _, p in result.problems] == ["wrong_type"]


# -- alerts carry their table's key fields ------------------------------------------------------------


@pytest.mark.parametrize(
    ("category", "record", "expected"),
    [
        (PROCESS, row(device="p"), {"FileName": "client32.exe", "ProcessVersionInfoCompanyName": "NetSupport Ltd"}),
        (NETWORK, network_row(device="n"), {"RemoteUrl": "relay-17.net.anydesk.com", "RemotePort": 443}),
        (CERTIFICATE, certificate_row(device="c"), {"Signer": "AnyDesk Software GmbH", "IsTrusted": True}),
    ],
)
def test_a_match_carries_the_key_fields_of_its_table(
    category: str, record: dict[str, Any], expected: dict[str, Any]
) -> None:
    """The trigger of a match holds exactly its table's trigger columns, as sent, with Timestamp in KQL form."""
    rules = [
        rule("DeviceProcessEvents | summarize count() by DeviceId", "p"),
        rule("DeviceNetworkEvents | summarize count() by DeviceId", "n"),
        rule("DeviceFileCertificateInfo | summarize count() by DeviceId", "c"),
    ]
    (match,) = Detector(rules).process([mixed((category, record))]).matches
    table = match.rule.query.table
    assert list(match.trigger) == list(TRIGGER_COLUMNS[table])
    assert match.trigger["Timestamp"] == "2026-11-20T12:00:00.0000000Z"
    assert match.trigger["DeviceId"] == record["DeviceId"]
    assert {k: match.trigger[k] for k in expected} == expected
    assert match.ticks == T0


def test_trigger_columns_are_columns_of_their_table() -> None:
    """Every trigger column of a table is in that table's schema (a typo would silently alert with nulls)."""
    for table, columns in TRIGGER_COLUMNS.items():
        assert set(columns) <= set(TABLES[table][1]), table
    assert set(TRIGGER_COLUMNS) == set(TABLES)


@pytest.mark.parametrize("engine", ["python", "auto"])
def test_a_pack_of_two_hundred_rules_gives_the_answer_of_evaluating_every_rule(engine: str) -> None:
    """The bench's pack (three rules per tool over the three tables, about 200) over a generated stream with RMM
    stories and near misses: the prefiltered path matches and excludes exactly what evaluating every rule on
    every record does, and some of every table's rules do match."""
    rules = [*pack_rules(), *load_rules(["bundled:netsupport"])]
    assert len(rules) > 200
    config = GeneratorConfig(seed=17, rmm_ratio=0.02, near_miss_ratio=0.02, netsupport_ratio=0.01, max_records=20)
    messages = list(Generator(config).messages(150))
    reference = Detector(rules, prefilter_engine="off").process(messages)
    result = Detector(rules, prefilter_engine=engine).process(messages)
    assert [(m.rule.id, m.identity) for m in result.matches] == [(m.rule.id, m.identity) for m in reference.matches]
    assert [(e.match.rule.id, e.match.identity) for e in result.excluded] == [
        (e.match.rule.id, e.match.identity) for e in reference.excluded
    ]
    assert result.problems == reference.problems == []
    assert {m.rule.query.table for m in result.matches} == set(TABLES)
    assert result.candidates < len(messages)
