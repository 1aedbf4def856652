"""The synthetic stream's three tables and stories: what rules find in it is what was generated.

Proves that every generated record is well typed under its table's schema (and names no column the
table lacks); that the tables come in the configured proportions; that rules in the pack's shapes
(a vendor's company name on process launches, its domains and company on connections, its signer on
certificates) find exactly the stories the generator counted for that vendor, neither the background
nor the near misses, and that a domain-only rule also finds the browser visits, the unsigned copies
and the lookalike domains under the vendor's; that near misses pass the byte prefilter yet match no
``has`` of the vendor's names; and that ``hunt`` over a written stream prints the generator's expected
answer (load/generate.py), for rules of the three tables.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from load.generate import FileSink, fixed_clock, write_stream

from rmmwatch import cli
from rmmwatch.events import _CONVERTERS, Detector
from rmmwatch.kql.datetimes import DatetimeError, format_datetime
from rmmwatch.kql.schema import TABLES
from rmmwatch.rules import Rule, load_rule
from rmmwatch.synthetic import NEAR_MISS_STORIES, RMM_STORIES, RMM_TOOLS, Generator, GeneratorConfig, RmmTool
from tests.helpers import rule

CLOCK = "2026-11-20T10:00:00Z"
BY_CATEGORY = {category: (name, schema) for name, (category, schema) in TABLES.items()}
SHORT = {"DeviceProcessEvents": "process", "DeviceNetworkEvents": "network", "DeviceFileCertificateInfo": "certificate"}


def _stream(count: int, **config: Any) -> tuple[Generator, list[bytes]]:
    generator = Generator(GeneratorConfig(**config), fixed_clock(CLOCK, 10.0))
    return generator, list(generator.messages(count))


def _records(messages: list[bytes]) -> list[dict[str, Any]]:
    return [record for message in messages for record in orjson.loads(message)["records"]]


def test_every_generated_record_is_well_typed_in_its_table() -> None:
    """Each record's columns are columns of its table, each of the schema's type (no typo, no wrong type)."""
    _, messages = _stream(300, seed=2, rmm_ratio=0.05, near_miss_ratio=0.05, netsupport_ratio=0.01)
    tables: Counter[str] = Counter()
    for record in _records(messages):
        table, schema = BY_CATEGORY[record["category"]]
        tables[table] += 1
        row = record["properties"]
        assert set(row) <= set(schema), (table, set(row) - set(schema))
        for column, value in row.items():
            try:
                _CONVERTERS[schema[column]](value)
            except (TypeError, DatetimeError) as exc:
                pytest.fail(f"{table}.{column} = {value!r}: {exc!r}")
    assert set(tables) == set(TABLES)


@pytest.mark.parametrize("compact", [True, False])
def test_the_tables_come_in_the_configured_proportions(compact: bool) -> None:
    """network_ratio and certificate_ratio are the shares of those tables (within four standard deviations)."""
    generator, _ = _stream(800, seed=4, network_ratio=0.5, certificate_ratio=0.2, compact=compact)
    stats = generator.stats
    total = sum(stats.tables.values())
    assert total == stats.records > 10_000
    for table, share in (("network", 0.5), ("certificate", 0.2)):
        sigma = (share * (1 - share) / total) ** 0.5
        assert abs(stats.tables[table] / total - share) < 4 * sigma, (table, stats.tables)


def test_without_network_and_certificate_ratios_the_stream_is_process_events() -> None:
    """The process-only stream of earlier versions is one setting away."""
    generator, messages = _stream(50, seed=5, network_ratio=0.0, certificate_ratio=0.0, rmm_ratio=0.2)
    assert {r["category"] for r in _records(messages)} == {"AdvancedHunting-DeviceProcessEvents"}
    assert set(generator.stats.tables) == {"process"}


def test_the_stream_is_deterministic_for_a_seed_and_clock() -> None:
    """The same seed and clock give the same bytes, RMM stories and near misses included."""
    config = {"seed": 9, "rmm_ratio": 0.1, "near_miss_ratio": 0.1, "other_table_ratio": 0.05}
    assert _stream(40, **config)[1] == _stream(40, **config)[1]


# -- rules in the pack's shapes find exactly the generated stories ----------------------------------------


def _vendor_rules(tool: RmmTool, index: int) -> dict[str, Rule]:
    """Per vendor: its createproc, netconn and filesig rules as the pack writes them, and variants."""
    by = "| summarize Count=count(), Report=make_set(ReportId) by DeviceId, DeviceName"
    return {
        "company": rule(f"DeviceProcessEvents | where ProcessVersionInfoCompanyName has '{tool.company}' {by}",
                        f"{index}-company"),
        "key": rule(f"DeviceProcessEvents | where ProcessVersionInfoCompanyName has '{tool.key}' {by}",
                    f"{index}-key"),
        "netconn": rule(f"DeviceNetworkEvents | where RemoteUrl has_any ('{tool.domain}') and "
                        f"InitiatingProcessVersionInfoCompanyName has '{tool.company}' {by}, RemoteUrl",
                        f"{index}-netconn"),
        "domain": rule(f"DeviceNetworkEvents | where RemoteUrl has '{tool.domain}' {by}", f"{index}-domain"),
        "filesig": rule(f"DeviceFileCertificateInfo | where Signer has '{tool.signer}' {by}", f"{index}-filesig"),
        "signer-key": rule(f"DeviceFileCertificateInfo | where Signer has '{tool.key}' {by}", f"{index}-signer-key"),
    }  # fmt: skip


def _expected(stories: dict[tuple[str, str, str], int], tool: RmmTool) -> dict[str, int]:
    """How many records each vendor rule must match, from the stories the generator counted."""

    def count(table: str, *names: str) -> int:
        return sum(stories.get((tool.name, table, name), 0) for name in names)

    launches = count("process", "abuse", "sanctioned")
    signed = count("certificate", "signed", "untrusted")
    # The key rules: the key is a term of the company (signer) for most vendors, for some it is not
    # there at all (ScreenConnect's company is ConnectWise); near misses hold it in a longer term.
    key_in_company = f" {tool.key.lower()} " in f" {tool.company.lower().replace(',', ' ')} "
    key_in_signer = f" {tool.key.lower()} " in f" {tool.signer.lower().replace(',', ' ')} "
    return {
        "company": launches,
        "key": launches if key_in_company else 0,
        "netconn": count("network", "relay"),
        "domain": count("network", "relay", "browser-visit", "unsigned-copy", "lookalike-domain"),
        "filesig": signed,
        "signer-key": signed if key_in_signer else 0,
    }


@pytest.mark.parametrize("engine", ["auto", "python", "off"])
def test_vendor_rules_find_exactly_the_generated_stories(engine: str) -> None:
    """For every vendor, each rule matches as many records as the generator made stories it must match: no
    background record, no other vendor's, no near miss (but the lookalike domain, for the domain rule)."""
    generator, messages = _stream(
        600, seed=11, rmm_ratio=0.05, near_miss_ratio=0.03, netsupport_ratio=0.0, decoy_ratio=0.0, rmm_devices=40
    )
    vendor_rules = {tool.name: _vendor_rules(tool, i) for i, tool in enumerate(RMM_TOOLS)}
    all_rules = [r for rules in vendor_rules.values() for r in rules.values()]
    result = Detector(all_rules, prefilter_engine=engine).process(messages)
    assert result.problems == []
    found = Counter(m.rule.id for m in result.matches)
    stories = generator.stats.rmm_stories
    for index, tool in enumerate(RMM_TOOLS):
        expected = _expected(stories, tool)
        assert {kind: found[f"{index}-{kind}"] for kind in expected} == expected, tool.name
    # The stream had every story of every table, and each of them mattered to some assertion above.
    tables = {table for _, table, _ in stories}
    assert tables == {"process", "network", "certificate"}
    for table, names in RMM_STORIES.items():
        assert {name for _, t, name in stories if t == table} == set(names) | set(NEAR_MISS_STORIES[table])


def test_near_misses_pass_the_prefilter_and_match_no_has_of_the_vendors_names() -> None:
    """A stream of near misses only: every message mentions a vendor (a prefilter candidate), no company, key
    or signer rule matches, and the domain rules match exactly the lookalike domains under the vendor's."""
    generator, messages = _stream(
        150, seed=12, rmm_ratio=0.0, near_miss_ratio=1.0, netsupport_ratio=0.0, decoy_ratio=0.0, max_records=3
    )
    vendor_rules = [r for i, tool in enumerate(RMM_TOOLS) for r in _vendor_rules(tool, i).values()]
    result = Detector(vendor_rules).process(messages)
    assert result.candidates == len(messages)
    lookalikes = sum(n for (_, _, story), n in generator.stats.rmm_stories.items() if story == "lookalike-domain")
    assert lookalikes > 0
    assert Counter(m.rule.id.split("-", 1)[1] for m in result.matches) == {"domain": lookalikes}


# -- hunt over a written stream prints the generator's expected answer --------------------------------------


def test_hunt_over_a_generated_stream_prints_the_expected_answer(tmp_path: Path) -> None:
    """load/generate's expected answer (its in-process hunt) equals ``rmmwatch hunt`` over the file it wrote, for a
    rule of each table; and the answer has rows of each of them."""
    tool = RMM_TOOLS[0]
    texts = {
        "process": f"DeviceProcessEvents | where ProcessVersionInfoCompanyName has '{tool.company}'",
        "network": f"DeviceNetworkEvents | where RemoteUrl has '{tool.domain}'",
        "certificate": f"DeviceFileCertificateInfo | where Signer has '{tool.signer}'",
    }
    paths = []
    for name, text in texts.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(
            f"id: {name}\nname: {name}\nquery: |\n  {text}\n  | summarize FirstSeen=min(Timestamp), "
            "LastSeen=max(Timestamp), Count=count() by DeviceId, DeviceName\n"
        )
        paths.append(str(path))
    rules = [load_rule(p) for p in paths]
    stream = tmp_path / "stream.ndjson"
    config = GeneratorConfig(seed=13, rmm_ratio=0.05, rmm_devices=5, max_records=20)
    summary = asyncio.run(
        write_stream(config, FileSink(str(stream)), count=300, clock=fixed_clock(CLOCK, 10.0), expect=True, rules=rules)
    )
    assert summary.expected is not None
    expected = tmp_path / "expected.json"
    rows = summary.expected.write(str(expected), summary.end)
    assert {row["RuleId"] for row in rows} == set(texts)
    out = io.StringIO()
    args = ["hunt", "--now", format_datetime(summary.end), "--format", "json", str(stream)]
    with contextlib.redirect_stdout(out):
        assert cli.main([*args, *[a for p in paths for a in ("--rule", p)]]) == 0
    assert out.getvalue() == expected.read_text()
