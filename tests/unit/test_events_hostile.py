"""Decode+match on hostile envelopes: any JSON value in any position the decoder reads is a bad record (or
message) with a reason from the fixed set, never an exception, and the rest of the message is processed."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rmmwatch import events
from rmmwatch.events import Detector
from rmmwatch.kql.schema import TABLES
from rmmwatch.rules import load_rules
from tests.helpers import CERTIFICATE, NETWORK, PROCESS, T0, certificate_row, network_row, row

#: Every bundled rule: the three tables, many literals, exclusions.
BUNDLED_ALL = load_rules(None)
DETECTORS = [Detector(BUNDLED_ALL, prefilter_engine=engine) for engine in ("auto", "off")]


def _sibling() -> dict[str, Any]:
    return {"category": PROCESS, "properties": row(ticks=T0, device="sibling", report=1)}


@pytest.mark.parametrize(
    ("category", "shown"),
    [([PROCESS], "list"), ({"a": PROCESS}, "dict"), (7, "int"), (1.5, "float"), (True, "bool")],
)
def test_a_category_that_is_not_a_string_is_a_wrong_typed_record(category: Any, shown: str) -> None:
    """A list or object ``category`` used to raise TypeError (unhashable) out of ``process``, crashing ``run`` and
    ``hunt`` at the same message on every restart; now it is a ``wrong_type`` record, with or without
    ``properties``, dead-lettered with the record, and its sibling still matches."""
    bad_with = {"category": category, "properties": row(ticks=T0, device="bad")}
    bad_without = {"category": category, "x": "NetSupport"}
    message = orjson.dumps({"records": [bad_with, _sibling(), bad_without]})
    for detector in DETECTORS:
        result = detector.process([message])
        assert [(p.reason, p.detail, p.record) for _, p in result.problems] == [
            ("wrong_type", f"'category' is a JSON {shown}, not a string", 0),
            ("wrong_type", f"'category' is a JSON {shown}, not a string", 2),
        ]
        assert orjson.loads(result.problems[0][1].payload or b"") == bad_with
        assert {m.group[0] for m in result.matches} == {"sibling"}


def test_a_storage_record_with_a_list_category_is_a_bad_record() -> None:
    """The storage-export shape (one record per message) with a list category: a bad record, not a crash."""
    message = orjson.dumps({"category": [PROCESS], "properties": row(ticks=T0)})
    result = DETECTORS[0].process([message, orjson.dumps(_sibling())])
    assert [(index, p.reason) for index, p in result.problems] == [(0, "wrong_type")]
    assert [m.group[0] for m in result.matches] == ["sibling"]


@pytest.mark.parametrize("timestamp", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59.9999999-14:00"])
def test_a_timestamp_that_an_offset_moves_out_of_range_is_a_bad_timestamp(timestamp: str) -> None:
    """A valid-looking datetime whose UTC offset moves it before 0001-01-01 or past 9999-12-31 used to raise
    ValueError out of ``process`` (formatting the alert's trigger); now it is a ``bad_timestamp`` record."""
    message = orjson.dumps({"records": [{"category": PROCESS, "properties": row(Timestamp=timestamp)}, _sibling()]})
    for detector in DETECTORS:
        result = detector.process([message])
        assert [(p.reason, p.record) for _, p in result.problems] == [("bad_timestamp", 0)]
        assert [m.group[0] for m in result.matches] == ["sibling"]


# -- any JSON value anywhere ------------------------------------------------------------------------

_INTERESTING = st.sampled_from(
    [
        PROCESS,
        NETWORK,
        CERTIFICATE,
        "NetSupport Ltd",
        "AnyDesk Software GmbH",
        "relay-1.net.anydesk.com",
        "2026-11-20T12:00:00Z",
        "0001-01-01T00:00:00+14:00",
        "9999-12-31T23:59:59.9999999-14:00",
        "0001-01-01T00:00:00Z",
        "2026-13-40T99:99:99Z",
        "2026-11-20T09:14:03.53122091234Z",
        "",
        "\u0130",
        "\u212a",
    ]
)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    _INTERESTING,
)
JSON = st.recursive(
    _SCALARS,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=8,
)
_COLUMNS = sorted({name for _, schema in TABLES.values() for name in schema} | {"category", "properties", "records"})


def _target(kind: int) -> dict[str, Any]:
    if kind == 0:
        return row(ticks=T0, device="target")
    if kind == 1:
        return network_row(ticks=T0, device="target")
    return certificate_row(ticks=T0, device="target")


@st.composite
def _hostile_messages(draw: st.DrawFn) -> tuple[bytes, bool]:
    """A message with one arbitrary JSON value at one position the decoder reads; True if a sibling record (device
    ``sibling``) is left intact next to the spoiled one."""
    kind = draw(st.integers(0, 2))
    target = _target(kind)
    category = (PROCESS, NETWORK, CERTIFICATE)[kind]
    value = draw(JSON)
    position = draw(
        st.sampled_from(["document", "records", "record", "category", "properties", "column", "bare column"])
    )
    if position == "document":
        return orjson.dumps(value), False
    if position == "records":
        return orjson.dumps({"records": value}), False
    if position == "bare column":  # a bare Advanced Hunting row, in an array with a sibling row
        target[draw(st.sampled_from(_COLUMNS))] = value
        return orjson.dumps([target, _sibling()["properties"]]), True
    record: Any = {"category": category, "properties": target}
    if position == "record":
        record = value
    elif position == "category":
        record["category"] = value
    elif position == "properties":
        record["properties"] = value
    else:
        for _ in range(draw(st.integers(1, 3))):
            target[draw(st.sampled_from(_COLUMNS))] = draw(JSON)
    records = [record, _sibling()]
    if draw(st.booleans()):
        records.reverse()
    return orjson.dumps({"records": records}), True


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile=_hostile_messages())
def test_any_json_value_in_any_position_is_bad_input_never_an_exception(hostile: tuple[bytes, bool]) -> None:
    """Arbitrary JSON values (nested lists and objects, huge and negative numbers, datetimes that offsets move out
    of range, table names) as the document, ``records``, a record, its ``category``, its ``properties`` or any
    column: ``process`` never raises (with or without the prefilter), every problem has a declared reason, and a
    sibling record next to the spoiled one still matches."""
    message, has_sibling = hostile
    for detector in DETECTORS:
        result = detector.process([message])
        assert {p.reason for _, p in result.problems} <= set(events.REASONS)
        if has_sibling:
            assert "sibling" in {m.group[0] for m in result.matches}
