"""The parity contract, by property: any order, any batching, any duplicates, any clock.

For a random set of distinct events (several devices, timestamps around the window's
edges, matching and non-matching company names, excluded command lines), delivered in a
random order with random duplicates, split into random batches applied at non-decreasing
clock times with random ticks in between (and a last tick), the store's rows at the final instant equal the
hunting query's rows over the distinct events (rmmwatch's ``hunt``, which is
``window.summarize``). Every group with rows has exactly one open episode and exactly one
``new`` alert per episode.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rmmwatch.events import Detector
from rmmwatch.hunt import rule_rows
from rmmwatch.rules import load_rules
from rmmwatch.stores import open_store
from tests.helpers import DAY, MINUTE, T0, WINDOW, row, service_env

RULE = load_rules(["bundled:netsupport"])[0]  # the bundled rule: the seed query plus its exclusions

COMPANIES = ["NetSupport Ltd", "NETSUPPORT LTD.", "netsupport_ltd", "NetSupportLtd", "Microsoft Corporation"]
COMMANDS = ['"client32.exe" ', "client32.exe /report", "client32.exe /I"]
EDGES = [0, 1, -1, -WINDOW, -WINDOW - 1, -WINDOW + 1, 10 * MINUTE, -6 * DAY]

event_specs = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c"]),  # device
        st.one_of(st.sampled_from(EDGES), st.integers(-6 * DAY, DAY)),  # offset from the first clock time
        st.integers(1, 4),  # ReportId (a repeating counter: collisions across timestamps are allowed)
        st.sampled_from(COMPANIES),
        st.sampled_from(COMMANDS),
    ),
    min_size=1,
    max_size=25,
    unique_by=lambda spec: (spec[0], spec[1], spec[2]),  # event identity: device, Timestamp, ReportId
)


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[list[int]], list[int], list[int]]:
    """Events; delivery batches (indices into events, with duplicates); clock per batch; ticks."""
    specs = draw(event_specs)
    events = [
        row(device=d, ticks=T0 + offset, report=report, company=company, command=command)
        for d, offset, report, company, command in specs
    ]
    order = draw(st.permutations(range(len(events))))
    extra = draw(st.lists(st.sampled_from(range(len(events))), max_size=10))
    sequence = list(order) + extra
    sequence = draw(st.permutations(sequence))
    cuts = sorted(draw(st.lists(st.integers(0, len(sequence)), max_size=5)))
    batches = [sequence[a:b] for a, b in zip([0, *cuts], [*cuts, len(sequence)], strict=True)]
    steps = draw(st.lists(st.integers(0, 2 * DAY), min_size=len(batches), max_size=len(batches)))
    clock, times = T0, []
    for step in steps:
        clock += step
        times.append(clock)
    ticks = draw(st.lists(st.integers(0, 3 * DAY), max_size=3))
    return events, batches, times, ticks


async def _check(kind: str, path: Path, case: tuple[Any, ...]) -> None:
    events, batches, times, tick_steps = case
    detector = Detector([RULE])
    if kind == "redis":
        store = open_store(service_env("RMMWATCH_TEST_REDIS_URL"), [RULE], redis={"prefix": uuid.uuid4().hex})
    else:
        store = open_store("memory" if kind == "memory" else f"sqlite:{path}", [RULE], sqlite_synchronous="normal")
    await store.open()
    try:
        news: list[str] = []
        for batch, now in zip(batches, times, strict=True):
            messages = [orjson.dumps({"records": [{"properties": events[i]}]}) for i in batch]
            result = detector.process(messages)
            applied = await store.apply(result.matches, now)
            news += [a.alert_id for a in applied.alerts if a.kind == "new"]
        end = times[-1]
        # The service ticks every second; a store may leave groups no batch touched to the tick.
        for step in [*tick_steps, 0]:
            end += step
            ticked = await store.tick(end)
            news += [a.alert_id for a in ticked.alerts if a.kind == "new"]
        everything = detector.process([orjson.dumps(e) for e in events])
        expected = rule_rows(RULE, everything.matches, end)
        assert await store.summaries(RULE, end) == expected
        assert len(news) == len(set(news)), "one 'new' alert per episode"
        alerted_groups = {tuple(a.document()["group"].values()) for a in await store.pending_alerts(10_000)}
        for current in expected:
            assert (current["DeviceId"], current["DeviceName"]) in alerted_groups
    finally:
        await store.close()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=deliveries())
async def test_memory_store_equals_hunt(case: tuple[Any, ...]) -> None:
    """Memory store: rows at the end equal the KQL rows over the distinct events."""
    await _check("memory", Path("unused"), case)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=deliveries())
async def test_sqlite_store_equals_hunt(case: tuple[Any, ...], tmp_path_factory: Any) -> None:
    """SQLite store: the same property, through real SQL and transactions."""
    path = tmp_path_factory.mktemp("parity") / "state.db"
    await _check("sqlite", path, case)


@pytest.mark.integration
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=deliveries())
async def test_redis_store_equals_hunt(case: tuple[Any, ...]) -> None:
    """Redis store: the same property, through the Lua state machine on a real redis-server."""
    await _check("redis", Path("unused"), case)
