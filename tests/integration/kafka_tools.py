"""Small Kafka helpers for the integration tests (real broker, aiokafka)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError


async def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    except TopicAlreadyExistsError:
        pass
    finally:
        await admin.close()
    # Wait until the brokers serve metadata for every partition of the new topic.
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if len(await producer.partitions_for(name)) == partitions:
                return
            await asyncio.sleep(0.2)
    finally:
        await producer.stop()
    raise AssertionError(f"topic {name} did not appear with {partitions} partitions")


async def produce(bootstrap: str, topic: str, values: Sequence[bytes], partitions: int, **options: Any) -> None:
    """Spread ``values`` round-robin over the partitions, acks=all."""
    await _send(bootstrap, topic, [(i % partitions, value) for i, value in enumerate(values)], **options)


async def produce_to(bootstrap: str, topic: str, partition: int, values: Sequence[bytes]) -> None:
    """Every one of ``values`` to one partition, in order, acks=all."""
    await _send(bootstrap, topic, [(partition, value) for value in values])


async def _send(bootstrap: str, topic: str, records: Sequence[tuple[int, bytes]], **options: Any) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_request_size=4_000_000, **options
    )
    await producer.start()
    try:
        futures = [await producer.send(topic, value, partition=partition) for partition, value in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def read_all(bootstrap: str, topic: str, expect_at_least: int = 0, timeout_s: float = 30) -> list[Any]:
    """Every record of ``topic`` from the beginning (waiting for ``expect_at_least``)."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    records: list[Any] = []
    try:
        deadline = time.monotonic() + timeout_s
        idle_rounds = 0
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            got = [r for rs in batch.values() for r in rs]
            records.extend(got)
            if not got:
                idle_rounds += 1
                if len(records) >= expect_at_least and idle_rounds >= 2:
                    break
            else:
                idle_rounds = 0
    finally:
        await consumer.stop()
    return records


async def committed_offsets(bootstrap: str, group: str) -> dict[tuple[str, int], int]:
    """A group's committed offset of every partition it committed, as the broker has them."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items() if meta.offset >= 0}


async def committed_total(bootstrap: str, group: str, topic: str, partitions: int) -> int:
    """The sum of a group's committed offsets over a topic's partitions."""
    offsets = await committed_offsets(bootstrap, group)
    return sum(offset for (name, partition), offset in offsets.items() if name == topic and partition < partitions)


def partitions_of(topic: str, count: int) -> list[TopicPartition]:
    return [TopicPartition(topic, p) for p in range(count)]
