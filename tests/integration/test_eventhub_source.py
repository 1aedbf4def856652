"""The source contract for the Event Hubs (AMQP) source, with the real SDK against the test AMQP endpoint.

Same clauses as tests/contract/test_source_contract.py and the Kafka source's suite: every message once, in
order per partition, in batches no larger than asked; None when idle; ready once partitions are owned; resume
after the committed position (checkpoints in the real Azurite); commits never move a checkpoint backwards;
pause() stops delivery and resume() continues. Plus what only this source has: event bodies as the raw bytes
a producer sent, and readiness that follows the SDK's receive errors.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime

import orjson
import pytest
from azure.eventhub import EventData
from azure.eventhub.aio import EventHubProducerClient
from azure.eventhub.amqp import AmqpAnnotatedMessage

from rmmwatch.sources.base import Batch
from rmmwatch.sources.eventhub import EventHubSource
from tests.eventhub_endpoint.server import EventHubEndpoint
from tests.helpers import service_env
from tests.integration.eventhub_tools import append_round_robin, checkpoints, container_name, settings


@pytest.fixture
def endpoint() -> Iterator[EventHubEndpoint]:
    with EventHubEndpoint(hub="defender", partitions=3) as running:
        yield running


@pytest.fixture
def azurite() -> str:
    return service_env("RMMWATCH_TEST_AZURITE_CONNECTION_STRING")


def _numbers(batch: Batch) -> list[int]:
    return [orjson.loads(m)["n"] for m in batch.messages]


async def _drain(source: EventHubSource, idle_rounds: int = 4) -> list[Batch]:
    batches: list[Batch] = []
    idle = 0
    while idle < idle_rounds:
        batch = await source.fetch(0.5)
        if batch is None:
            idle += 1
            continue
        idle = 0
        batches.append(batch)
    return batches


async def test_every_message_once_in_partition_order(endpoint: EventHubEndpoint) -> None:
    """Every partition from the start: each message once, sequence numbers consecutive, batches <= max."""
    append_round_robin(endpoint, [orjson.dumps({"n": i}) for i in range(300)])
    source = EventHubSource(settings(endpoint, None, "unused"), max_messages=40)
    await source.start()
    try:
        batches = await _drain(source)
    finally:
        await source.close()
    assert sorted(n for b in batches for n in _numbers(b)) == list(range(300))
    sequences: dict[str, list[int]] = defaultdict(list)
    for batch in batches:
        for i in range(len(batch.messages)):
            origin = batch.locate(i)
            assert origin["source"] == "eventhub"
            assert isinstance(origin["offset"], str)
            sequences[origin["partition"]].append(origin["sequence_number"])
    assert sorted(sequences) == ["0", "1", "2"]
    assert all(v == list(range(len(v))) for v in sequences.values())
    assert max(len(b.messages) for b in batches) <= 40


async def test_bodies_are_the_raw_bytes_a_producer_sent(endpoint: EventHubEndpoint) -> None:
    """Sent with the SDK's producer: data sections joined byte for byte (not decoded: invalid UTF-8 stays, for
    the decoder to dead-letter), and a value body as its text."""
    async with EventHubProducerClient.from_connection_string(endpoint.connection_string) as producer:
        batch = await producer.create_batch(partition_id="2")
        batch.add(EventData(b'{"n": 1}'))
        batch.add(AmqpAnnotatedMessage(data_body=[b'{"n": "not utf-8 \xff', b'\xfe"}']))
        batch.add(AmqpAnnotatedMessage(value_body='{"n": "a value body"}'))
        await producer.send_batch(batch)
    source = EventHubSource(settings(endpoint, None, "unused"))
    await source.start()
    try:
        messages = [m for b in await _drain(source) for m in b.messages]
    finally:
        await source.close()
    assert messages == [b'{"n": 1}', b'{"n": "not utf-8 \xff\xfe"}', b'{"n": "a value body"}']


async def test_idle_fetch_returns_none_and_ready_reflects_ownership(endpoint: EventHubEndpoint) -> None:
    """An empty hub: fetch returns None within its timeout; ready once partitions are owned, not before."""
    source = EventHubSource(settings(endpoint, None, "unused"))
    assert source.ready() == (False, "not started")
    await source.start()
    try:
        for _ in range(50):
            if source.ready()[0]:
                break
            await source.fetch(0.1)
        assert source.ready() == (True, "3 partition(s) owned")
        started = asyncio.get_running_loop().time()
        assert await source.fetch(0.3) is None
        assert asyncio.get_running_loop().time() - started < 1.0
    finally:
        await source.close()
    assert source.ready()[0] is False


async def test_restart_resumes_after_the_committed_position(endpoint: EventHubEndpoint, azurite: str) -> None:
    """Commit the first batch, read another without committing, close, start again: from after the first batch."""
    same = settings(endpoint, azurite, container_name())
    for i in range(90):
        endpoint.append("0", orjson.dumps({"n": i}))
    first = EventHubSource(same, max_messages=30)
    await first.start()
    try:
        committed = await _next(first)
        await first.commit(committed.position)
        await _next(first)  # read, never committed: must come again
    finally:
        await first.close()
    second = EventHubSource(same, max_messages=30)
    await second.start()
    try:
        rest = [n for b in await _drain(second) for n in _numbers(b)]
    finally:
        await second.close()
    assert rest == list(range(len(committed.messages), 90))


async def _next(source: EventHubSource) -> Batch:
    for _ in range(20):
        batch = await source.fetch(1.0)
        if batch is not None:
            return batch
    raise AssertionError("no batch within 20 s")


async def test_commit_never_moves_backwards(endpoint: EventHubEndpoint, azurite: str) -> None:
    """A late commit of an older position leaves the checkpoint where the newer one put it."""
    container = container_name()
    for i in range(60):
        endpoint.append("1", orjson.dumps({"n": i}))
    source = EventHubSource(settings(endpoint, azurite, container), max_messages=20)
    await source.start()
    try:
        older, newer = await _next(source), await _next(source)
        await source.commit(newer.position)
        await source.commit(older.position)
    finally:
        await source.close()
    assert await checkpoints(azurite, container, endpoint) == {
        "1": newer.locate(len(newer.messages) - 1)["sequence_number"]
    }


async def test_the_newest_position_covers_the_batches_before_it(endpoint: EventHubEndpoint, azurite: str) -> None:
    """The loop commits only the newest position when several wait (an alert held back): it must cover every
    partition handed out before it, not just the partitions of its own batch."""
    container = container_name()
    append_round_robin(endpoint, [orjson.dumps({"n": i}) for i in range(90)])
    source = EventHubSource(settings(endpoint, azurite, container), max_messages=10)
    await source.start()
    try:
        handed_out: dict[str, int] = {}
        while len(handed_out) < 3:
            newest = await _next(source)
            for i in range(len(newest.messages)):
                origin = newest.locate(i)
                handed_out[origin["partition"]] = origin["sequence_number"]
        await source.commit(newest.position)
    finally:
        await source.close()
    assert await checkpoints(azurite, container, endpoint) == handed_out


async def test_pause_stops_delivery_and_resume_continues(endpoint: EventHubEndpoint) -> None:
    """Paused: fetch returns None while events wait; resumed: they are delivered, none lost."""
    source = EventHubSource(settings(endpoint, None, "unused"), max_messages=10, queue_batches=2)
    await source.start()
    try:
        source.pause()
        append_round_robin(endpoint, [orjson.dumps({"n": i}) for i in range(120)])
        for _ in range(4):
            assert await source.fetch(0.25) is None
        source.resume()
        numbers = [n for b in await _drain(source) for n in _numbers(b)]
    finally:
        await source.close()
    assert sorted(numbers) == list(range(120))


async def test_receive_errors_keep_it_unready_until_events_flow() -> None:
    """A consumer group that does not exist: the SDK's error makes the source unready, and keeps it so while the
    SDK retries; once the group exists (created by an operator) and events flow, it is ready again."""
    with EventHubEndpoint(hub="defender", partitions=2, consumer_groups=["$Default"]) as endpoint:
        source = EventHubSource(settings(endpoint, None, "unused", consumer_group="rmmwatch"), probe_interval_s=1)
        await source.start()
        try:
            for _ in range(40):
                if "could not be found" in source.ready()[1]:
                    break
                assert await source.fetch(0.5) is None
            assert source.ready()[0] is False
            assert "consumer group 'rmmwatch' could not be found" in source.ready()[1]
            for _ in range(12):  # the SDK re-creates the links and fails again: no flapping to ready
                await source.fetch(0.5)
                assert source.ready()[0] is False
            # The operator creates the group (the test endpoint then accepts any group name).
            endpoint._call(lambda: setattr(endpoint._broker, "_consumer_groups", None))
            endpoint.append("1", b'{"n": 1}')
            batch = None
            for _ in range(40):
                batch = await source.fetch(0.5)
                if batch is not None:
                    break
            assert batch is not None and batch.messages == [b'{"n": 1}']
            assert source.ready() == (True, "2 partition(s) owned")
        finally:
            await source.close()


@pytest.mark.parametrize("start", ["latest", "time"])
async def test_a_partition_without_checkpoint_starts_where_told(endpoint: EventHubEndpoint, start: str) -> None:
    """--eventhub-start latest skips what is there; a time skips what was enqueued before it."""
    for i in range(20):
        endpoint.append("0", orjson.dumps({"n": i}))
    await asyncio.sleep(1.1)
    cut = datetime.now(UTC).isoformat()
    await asyncio.sleep(0.1)
    if start == "time":
        for i in range(20, 30):
            endpoint.append("0", orjson.dumps({"n": i}))
    source = EventHubSource(settings(endpoint, None, "unused", start="latest" if start == "latest" else cut))
    await source.start()
    try:
        for _ in range(50):
            if source.ready()[0]:
                break
            await source.fetch(0.1)
        await asyncio.sleep(1.0)  # the receive links are attached: "latest" means after this
        if start == "latest":
            for i in range(20, 30):
                endpoint.append("0", orjson.dumps({"n": i}))
        numbers = [n for b in await _drain(source) for n in _numbers(b)]
    finally:
        await source.close()
    assert numbers == list(range(20, 30))
