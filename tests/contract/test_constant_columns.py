"""The parity contract for a rule in the AHQ form: the constant column after summarize, in every store and alert.

An AHQ block (``let rmmProcess = ... | summarize ... | extend rmmProcessName = 'NetSupport';
rmmProcess``) saved as a rule runs like the plain query, and its constant column is in every row:
a store's ``summaries`` equal ``hunt``'s rows (``window.summarize``) with that column last, as time
passes and events age out, and the alerts' ``summary`` carries it (``new``, ``update`` and ``end``).
Run against every store (memory, SQLite, and Redis with the services).
"""

from __future__ import annotations

from typing import Any

import pytest

from rmmwatch.events import Detector
from rmmwatch.hunt import rule_rows
from rmmwatch.rules import Rule, parse_rule
from rmmwatch.stores.base import Store
from tests.contract.conftest import StoreFactory
from tests.helpers import DAY, MINUTE, T0, WINDOW, matches, row

AHQ_RULE = """query: |
  let Time_start = now(-5d);
  let Time_end = now();
  //
  let rmmProcess =
  DeviceProcessEvents
  | where Timestamp between (Time_start..Time_end)
  | where ProcessVersionInfoCompanyName has 'netsupport'
  | summarize FirstSeen=min(Timestamp), LastSeen=max(Timestamp),
      Report=make_set(ReportId), Count=count() by DeviceId, DeviceName
  | extend rmmProcessName = 'NetSupport', rmmSeverity = 3
  ;
  rmmProcess
alerting:
  update: every
  end: true
"""
COLUMNS = ["DeviceId", "DeviceName", "FirstSeen", "LastSeen", "Report", "Count", "rmmProcessName", "rmmSeverity"]


@pytest.fixture
def rule() -> Rule:
    return parse_rule(AHQ_RULE, "netsupport-ahq.yaml")


async def _open(make_store: StoreFactory, rule: Rule) -> Store:
    store = make_store([rule])
    await store.open()
    return store


def _events() -> list[dict[str, Any]]:
    return [
        row(device="a", ticks=T0 - DAY),
        row(device="a", ticks=T0 - 2 * DAY, report=7),
        row(device="b", ticks=T0 - 4 * DAY),
        row(device="b", ticks=T0 - 6 * DAY),  # out of the window on arrival
        row(device="c", ticks=T0 - MINUTE, name="C-host"),
        row(device="d", ticks=T0, company="NetSupportLtd"),  # not the term
    ]


@pytest.mark.parametrize("later", [0, 2 * DAY, 3 * DAY + MINUTE, WINDOW + DAY], ids=["now", "+2d", "+3d1m", "+6d"])
async def test_summaries_equal_hunt_with_the_constant_columns(make_store: StoreFactory, rule: Rule, later: int) -> None:
    """The store's rows equal hunt's at each instant, each row ending with the two constant columns."""
    store = await _open(make_store, rule)
    events = _events()
    found = matches(Detector([rule]), events)
    await store.apply(found, T0)
    await store.tick(T0 + later)
    expected = rule_rows(rule, found, T0 + later)
    assert await store.summaries(rule, T0 + later) == expected
    assert all(list(r) == COLUMNS for r in expected)
    assert all((r["rmmProcessName"], r["rmmSeverity"]) == ("NetSupport", 3) for r in expected)
    if later == 0:
        assert [r["DeviceId"] for r in expected] == ["a", "b", "c"]
    if later == WINDOW + DAY:
        assert expected == []


async def test_alert_summaries_carry_the_constant_columns(make_store: StoreFactory, rule: Rule) -> None:
    """``new`` and ``update`` summaries are the row (constants included); ``end`` keeps the group and constants."""
    store = await _open(make_store, rule)
    detector = Detector([rule])
    first = await store.apply(matches(detector, [row(ticks=T0 - MINUTE)]), T0)
    update = await store.apply(matches(detector, [row(ticks=T0)]), T0 + MINUTE)
    ended = await store.tick(T0 + WINDOW + MINUTE)
    kinds = [a.kind for a in (*first.alerts, *update.alerts, *ended.alerts)]
    assert kinds == ["new", "update", "end"]
    new, changed, end = (a.document() for a in (*first.alerts, *update.alerts, *ended.alerts))
    assert list(new["summary"]) == COLUMNS
    assert (new["summary"]["rmmProcessName"], new["summary"]["Count"]) == ("NetSupport", 1)
    assert (changed["summary"]["rmmProcessName"], changed["summary"]["Count"]) == ("NetSupport", 2)
    assert end["summary"] == {
        "DeviceId": "dev-1",
        "DeviceName": "dev-1.corp.example",
        "rmmProcessName": "NetSupport",
        "rmmSeverity": 3,
    }
    assert new["group"] == {"DeviceId": "dev-1", "DeviceName": "dev-1.corp.example"}
