"""The pack's AHQ form gives duckdb-kql's rows: tabular ``let``, constant ``extend`` after summarize, adjacent literals.

duckdb-kql (the independent engine of tests/unit/test_kql_differential.py) runs the same KQL text
over the same rows at a pinned ``now()``. The query is in the AHQ form (``let rmmX = T | where ...
| summarize ... | extend rmmXName = '...'; rmmX``) and its ``has_any`` list holds two adjacent
string literals, which both engines must read as one (KQL concatenates them). rmmwatch's rows
come from the Detector and ``window.summarize`` (the path of ``hunt`` and every store).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import duckdb_kql
import orjson
import pytest
from duckdb import DuckDBPyConnection

from rmmwatch.events import Detector
from rmmwatch.hunt import rule_rows
from rmmwatch.kql.datetimes import TICKS_PER_MICROSECOND, format_datetime
from rmmwatch.rules import parse_rule

TABLE = "DeviceProcessEvents"
EPOCH = dt.datetime(1970, 1, 1)
MICRO = dt.timedelta(microseconds=1)
DAY = dt.timedelta(days=1)
NOW = dt.datetime(2026, 11, 20, 12, 0, 0, 250000)

AHQ_QUERY = """let Time_start = now(-5d);
let Time_end = now();
//
let rmmProcess =
DeviceProcessEvents
| where Timestamp between (Time_start..Time_end)
| where ProcessVersionInfoCompanyName has_any (
    'Acme'
    'Remote',
    'BoltDesk'
    )
| summarize FirstSeen=min(Timestamp), LastSeen=max(Timestamp),
    Report=make_set(ReportId), Count=count() by DeviceId, DeviceName
| extend rmmProcessName = 'Fixture', rmmVersion = 2
;
rmmProcess"""

RULE_YAML = "query: |\n" + "".join(f"  {line}\n" for line in AHQ_QUERY.splitlines())

#: (Timestamp, DeviceId, DeviceName, company, ReportId)
EVENTS: list[tuple[dt.datetime, str, str, str, int]] = [
    (NOW - DAY, "d1", "host-a", "AcmeRemote Ltd", 11),  # the concatenated literal, as a term
    (NOW - 2 * DAY, "d1", "host-a", "acmeremote", 12),
    (NOW - DAY, "d2", "host-b", "Acme Ltd", 21),  # 'Acme' alone is not an item: no match
    (NOW - DAY, "d2", "host-b", "Remote Ltd", 22),  # nor is 'Remote'
    (NOW - 3 * DAY, "d3", "host-c", "BoltDesk Inc.", 31),
    (NOW - 5 * DAY, "d3", "host-c", "BoltDesk Inc.", 32),  # exactly on the low edge
    (NOW - 5 * DAY - MICRO, "d3", "host-c", "BoltDesk Inc.", 33),  # one microsecond too old
    (NOW + MICRO, "d4", "host-d", "BoltDesk Inc.", 41),  # one microsecond in the future
]


def _ticks(moment: dt.datetime) -> int:
    return (moment - EPOCH) // MICRO * TICKS_PER_MICROSECOND


@pytest.fixture
def con() -> Iterator[DuckDBPyConnection]:
    connection = duckdb_kql.connect()
    connection.execute(
        f"CREATE TABLE {TABLE} (Timestamp TIMESTAMP, DeviceId VARCHAR, DeviceName VARCHAR,"
        " ProcessVersionInfoCompanyName VARCHAR, ReportId BIGINT)"
    )
    connection.executemany(f"INSERT INTO {TABLE} VALUES (?, ?, ?, ?, ?)", EVENTS)
    yield connection
    connection.close()


def duckdb_rows(con: DuckDBPyConnection, now: dt.datetime) -> list[dict[str, Any]]:
    relation = duckdb_kql.kql(con, AHQ_QUERY, query_now=now)
    assert relation.columns == [
        "DeviceId",
        "DeviceName",
        "FirstSeen",
        "LastSeen",
        "Report",
        "Count",
        "rmmProcessName",
        "rmmVersion",
    ]
    rows = [
        {
            "DeviceId": device,
            "DeviceName": name,
            "FirstSeen": format_datetime(_ticks(first)),
            "LastSeen": format_datetime(_ticks(last)),
            "Report": sorted(json.loads(report)),
            "Count": count,
            "rmmProcessName": tool,
            "rmmVersion": version,
        }
        for device, name, first, last, report, count, tool, version in relation.fetchall()
    ]
    return sorted(rows, key=lambda r: (r["DeviceId"], r["DeviceName"]))


def rmmwatch_rows(now: dt.datetime) -> list[dict[str, Any]]:
    rule = parse_rule(RULE_YAML, "ahq.yaml")
    messages = [
        orjson.dumps(
            {
                "Timestamp": format_datetime(_ticks(t)),
                "DeviceId": d,
                "DeviceName": n,
                "ProcessVersionInfoCompanyName": c,
                "ReportId": r,
            }
        )
        for t, d, n, c, r in EVENTS
    ]
    result = Detector([rule]).process(messages)
    assert result.problems == []
    return rule_rows(rule, result.matches, _ticks(now))


@pytest.mark.parametrize(
    ("now", "devices"),
    [
        pytest.param(NOW, ["d1", "d3"], id="now: the low edge in, the future event out"),
        pytest.param(NOW + MICRO, ["d1", "d3", "d4"], id="now+1us: the future event enters"),
        pytest.param(NOW + 4 * DAY, ["d1", "d4"], id="four days later"),
        pytest.param(NOW + 10 * DAY, [], id="ten days later: no rows"),
    ],
)
def test_the_ahq_form_gives_duckdb_kqls_rows(con: DuckDBPyConnection, now: dt.datetime, devices: list[str]) -> None:
    """Same rows, same constant columns last, same reading of the adjacent literals, at each now()."""
    expected = duckdb_rows(con, now)
    assert rmmwatch_rows(now) == expected
    assert [r["DeviceId"] for r in expected] == devices
    assert all((r["rmmProcessName"], r["rmmVersion"]) == ("Fixture", 2) for r in expected)


def test_the_anchor_rows_at_now(con: DuckDBPyConnection) -> None:
    """At the pinned now both engines give exactly these rows (d2's 'Acme' and 'Remote' do not match)."""
    rows = duckdb_rows(con, NOW)
    assert rows == rmmwatch_rows(NOW)
    assert [(r["DeviceId"], r["Report"], r["Count"]) for r in rows] == [("d1", [11, 12], 2), ("d3", [31, 32], 2)]
    assert list(rows[0]) == [
        "DeviceId",
        "DeviceName",
        "FirstSeen",
        "LastSeen",
        "Report",
        "Count",
        "rmmProcessName",
        "rmmVersion",
    ]
