"""The store contract, run unchanged against every store implementation.

Each test states one clause of the contract in stores/base.py: parity with the KQL query
at ``now``, idempotent and atomic apply, the window's edges as time passes with nobody
sending anything, episodes and their alerts, the outbox, durability.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from rmmwatch.events import Detector
from rmmwatch.hunt import rule_rows
from rmmwatch.kql.datetimes import format_datetime
from rmmwatch.stores.base import Store
from tests.contract.conftest import StoreFactory, durable
from tests.helpers import DAY, MINUTE, SECOND, T0, WINDOW, matches, row, rule_with_alerting, seed_rule

RULE = seed_rule()


@pytest.fixture
def detector() -> Detector:
    return Detector([RULE])


async def _open(make_store: StoreFactory, rules: list[Any] | None = None, name: str = "state") -> Store:
    store = make_store(rules or [RULE], name)  # type: ignore[call-arg]
    await store.open()
    return store


def _reference(detector: Detector, rows: list[dict[str, Any]], now: int) -> list[dict[str, Any]]:
    found = matches(detector, rows)
    return rule_rows(RULE, found, now)


async def test_first_event_of_a_group_raises_one_new_alert(make_store: StoreFactory, detector: Detector) -> None:
    """A group going from empty to non-empty opens an episode and raises exactly one 'new'."""
    store = await _open(make_store)
    result = await store.apply(matches(detector, [row(ticks=T0 - MINUTE)]), T0)
    assert result.inserted == 1
    assert [a.kind for a in result.alerts] == ["new"]
    pending = await store.pending_alerts(10)
    assert [(a.kind, a.revision) for a in pending] == [("new", 0)]
    document = pending[0].document()
    assert document["summary"] == {
        "DeviceId": "dev-1",
        "DeviceName": "dev-1.corp.example",
        "FirstSeen": format_datetime(T0 - MINUTE),
        "LastSeen": format_datetime(T0 - MINUTE),
        "Report": [document["trigger"]["ReportId"]],
        "Count": 1,
    }
    assert document["rule"]["techniques"] == ["T1219"]
    assert document["rule"]["tactic_ids"] == ["TA0011"]
    assert document["times"] == {
        "event": format_datetime(T0 - MINUTE),
        "seen": format_datetime(T0),
        "alerted": format_datetime(T0),
    }


async def test_reapplying_events_changes_nothing(make_store: StoreFactory, detector: Detector) -> None:
    """Redelivery: the same events applied again are duplicates, with no alert and no state change."""
    store = await _open(make_store)
    rows = [row(ticks=T0 - i * MINUTE) for i in range(3)]
    first = await store.apply(matches(detector, rows), T0)
    before = await store.summaries(RULE, T0)
    again = await store.apply(matches(detector, rows + rows), T0 + SECOND)
    assert first.inserted == 3
    assert (again.inserted, again.duplicates, again.alerts) == (0, 6, [])
    assert await store.summaries(RULE, T0 + SECOND) == before
    assert before[0]["Count"] == 3


async def test_summaries_equal_the_hunting_query(make_store: StoreFactory, detector: Detector) -> None:
    """Several devices, events in and out of the window: the state is the KQL answer at now."""
    store = await _open(make_store)
    rows = [
        row(device="a", ticks=T0 - 1 * DAY),
        row(device="a", ticks=T0 - 2 * DAY, report=7),
        row(device="a", ticks=T0 - 3 * DAY, report=7),  # same ReportId, other Timestamp: another event
        row(device="b", ticks=T0 - 4 * DAY),
        row(device="b", ticks=T0 - 6 * DAY),  # out of the window on arrival
        row(device="c", ticks=T0 - MINUTE, name="C-host"),
        row(device="c", ticks=T0 - MINUTE, name="c-host"),  # DeviceName is part of the group
        row(device="d", ticks=T0, company="NetSupportLtd"),  # not the term: no match
    ]
    result = await store.apply(matches(detector, rows), T0)
    assert result.out_of_window == 1
    assert await store.summaries(RULE, T0) == _reference(detector, rows, T0)
    assert [r["DeviceId"] for r in await store.summaries(RULE, T0)] == ["a", "b", "c", "c"]
    a = (await store.summaries(RULE, T0))[0]
    assert a["Count"] == 3
    assert a["Report"] == sorted({rows[0]["ReportId"], 7})


@pytest.mark.parametrize(
    ("offset", "counted"),
    [
        pytest.param(-WINDOW, True, id="exactly now-5d is in"),
        pytest.param(-WINDOW - 1, False, id="one tick earlier is out"),
        pytest.param(0, True, id="exactly now is in"),
        pytest.param(1, False, id="one tick later is not yet in"),
    ],
)
async def test_window_edges(make_store: StoreFactory, detector: Detector, offset: int, counted: bool) -> None:
    """between (now-5d .. now) is inclusive at both ends, to the 100 ns tick."""
    store = await _open(make_store)
    await store.apply(matches(detector, [row(ticks=T0 + offset)]), T0)
    rows = await store.summaries(RULE, T0)
    assert (len(rows) == 1) is counted


async def test_events_age_out_with_the_clock_alone(make_store: StoreFactory, detector: Detector) -> None:
    """A wall-clock tick, not the next message, removes events that left the window."""
    store = await _open(make_store)
    await store.apply(matches(detector, [row(ticks=T0), row(ticks=T0 + MINUTE)]), T0 + MINUTE)
    still = await store.tick(T0 + WINDOW)
    assert still.expired == 0
    assert (await store.summaries(RULE, T0 + WINDOW))[0]["Count"] == 2
    gone = await store.tick(T0 + WINDOW + 1)
    assert gone.expired == 1
    assert (await store.summaries(RULE, T0 + WINDOW + 1))[0]["Count"] == 1
    await store.tick(T0 + MINUTE + WINDOW + 1)
    assert await store.summaries(RULE, T0 + MINUTE + WINDOW + 1) == []
    assert (await store.stats()).get(RULE.id) is None


async def test_future_dated_event_counts_once_its_time_comes(make_store: StoreFactory, detector: Detector) -> None:
    """An event dated after now is held, then activated (and alerted) by the tick that reaches it."""
    store = await _open(make_store)
    future = T0 + 10 * MINUTE
    result = await store.apply(matches(detector, [row(ticks=future)]), T0)
    assert (result.inserted, result.future, result.alerts) == (1, 1, [])
    assert await store.summaries(RULE, T0) == []
    early = await store.tick(future - 1)
    assert early.alerts == []
    on_time = await store.tick(future)
    assert [a.kind for a in on_time.alerts] == ["new"]
    assert on_time.activated == 1
    assert (await store.summaries(RULE, future))[0]["FirstSeen"] == format_datetime(future)


async def test_late_event_is_not_counted(make_store: StoreFactory, detector: Detector) -> None:
    """An event older than now-5d on arrival is refused, metered and never stored."""
    store = await _open(make_store)
    result = await store.apply(matches(detector, [row(ticks=T0 - WINDOW - SECOND)]), T0)
    assert (result.inserted, result.out_of_window, result.alerts) == (0, 1, [])
    assert await store.summaries(RULE, T0) == []


async def test_alert_ids_are_deterministic(make_store: StoreFactory, detector: Detector) -> None:
    """The same events give the same alert_id in two independent stores (replicas, replays)."""
    rows = [row(ticks=T0 - MINUTE, report=1), row(ticks=T0 - 2 * MINUTE, report=2)]
    found = matches(detector, rows)
    ids = []
    for name in ("one", "two"):
        store = await _open(make_store, name=name)
        result = await store.apply(found, T0)
        ids.append([a.alert_id for a in result.alerts])
    assert ids[0] == ids[1]
    assert len(ids[0]) == 1


@pytest.mark.parametrize(
    ("policy", "kinds_after_second_batch", "kinds_after_interval"),
    [
        pytest.param("  update: every\n", ["update"], [], id="every change"),
        pytest.param("  update: none\n", [], [], id="no updates"),
        pytest.param("  update: throttle\n  updateInterval: 10m\n", [], ["update"], id="throttled, trailing edge"),
    ],
)
async def test_update_policy(
    make_store: StoreFactory,
    policy: str,
    kinds_after_second_batch: list[str],
    kinds_after_interval: list[str],
) -> None:
    """Changes after 'new' follow the rule's policy; a throttled change is sent when the interval ends."""
    rule = rule_with_alerting(policy)
    detector = Detector([rule])
    store = await _open(make_store, [rule])
    first = await store.apply(matches(detector, [row(ticks=T0 - MINUTE)]), T0)
    second = await store.apply(matches(detector, [row(ticks=T0)]), T0 + MINUTE)
    later = await store.tick(T0 + 11 * MINUTE)
    assert [a.kind for a in first.alerts] == ["new"]
    assert [a.kind for a in second.alerts] == kinds_after_second_batch
    assert [a.kind for a in later.alerts] == kinds_after_interval
    updates = second.alerts + later.alerts
    for update in updates:
        assert update.alert_id == first.alerts[0].alert_id
        assert update.revision == 1
        assert update.document()["summary"]["Count"] == 2


async def test_throttle_allows_an_update_after_the_interval(make_store: StoreFactory) -> None:
    """Once the interval has passed since the last alert, a change is alerted at once."""
    rule = rule_with_alerting("  update: throttle\n  updateInterval: 10m\n")
    detector = Detector([rule])
    store = await _open(make_store, [rule])
    await store.apply(matches(detector, [row(ticks=T0 - MINUTE)]), T0)
    result = await store.apply(matches(detector, [row(ticks=T0 + 10 * MINUTE)]), T0 + 10 * MINUTE)
    assert [(a.kind, a.revision) for a in result.alerts] == [("update", 1)]


async def test_episode_end_and_a_new_episode(make_store: StoreFactory) -> None:
    """A group that empties ends its episode ('end' when asked); its next event opens a new one."""
    rule = rule_with_alerting("  update: every\n  end: true\n")
    detector = Detector([rule])
    store = await _open(make_store, [rule])
    first = await store.apply(matches(detector, [row(ticks=T0)]), T0)
    ended = await store.tick(T0 + WINDOW + 1)
    assert [(a.kind, a.revision, a.alert_id) for a in ended.alerts] == [("end", 1, first.alerts[0].alert_id)]
    again = await store.apply(matches(detector, [row(ticks=T0 + WINDOW + SECOND)]), T0 + WINDOW + SECOND)
    assert [a.kind for a in again.alerts] == ["new"]
    assert again.alerts[0].alert_id != first.alerts[0].alert_id


async def test_group_that_emptied_before_the_next_event_starts_a_new_episode(make_store: StoreFactory) -> None:
    """apply first advances to now: an expiry nobody ticked yet still ends the old episode."""
    rule = rule_with_alerting("  update: every\n")
    detector = Detector([rule])
    store = await _open(make_store, [rule])
    first = await store.apply(matches(detector, [row(ticks=T0)]), T0)
    late = T0 + WINDOW + MINUTE
    second = await store.apply(matches(detector, [row(ticks=late)]), late)
    assert [a.kind for a in second.alerts] == ["new"]
    assert second.alerts[0].alert_id != first.alerts[0].alert_id


async def test_outbox_delivery_bookkeeping(make_store: StoreFactory, detector: Detector) -> None:
    """Alerts wait in the outbox, oldest first, until marked sent (idempotently)."""
    store = await _open(make_store)
    await store.apply(matches(detector, [row(device="a", ticks=T0)]), T0)
    await store.apply(matches(detector, [row(device="b", ticks=T0)]), T0 + SECOND)
    pending = await store.pending_alerts(10)
    assert [a.document()["group"]["DeviceId"] for a in pending] == ["a", "b"]
    assert len(await store.pending_alerts(1)) == 1
    await store.mark_sent([pending[0].key])
    await store.mark_sent([pending[0].key])
    assert [a.key for a in await store.pending_alerts(10)] == [pending[1].key]
    await store.mark_sent([pending[1].key])
    assert await store.pending_alerts(10) == []


async def test_pending_count_counts_waiting_alerts_up_to_its_limit(
    make_store: StoreFactory, detector: Detector
) -> None:
    """The backpressure count: every unsent alert, counted up to the limit asked, sent ones not counted."""
    store = await _open(make_store)
    for i, device in enumerate("abcde"):
        await store.apply(matches(detector, [row(device=device, ticks=T0)]), T0 + i * SECOND)
    assert await store.pending_count(100) == 5
    assert await store.pending_count(3) == 3
    first = await store.pending_alerts(2)
    await store.mark_sent([a.key for a in first])
    assert await store.pending_count(100) == 3


async def test_rules_keep_separate_state(make_store: StoreFactory) -> None:
    """Two rules over the same events have separate groups, episodes and alert ids."""
    first, second = seed_rule("rule-one"), seed_rule("rule-two")
    detector = Detector([first, second])
    store = await _open(make_store, [first, second])
    result = await store.apply(matches(detector, [row(ticks=T0)]), T0)
    assert sorted(a.rule_id for a in result.alerts) == ["rule-one", "rule-two"]
    assert len({a.alert_id for a in result.alerts}) == 2
    stats = await store.stats()
    assert stats["rule-one"].events == stats["rule-two"].events == 1


async def test_state_survives_reopen(make_store: StoreFactory, detector: Detector, store_kind: str) -> None:
    """A durable store keeps events, episodes and undelivered alerts across close and reopen."""
    store = await _open(make_store)
    await store.apply(matches(detector, [row(ticks=T0 - MINUTE), row(ticks=T0)]), T0)
    summaries = await store.summaries(RULE, T0)
    await store.close()
    reopened = await _open(make_store)
    if not durable(store_kind):
        assert await reopened.summaries(RULE, T0) == []  # memory: nothing survives, by design
        return
    assert await reopened.summaries(RULE, T0) == summaries
    assert [a.kind for a in await reopened.pending_alerts(10)] == ["new"]
    more = await reopened.apply(matches(detector, [row(ticks=T0 + SECOND)]), T0 + SECOND)
    assert [a.kind for a in more.alerts] == []  # the episode is still open: no second 'new'


async def test_ping_reports_an_open_store(make_store: StoreFactory) -> None:
    """ping() answers True for an open store (readiness)."""
    store = await _open(make_store)
    assert await store.ping() is True


async def test_alert_payload_is_byte_identical_on_redelivery(make_store: StoreFactory, detector: Detector) -> None:
    """What the outbox hands out twice (before and after a crash) is the same bytes."""
    store = await _open(make_store)
    await store.apply(matches(detector, [row(ticks=T0)]), T0)
    once = await store.pending_alerts(10)
    twice = await store.pending_alerts(10)
    assert [a.payload for a in once] == [a.payload for a in twice]
    assert orjson.loads(once[0].payload)["alert_id"] == once[0].alert_id


def _alert_view(alerts: list[Any]) -> list[tuple[str, int, str, bytes]]:
    return sorted((a.alert_id, a.revision, a.kind, a.payload) for a in alerts)


async def test_a_batch_applied_in_slices_gives_what_it_gives_at_once(
    make_store: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Slicing a large batch (whole groups per slice) changes neither the state nor the alerts."""
    rule = rule_with_alerting("  update: every\n")
    detector = Detector([rule])
    # Five devices, their events interleaved; a 'new' then 'update' group already open before.
    rows = [row(device=f"d{i % 5}", ticks=T0 - (i + 1) * MINUTE, report=7000 + i) for i in range(23)]
    earlier = [row(device="d0", ticks=T0 - DAY, report=6999)]
    views = []
    for name, limit in (("whole", 10_000), ("sliced", 3)):
        monkeypatch.setattr("rmmwatch.stores.engine.APPLY_SLICE", limit)
        store = await _open(make_store, [rule], name=name)
        before = await store.apply(matches(detector, earlier), T0 - SECOND)
        result = await store.apply(matches(detector, rows + rows[:4]), T0)  # with duplicates
        counts = (result.inserted, result.duplicates, result.out_of_window, result.future)
        views.append(
            (
                _alert_view(before.alerts),
                _alert_view(result.alerts),
                counts,
                await store.summaries(rule, T0),
                _alert_view(await store.pending_alerts(100)),
            )
        )
    assert views[0] == views[1]
    assert views[0][2] == (23, 4, 0, 0)
    assert sorted(kind for _, _, kind, _ in views[0][1]) == ["new"] * 4 + ["update"]


async def test_apply_many_equals_applying_each_part(make_store: StoreFactory) -> None:
    """Group commit: several batches in one call give the alerts and state of one call per batch."""
    rule = rule_with_alerting("  update: every\n")
    detector = Detector([rule])
    parts = [
        matches(detector, [row(device="a", ticks=T0 - 3 * MINUTE, report=1), row(device="b", report=2)]),
        matches(detector, [row(device="a", ticks=T0 - 2 * MINUTE, report=3)]),
        [],
        matches(detector, [row(device="b", ticks=T0 - MINUTE, report=4), row(device="c", report=5)]),
    ]
    separate = await _open(make_store, [rule], name="separate")
    one_by_one = []
    for part in parts:
        one_by_one += (await separate.apply(part, T0)).alerts
    grouped = await _open(make_store, [rule], name="grouped")
    together = await grouped.apply_many(parts, T0)
    assert together.alerts == []  # counted, not held: they are in the outbox
    assert together.alert_counts == {(rule.id, "new"): 3, (rule.id, "update"): 2}
    assert sorted(a.kind for a in one_by_one) == ["new", "new", "new", "update", "update"]
    assert together.inserted == 5
    assert _alert_view(await grouped.pending_alerts(100)) == _alert_view(one_by_one)
    assert await grouped.summaries(rule, T0) == await separate.summaries(rule, T0)
    assert _alert_view(await grouped.pending_alerts(100)) == _alert_view(await separate.pending_alerts(100))
