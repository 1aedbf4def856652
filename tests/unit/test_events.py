"""Decode+match: the three input shapes, the table filter, bad input, and prefilter soundness."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rmmwatch import events
from rmmwatch.events import Detector
from rmmwatch.rules import load_rules
from tests.helpers import FIXTURES, T0, envelope, row, seed_rule

BUNDLED = load_rules(["bundled:netsupport"])  # the seed and its exclusions, alone


def _fixture_messages(name: str) -> list[bytes]:
    data = (FIXTURES / name).read_bytes()
    if name.endswith(".json"):
        return [data]
    return [line.strip() for line in data.splitlines() if line.strip()]


@pytest.mark.parametrize(
    "name",
    ["defender-eventhub-message.json", "defender-storage-export.ndjson", "advanced-hunting-rows.ndjson"],
)
def test_three_shapes_give_the_same_matches(name: str) -> None:
    """Envelope, storage-export records (CRLF) and bare rows decode to the same events."""
    result = Detector([seed_rule()]).process(_fixture_messages(name))
    assert result.problems == []
    assert [m.trigger["ReportId"] for m in result.matches] == [30779, 30811]
    # One message holds all three records; one per line, the svchost line is never parsed.
    assert result.records == (3 if name.endswith(".json") else 2)
    assert result.matches[0].trigger["Timestamp"] == "2026-11-20T09:14:03.5312209Z"
    assert result.matches[0].ticks % 10_000_000 == 5312209  # all 7 fractional digits kept


def test_other_tables_are_skipped_and_counted() -> None:
    """The DeviceNetworkEvents record (which mentions NetSupport) is not a process event."""
    result = Detector([seed_rule()]).process(_fixture_messages("defender-eventhub-message.json"))
    assert result.other_tables == 1
    assert all(m.trigger["ActionType"] == "ProcessCreated" for m in result.matches)


def test_bundled_exclusion_drops_the_reporting_launch() -> None:
    """The sample's '/report' launch is excluded by name, and kept aside for metering."""
    result = Detector(BUNDLED).process(_fixture_messages("defender-eventhub-message.json"))
    assert [m.trigger["ReportId"] for m in result.matches] == [30779]
    assert [(e.match.trigger["ReportId"], e.exclusion.name) for e in result.excluded] == [
        (30811, "System monitoring and reporting")
    ]


def test_identity_and_group() -> None:
    """Event identity is (DeviceId, DeviceName, Timestamp ticks, ReportId); the group is the by-columns."""
    match = Detector([seed_rule()]).process([envelope(row(device="d", ticks=T0, report=9))]).matches[0]
    assert orjson.loads(match.identity) == ["d", "d.corp.example", T0, 9]
    assert match.group == ("d", "d.corp.example")
    assert match.contribution == (T0, T0, 9, None)


def test_null_strings_are_empty_and_null_report_counts() -> None:
    """JSON null strings are "" (a valid group key); a null ReportId still makes an event."""
    nulls = row(ticks=T0) | {"DeviceId": None, "DeviceName": None, "ReportId": None}
    result = Detector([seed_rule()]).process([envelope(nulls)])
    assert result.problems == []
    assert result.matches[0].group == ("", "")
    assert result.matches[0].contribution[2] is None


GOOD = row(ticks=T0)


def _with(**changes: Any) -> bytes:
    return envelope(GOOD | changes)


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        pytest.param(
            b'{"records": [{"properties": {"ProcessVersionInfoCompanyName": "NetSupport',
            "malformed_json",
            id="truncated JSON",
        ),
        pytest.param(b'{"c": "NetSupport \xff Ltd"}', "invalid_utf8", id="invalid UTF-8"),
        pytest.param(b'"NetSupport Ltd"', "not_object_or_array", id="a JSON string body"),
        pytest.param(b'{"records": {"x": "NetSupport"}}', "records_not_list", id="records is an object"),
        pytest.param(b'{"records": ["NetSupport"]}', "record_not_object", id="a record that is a string"),
        pytest.param(
            b'{"records": [{"category": "AdvancedHunting-DeviceProcessEvents", "x": "netsupport"}]}',
            "missing_properties",
            id="envelope record without properties",
        ),
        pytest.param(
            b'{"records": [{"properties": ["NetSupport"]}]}', "properties_not_object", id="properties is a list"
        ),
        pytest.param(
            _with(ProcessVersionInfoCompanyName=42, FileName="netsupport"),
            "wrong_type",
            id="number where a string is expected",
        ),
        pytest.param(_with(ReportId="30779"), "wrong_type", id="string where a long is expected"),
        pytest.param(_with(Timestamp="2026-02-30T00:00:00Z"), "bad_timestamp", id="impossible date"),
        pytest.param(_with(Timestamp="2026-11-20T12:00:00.12345678Z"), "bad_timestamp", id="8 fractional digits"),
        pytest.param(_with(Timestamp=None), "missing_field", id="null Timestamp"),
    ],
)
def test_bad_input_is_reported_not_raised(message: bytes, reason: str) -> None:
    """Each kind of bad input gets its reason; the rest of the batch is still processed."""
    batch = [message, envelope(row(ticks=T0, device="ok"))]
    result = Detector([seed_rule()]).process(batch)
    assert [(index, p.reason) for index, p in result.problems] == [(0, reason)]
    assert [m.group[0] for m in result.matches] == ["ok"]


def test_one_bad_record_does_not_spoil_its_message() -> None:
    """A wrong-typed record is reported by position; its siblings in the message still match."""
    message = envelope(row(device="a"), GOOD | {"ProcessVersionInfoCompanyName": 1}, row(device="c"))
    result = Detector([seed_rule()]).process([message])
    assert [(p.reason, p.record) for _, p in result.problems] == [("wrong_type", 1)]
    assert [m.group[0] for m in result.matches] == ["a", "c"]


def test_oversized_messages_are_refused_before_parsing() -> None:
    """A message over the limit is reported as oversized, whatever it contains."""
    detector = Detector([seed_rule()], max_message_bytes=100)
    result = detector.process([envelope(GOOD)])
    assert [p.reason for _, p in result.problems] == ["oversized"]
    assert result.candidates == 0


def test_unknown_columns_are_ignored() -> None:
    """New Defender columns do not break decoding."""
    result = Detector([seed_rule()]).process([envelope(GOOD | {"SomeColumnFrom2027": {"a": [1, 2]}})])
    assert len(result.matches) == 1


def test_every_reason_is_declared() -> None:
    """Reasons are metric label values: the declared set is the one the decoder uses."""
    assert set(events.REASONS) == {
        "oversized",
        "invalid_utf8",
        "malformed_json",
        "not_object_or_array",
        "records_not_list",
        "record_not_object",
        "missing_properties",
        "properties_not_object",
        "missing_field",
        "wrong_type",
        "bad_timestamp",
    }


# -- prefilter soundness ------------------------------------------------------------------------

_TRICKY = st.sampled_from(
    [
        "NetSupport Ltd",
        "NETSUPPORT LTD.",
        "NetSupportLtd",
        "My NetSupport",
        "net support",
        "netsupport_x",
        "N\u0065tSupport",
        "Net\u017fupport",
        "\u0130",
        "\u212a",
        "Microsoft\u00ae",
        "",
        "support",
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    companies=st.lists(st.one_of(_TRICKY, st.text(max_size=12)), min_size=1, max_size=6),
    escape=st.booleans(),
)
def test_prefilter_never_changes_a_result(companies: list[str], escape: bool) -> None:
    """With any engine, the prefiltered path gives exactly the matches of parsing everything."""
    rows = [row(ticks=T0, device=f"d{i}", company=c) for i, c in enumerate(companies)]
    message = envelope(*rows)
    if escape:
        # What an escaping encoder (ensure_ascii, .NET) would write: \\uXXXX for non-ASCII, and
        # an escaped letter, which no real encoder does but JSON allows.
        import json

        message = (
            json.dumps({"records": [{"properties": r} for r in rows]}).replace("NetSupport", "\\u004etSupport").encode()
        )
    reference = Detector(BUNDLED, prefilter_engine="off").process([message])
    for engine in ("python", "auto"):
        result = Detector(BUNDLED, prefilter_engine=engine).process([message])
        assert [m.identity for m in result.matches] == [m.identity for m in reference.matches]
        assert [e.match.identity for e in result.excluded] == [e.match.identity for e in reference.excluded]
