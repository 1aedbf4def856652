"""The source contract for the Kafka sources on a real broker, and their rebalance behaviour.

Every test runs against both clients (``--kafka-client``): aiokafka and librdkafka (confluent).

Same clauses as tests/contract/test_source_contract.py: every message once, in order per
partition; None when idle; resume after the committed position. Plus what only a group
has: a revoked partition waits for the batch already handed out to be committed, so a
clean rebalance re-delivers nothing, and commits never move offsets backwards.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

import orjson
import pytest

from rmmwatch.kafka_client import KafkaSettings
from rmmwatch.sources.base import Batch
from rmmwatch.sources.kafka import KafkaSource
from rmmwatch.sources.kafka_confluent import ConfluentKafkaSource
from tests.integration.kafka_tools import committed_offsets, create_topic, produce

AnyKafkaSource = KafkaSource | ConfluentKafkaSource
CLIENTS = {"aiokafka": KafkaSource, "confluent": ConfluentKafkaSource}


@pytest.fixture(params=sorted(CLIENTS))
def client(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _source(client: str, bootstrap: str, topic: str, group: str, **kw: object) -> AnyKafkaSource:
    return CLIENTS[client](  # type: ignore[no-any-return]
        KafkaSettings(bootstrap_servers=bootstrap, session_timeout_ms=6000),
        [topic],
        group_id=group,
        max_messages=kw.pop("max_messages", 50),
        **kw,
    )


def _numbers(batch: Batch) -> list[int]:
    return [orjson.loads(m)["n"] for m in batch.messages]


async def _drain(source: AnyKafkaSource, idle_rounds: int = 3) -> list[Batch]:
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


async def test_every_message_once_in_partition_order(client: str, kafka_bootstrap: str, topic_name: str) -> None:
    """A new group reads everything from earliest; per partition, offsets are consecutive."""
    await create_topic(kafka_bootstrap, topic_name, 3)
    await produce(kafka_bootstrap, topic_name, [orjson.dumps({"n": i}) for i in range(300)], 3)
    source = _source(client, kafka_bootstrap, topic_name, f"g-{topic_name}")
    await source.start()
    try:
        batches = await _drain(source)
    finally:
        await source.close()
    numbers = sorted(n for b in batches for n in _numbers(b))
    assert numbers == list(range(300))
    offsets: dict[int, list[int]] = defaultdict(list)
    for batch in batches:
        for i in range(len(batch.messages)):
            origin = batch.locate(i)
            offsets[origin["partition"]].append(origin["offset"])
    assert all(v == list(range(len(v))) for v in offsets.values())
    assert max(len(b.messages) for b in batches) <= 50


async def test_idle_fetch_returns_none_and_ready_reflects_assignment(
    client: str, kafka_bootstrap: str, topic_name: str
) -> None:
    """An empty topic: fetch returns None within its timeout; the source is ready once assigned."""
    await create_topic(kafka_bootstrap, topic_name, 1)
    source = _source(client, kafka_bootstrap, topic_name, f"g-{topic_name}")
    assert source.ready()[0] is False
    await source.start()
    try:
        for _ in range(40):
            if source.ready()[0]:
                break
            await source.fetch(0.1)
        assert source.ready() == (True, "1 partition(s) assigned")
        assert await source.fetch(0.2) is None
    finally:
        await source.close()


async def test_restart_resumes_after_the_committed_position(client: str, kafka_bootstrap: str, topic_name: str) -> None:
    """Commit the first batches, close, start again in the same group: the rest, not the committed part."""
    await create_topic(kafka_bootstrap, topic_name, 1)
    await produce(kafka_bootstrap, topic_name, [orjson.dumps({"n": i}) for i in range(100)], 1)
    group = f"g-{topic_name}"
    first = _source(client, kafka_bootstrap, topic_name, group, max_messages=30)
    await first.start()
    seen: list[int] = []
    try:
        while len(seen) < 60:
            batch = await first.fetch(1.0)
            if batch is not None:
                seen += _numbers(batch)
                if len(seen) <= 30:
                    await first.commit(batch.position)
    finally:
        await first.close()
    second = _source(client, kafka_bootstrap, topic_name, group, max_messages=30)
    await second.start()
    try:
        rest = [n for b in await _drain(second) for n in _numbers(b)]
    finally:
        await second.close()
    assert rest == list(range(30, 100))


async def test_clean_rebalance_waits_for_the_in_flight_batch(
    client: str, kafka_bootstrap: str, topic_name: str
) -> None:
    """A second member joins while the first holds uncommitted batches: the revoke waits for their
    commit, and the new owner starts after it (nothing delivered twice, nothing skipped).

    Both members keep fetching, as the loop does (librdkafka runs the rebalance inside a fetch)."""
    await create_topic(kafka_bootstrap, topic_name, 2)
    await produce(kafka_bootstrap, topic_name, [orjson.dumps({"n": i}) for i in range(200)], 2)
    group = f"g-{topic_name}"
    a = _source(client, kafka_bootstrap, topic_name, group, max_messages=40, rebalance_wait_s=15)
    b = _source(client, kafka_bootstrap, topic_name, group, max_messages=40, rebalance_wait_s=15)
    held: list[Batch] = []
    got_b: list[Batch] = []
    stop = asyncio.Event()

    async def keep_fetching(source: AnyKafkaSource, into: list[Batch]) -> None:
        while not stop.is_set():
            batch = await source.fetch(0.2)
            if batch is not None:
                into.append(batch)

    async def join_b() -> None:
        await b.start()
        await keep_fetching(b, got_b)

    await a.start()
    try:
        while not held:
            batch = await a.fetch(1.0)
            if batch is not None:
                held.append(batch)
        fetching_a = asyncio.create_task(keep_fetching(a, held))
        joining = asyncio.create_task(join_b())
        await asyncio.sleep(3.0)
        assert not got_b and not b.ready()[0], "the rebalance waits for the revoked batches"
        for batch in list(held):  # the loop finished these batches: state durable, alerts delivered
            await a.commit(batch.position)
        for _ in range(150):
            if b.ready()[0] and got_b:
                break
            await asyncio.sleep(0.1)
        assert b.ready()[0], "the new member got its partitions once the batches were committed"
        for _ in range(40):  # until both have read everything
            await asyncio.sleep(0.25)
            if sum(len(x.messages) for x in held + got_b) >= 200:
                break
        stop.set()
        await asyncio.gather(fetching_a, joining)
        for batch in held:
            await a.commit(batch.position)
        for batch in got_b:
            await b.commit(batch.position)
    finally:
        stop.set()
        await asyncio.gather(a.close(), b.close())
    everything = [n for x in held + got_b for n in _numbers(x)]
    assert sorted(everything) == list(range(200)), "each message exactly once across the rebalance"


async def test_commit_never_moves_backwards(client: str, kafka_bootstrap: str, topic_name: str) -> None:
    """A late commit of an older position is ignored."""
    await create_topic(kafka_bootstrap, topic_name, 1)
    await produce(kafka_bootstrap, topic_name, [orjson.dumps({"n": i}) for i in range(60)], 1)
    group = f"g-{topic_name}"
    source = _source(client, kafka_bootstrap, topic_name, group, max_messages=20)
    await source.start()
    try:
        batches: list[Batch] = []
        while len(batches) < 2:
            batch = await source.fetch(1.0)
            if batch is not None:
                batches.append(batch)
        await source.commit(batches[1].position)
        await source.commit(batches[0].position)
        assert await committed_offsets(kafka_bootstrap, group) == {(topic_name, 0): 40}
    finally:
        await source.close()


async def test_a_partition_missing_from_the_newest_batch_is_still_committed(
    client: str, kafka_bootstrap: str, topic_name: str
) -> None:
    """Positions are cumulative: committing a batch of partition 1 also commits what was read of partition 0."""
    await create_topic(kafka_bootstrap, topic_name, 2)
    group = f"g-{topic_name}"
    source = _source(client, kafka_bootstrap, topic_name, group, max_messages=100)
    await source.start()
    try:
        await produce_to(kafka_bootstrap, topic_name, 0, 15)
        first = await _drain(source)
        await produce_to(kafka_bootstrap, topic_name, 1, 10)
        second = await _drain(source)
        assert first and second
        assert {b.locate(0)["partition"] for b in second} == {1}, "the newest batches hold partition 1 only"
        await source.commit(second[-1].position)
        committed = await committed_offsets(kafka_bootstrap, group)
    finally:
        await source.close()
    assert committed == {(topic_name, 0): 15, (topic_name, 1): 10}


async def test_pause_stops_delivery_and_resume_continues(client: str, kafka_bootstrap: str, topic_name: str) -> None:
    """Paused (backpressure): fetch returns None while messages wait, the membership stays; resumed: every
    message is delivered, none lost or repeated."""
    await create_topic(kafka_bootstrap, topic_name, 2)
    source = _source(client, kafka_bootstrap, topic_name, f"g-{topic_name}")
    await source.start()
    try:
        for _ in range(60):
            if source.ready()[0]:
                break
            assert await source.fetch(0.1) is None
        assert source.ready()[0]
        source.pause()
        await produce(kafka_bootstrap, topic_name, [orjson.dumps({"n": i}) for i in range(120)], 2)
        for _ in range(6):
            assert await source.fetch(0.25) is None
        assert source.ready()[0], "still a member of the group while paused"
        source.resume()
        numbers = [n for b in await _drain(source) for n in _numbers(b)]
    finally:
        await source.close()
    assert sorted(numbers) == list(range(120))


async def produce_to(bootstrap: str, topic: str, partition: int, count: int) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for i in range(count):
            await producer.send_and_wait(topic, orjson.dumps({"n": i}), partition=partition)
    finally:
        await producer.stop()
