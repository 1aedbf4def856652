"""Event Hubs checkpoints and partition ownership in the real Azurite, with the real SDK on the test endpoint.

* Two ``EventHubConsumerClient`` in one consumer group with one ``BlobCheckpointStore`` container split the
  partitions between them (one receive link per partition); when one stops, the other takes everything.
* The checkpoint follows the loop's commit order: while an alert waits for delivery nothing is checkpointed,
  a restart then reads the batch again from the previous checkpoint, and a restart after the commit resumes
  after it.
* (A partition lost to another consumer gets no checkpoint from the batch its old owner still held: a clause of
  the source contract, tests/contract/test_source_contract.py.)
* ``--eventhub-checkpoint-api-version`` is passed to the blob client, and one the SDK does not know is refused.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable, Iterator, Sequence
from functools import partial

import orjson
import pytest
from azure.eventhub import EventData
from azure.eventhub.aio import EventHubConsumerClient, PartitionContext
from azure.eventhub.extensions.checkpointstoreblobaio import BlobCheckpointStore

from rmmwatch.alerts import Alert
from rmmwatch.app import App
from rmmwatch.config import ConfigError
from rmmwatch.events import Detector
from rmmwatch.metrics import Metrics
from rmmwatch.sinks.base import SinkError
from rmmwatch.sinks.deadletter import LogOnlyDeadLetters
from rmmwatch.sources.eventhub import EventHubSource
from rmmwatch.stores.memory import MemoryStore
from tests.eventhub_endpoint.server import EventHubEndpoint
from tests.helpers import envelope, row, seed_rule, service_env
from tests.integration.eventhub_tools import (
    GROUP,
    append_round_robin,
    checkpoints,
    container_name,
    owners,
    settings,
)

RULE = seed_rule()
EXPIRY_S = 4.0


@pytest.fixture
def azurite() -> str:
    return service_env("RMMWATCH_TEST_AZURITE_CONNECTION_STRING")


@pytest.fixture
def endpoint() -> Iterator[EventHubEndpoint]:
    with EventHubEndpoint(hub="defender", partitions=4) as running:
        yield running


async def _until(predicate: Callable[[], object], timeout_s: float, what: str) -> None:
    """Poll ``predicate()`` (a plain or an async function) until it is true."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = predicate()
        if await result if inspect.isawaitable(result) else result:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


async def test_two_consumers_split_the_partitions_and_one_takes_over(endpoint: EventHubEndpoint, azurite: str) -> None:
    """Same group, same checkpoint container: 2 + 2 partitions, one link each; one stops, the other owns all 4."""
    container = container_name()
    async with BlobCheckpointStore.from_connection_string(azurite, container) as store:
        await store._container_client.create_container()
    seen: dict[str, dict[str, list[int]]] = {"a": {}, "b": {}}

    async def on_batch(name: str, context: PartitionContext, events: list[EventData]) -> None:
        seen[name].setdefault(context.partition_id, []).extend(orjson.loads(b"".join(e.body))["n"] for e in events)

    stores = [BlobCheckpointStore.from_connection_string(azurite, container) for _ in range(2)]
    a, b = (
        EventHubConsumerClient.from_connection_string(
            endpoint.connection_string,
            GROUP,
            checkpoint_store=store,
            load_balancing_interval=1,
            partition_ownership_expiration_interval=EXPIRY_S,
        )
        for store in stores
    )
    receiving = [
        asyncio.create_task(c.receive_batch(partial(on_batch, name), starting_position="-1"))
        for name, c in (("a", a), ("b", b))
    ]
    last_split: list[dict[str, str]] = []

    async def split() -> bool:
        """2 + 2 partitions, one link each, and the same owners as one poll earlier (a handover has finished)."""
        owned = await owners(azurite, container, endpoint, EXPIRY_S)
        per_owner = sorted(list(owned.values()).count(o) for o in set(owned.values()))
        links = [len(endpoint.receivers(p, GROUP)) for p in endpoint.partition_ids]
        stable = last_split == [owned]
        last_split[:] = [owned]
        await asyncio.sleep(1.0)
        return stable and len(owned) == 4 and per_owner == [2, 2] and links == [1, 1, 1, 1]

    try:
        await _until(split, 40, "the partitions to be split 2 + 2, stably")
        append_round_robin(endpoint, [orjson.dumps({"n": i}) for i in range(40)])

        async def all_seen() -> bool:
            return sum(len(v) for side in seen.values() for v in side.values()) >= 40

        await _until(all_seen, 20, "the first 40 events")
        assert len(seen["a"]) == len(seen["b"]) == 2 and not set(seen["a"]) & set(seen["b"])
        assert sorted(n for side in seen.values() for v in side.values() for n in v) == list(range(40))
        await a.close()
        await receiving[0]

        async def taken_over() -> bool:
            owned = await owners(azurite, container, endpoint, EXPIRY_S)
            return len(owned) == 4 and len(set(owned.values())) == 1

        await _until(taken_over, 30, "the remaining consumer to own all 4 partitions")
        append_round_robin(endpoint, [orjson.dumps({"n": i}) for i in range(40, 80)])

        async def rest_seen() -> bool:
            return {n for v in seen["b"].values() for n in v} >= set(range(40, 80))

        await _until(rest_seen, 20, "the next 40 events at the remaining consumer")
        assert sorted(seen["b"]) == ["0", "1", "2", "3"]
    finally:
        await asyncio.gather(a.close(), b.close())
        for task in receiving:
            task.cancel()
        await asyncio.gather(*receiving, return_exceptions=True)
        await asyncio.gather(*(store.close() for store in stores))


class _Sink:
    """Records alerts; fails while ``down``."""

    name = "recording"

    def __init__(self, down: bool) -> None:
        self.down = down
        self.attempts = 0
        self.sent: list[Alert] = []

    async def open(self) -> None:
        return None

    async def send(self, alerts: Sequence[Alert]) -> None:
        self.attempts += 1
        if self.down:
            raise SinkError("down")
        self.sent.extend(alerts)

    async def close(self) -> None:
        return None


def _app(source: EventHubSource, sink: _Sink, metrics: Metrics) -> App:
    return App(
        rules=[RULE],
        source=source,
        store=MemoryStore([RULE]),
        sinks=[sink],
        dead_letters=LogOnlyDeadLetters(),
        metrics=metrics,
        detector=Detector([RULE]),
        metrics_port=-1,
        tick_interval_s=0.1,
        shutdown_timeout_s=1.0,
    )


async def test_checkpoint_only_after_delivery_and_restarts_read_from_the_last_one(
    endpoint: EventHubEndpoint, azurite: str
) -> None:
    """The loop's commit order on Event Hubs: state durable and alert delivered, then the checkpoint."""
    container = container_name()
    same = settings(endpoint, azurite, container)
    now = time.time_ns() // 100
    endpoint.append("0", envelope(row(device="a", ticks=now)))

    # 1. The sink is down: the alert waits in the outbox, and nothing is checkpointed.
    down = _Sink(down=True)
    app = _app(EventHubSource(same), down, Metrics())
    app.delivery.backoff.first_s = 0.05  # retry delivery quickly
    running = asyncio.create_task(app.run())
    try:
        await _until(lambda: down.attempts >= 3, 30, "delivery attempts")
        assert await checkpoints(azurite, container, endpoint) == {}
    finally:
        app.stop()
        assert await running == 1, "stopped with an undelivered alert"
    assert await checkpoints(azurite, container, endpoint) == {}

    # 2. Restart with a working sink: the event is read again (nothing was checkpointed), alerted, checkpointed.
    up = _Sink(down=False)
    app = _app(EventHubSource(same), up, Metrics())
    running = asyncio.create_task(app.run())
    try:

        async def checkpointed() -> bool:
            return await checkpoints(azurite, container, endpoint) == {"0": 0}

        await _until(checkpointed, 30, "the checkpoint after delivery")
        assert [a.document()["group"]["DeviceId"] for a in up.sent] == ["a"]
    finally:
        app.stop()
        assert await running == 0

    # 3. Restart after the checkpoint: only what came after it.
    endpoint.append("0", envelope(row(device="b", ticks=now)))
    after = _Sink(down=False)
    metrics = Metrics()
    app = _app(EventHubSource(same), after, metrics)
    running = asyncio.create_task(app.run())
    try:

        async def moved() -> bool:
            return await checkpoints(azurite, container, endpoint) == {"0": 1}

        await _until(moved, 30, "the next checkpoint")
    finally:
        app.stop()
        assert await running == 0
    assert [a.document()["group"]["DeviceId"] for a in after.sent] == ["b"]
    assert metrics.registry.get_sample_value("rmmwatch_messages_total", {"source": "eventhub"}) == 1


async def test_checkpoint_api_version_is_pinned_or_refused(endpoint: EventHubEndpoint, azurite: str) -> None:
    """A version the SDK's blob client knows is used for every checkpoint call; an unknown one is a clear error."""
    container = container_name()
    endpoint.append("2", b"{}")
    source = EventHubSource(settings(endpoint, azurite, container, checkpoint_api_version="2025-01-05"))
    await source.start()
    try:
        batch = None
        while batch is None:
            batch = await source.fetch(1.0)
        await source.commit(batch.position)
    finally:
        await source.close()
    assert await checkpoints(azurite, container, endpoint) == {"2": 0}
    with pytest.raises(ConfigError, match="Unsupported API version '2025-11-05'"):
        EventHubSource(settings(endpoint, azurite, container, checkpoint_api_version="2025-11-05"))
