"""The parity contract, by property: any order, any batching, any duplicates, any clock.

For a random set of distinct events (several devices, timestamps around the window's
edges, matching and non-matching company names, excluded command lines), delivered in a
random order with random duplicates, split into random batches applied at non-decreasing
clock times with random ticks in between (and a last tick), the store's rows at the final instant equal the
hunting query's rows over the distinct events (rmmwatch's ``hunt``, which is
``window.summarize``). Every group with rows has exactly one open episode and exactly one
``new`` alert per episode.

The same holds over the three tables at once: a process, a network and a certificate rule (in the
published pack's shapes, with aggregates over each table's own columns) loaded together in one
detector and one store, fed records of the three tables interleaved in the same messages: each
rule's rows equal its query's rows over the distinct events of its own table.
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
from rmmwatch.rules import Rule, load_rules
from rmmwatch.stores import open_store
from tests.helpers import (
    CERTIFICATE,
    DAY,
    MINUTE,
    NETWORK,
    PROCESS,
    T0,
    WINDOW,
    certificate_row,
    network_row,
    row,
    rule,
    service_env,
)

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


async def _check(kind: str, path: Path, case: tuple[Any, ...], rules: list[Rule] | None = None) -> None:
    events, batches, times, tick_steps = case
    rules = [RULE] if rules is None else rules
    detector = Detector(rules)
    if kind == "redis":
        store = open_store(service_env("RMMWATCH_TEST_REDIS_URL"), rules, redis={"prefix": uuid.uuid4().hex})
    else:
        store = open_store("memory" if kind == "memory" else f"sqlite:{path}", rules, sqlite_synchronous="normal")
    await store.open()
    try:
        news: list[str] = []
        for batch, now in zip(batches, times, strict=True):
            messages = [_message(events[i]) for i in batch]
            result = detector.process(messages)
            assert result.problems == []
            applied = await store.apply(result.matches, now)
            news += [a.alert_id for a in applied.alerts if a.kind == "new"]
        end = times[-1]
        # The service ticks every second; a store may leave groups no batch touched to the tick.
        for step in [*tick_steps, 0]:
            end += step
            ticked = await store.tick(end)
            news += [a.alert_id for a in ticked.alerts if a.kind == "new"]
        everything = detector.process([_message(e) for e in events])
        assert len(news) == len(set(news)), "one 'new' alert per episode"
        pending = [a.document() for a in await store.pending_alerts(10_000)]
        for one in rules:
            expected = rule_rows(one, [m for m in everything.matches if m.rule is one], end)
            assert await store.summaries(one, end) == expected, one.id
            alerted_groups = {tuple(d["group"].values()) for d in pending if d["rule"]["id"] == one.id}
            for current in expected:
                assert tuple(current[c] for c in one.query.group_by) in alerted_groups
    finally:
        await store.close()


def _message(event: dict[str, Any] | tuple[str, dict[str, Any]]) -> bytes:
    """A process row alone (as the single-rule property sends it), or one (category, row) record."""
    if isinstance(event, tuple):
        category, properties = event
        return orjson.dumps({"records": [{"category": category, "properties": properties}]})
    return orjson.dumps({"records": [{"properties": event}]})


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


# -- three tables at once --------------------------------------------------------------------------------

THREE = [
    RULE,
    rule(
        "DeviceNetworkEvents\n"
        "| where Timestamp > ago(5d)\n"
        "| where RemoteUrl has_any ('anydesk.com', 'api.playanext.com')\n"
        "    and InitiatingProcessVersionInfoCompanyName has 'anydesk'\n"
        "| summarize FirstSeen=min(Timestamp), LastSeen=max(Timestamp), Report=make_set(ReportId), Count=count(),\n"
        "    Ports=make_set(RemotePort), HighPort=max(RemotePort) by DeviceId, DeviceName, RemoteUrl",
        "anydesk-netconn",
    ),
    rule(
        "DeviceFileCertificateInfo\n"
        "| where Timestamp between (ago(5d) .. now())\n"
        "| where Signer has_any ('AnyDesk Software', 'philandro Software')\n"
        "| summarize FirstSeen=min(Timestamp), Count=count(), Untrusted=countif(IsTrusted == false),\n"
        "    Files=dcount(SHA1) by DeviceId, DeviceName, Signer",
        "anydesk-filesig",
    ),
]
URLS = ["relay-1.net.anydesk.com", "ANYDESK.COM", "anydesk.com.evil.example", "myanydesk.com", "api.playanext.com"]
NETWORK_COMPANIES = ["AnyDesk Software GmbH", "ANYDESK SOFTWARE GMBH", "Google LLC"]
SIGNERS = ["AnyDesk Software GmbH", "philandro Software GmbH", "AnyDeskSoft Ltd", "Microsoft Windows", ""]

three_table_specs = st.lists(
    st.tuples(
        st.sampled_from([PROCESS, NETWORK, CERTIFICATE]),
        st.sampled_from(["a", "b", "c"]),  # device
        st.one_of(st.sampled_from(EDGES), st.integers(-6 * DAY, DAY)),
        st.integers(1, 4),  # ReportId
        st.integers(0, 4),  # which value of the table's lists
        st.integers(0, 2),  # which network company
        st.sampled_from([None, 443, 6568, 80]),  # RemotePort
        st.sampled_from([None, True, False]),  # IsTrusted
    ),
    min_size=1,
    max_size=25,
    unique_by=lambda spec: (spec[0], spec[1], spec[2], spec[3]),  # identity, per table
)


def _three_table_event(spec: tuple[Any, ...]) -> tuple[str, dict[str, Any]]:
    category, device, offset, report, pick, company, port, trusted = spec
    ticks = T0 + offset
    if category == PROCESS:
        return category, row(device=device, ticks=ticks, report=report, company=COMPANIES[pick],
                             command=COMMANDS[pick % len(COMMANDS)])  # fmt: skip
    if category == NETWORK:
        return category, network_row(device=device, ticks=ticks, report=report, url=URLS[pick],
                                     company=NETWORK_COMPANIES[company], RemotePort=port)  # fmt: skip
    return category, certificate_row(device=device, ticks=ticks, report=report, signer=SIGNERS[pick],
                                     trusted=trusted, SHA1=f"{pick % 2:040x}")  # fmt: skip


@st.composite
def three_table_deliveries(draw: st.DrawFn) -> tuple[list[Any], list[list[int]], list[int], list[int]]:
    """As deliveries(), with events of the three tables."""
    events = [_three_table_event(spec) for spec in draw(three_table_specs)]
    order = draw(st.permutations(range(len(events))))
    extra = draw(st.lists(st.sampled_from(range(len(events))), max_size=10))
    sequence = draw(st.permutations(list(order) + extra))
    cuts = sorted(draw(st.lists(st.integers(0, len(sequence)), max_size=5)))
    batches = [sequence[a:b] for a, b in zip([0, *cuts], [*cuts, len(sequence)], strict=True)]
    steps = draw(st.lists(st.integers(0, 2 * DAY), min_size=len(batches), max_size=len(batches)))
    clock, times = T0, []
    for step in steps:
        clock += step
        times.append(clock)
    ticks = draw(st.lists(st.integers(0, 3 * DAY), max_size=3))
    return events, batches, times, ticks


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=three_table_deliveries())
async def test_memory_store_equals_hunt_over_three_tables(case: tuple[Any, ...]) -> None:
    """Memory store, a rule per table loaded together: each rule's rows equal its KQL rows."""
    await _check("memory", Path("unused"), case, THREE)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=three_table_deliveries())
async def test_sqlite_store_equals_hunt_over_three_tables(case: tuple[Any, ...], tmp_path_factory: Any) -> None:
    """SQLite store: the same property over the three tables, through real SQL."""
    await _check("sqlite", tmp_path_factory.mktemp("parity3") / "state.db", case, THREE)


@pytest.mark.integration
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=three_table_deliveries())
async def test_redis_store_equals_hunt_over_three_tables(case: tuple[Any, ...]) -> None:
    """Redis store: the same property over the three tables, through the Lua state machine."""
    await _check("redis", Path("unused"), case, THREE)
