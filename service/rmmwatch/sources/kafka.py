"""Kafka (and Event Hubs' Kafka endpoint) as a source through aiokafka: the I/O under ``sources/kafka_core.py``.

The semantics (positions, commits, rebalances, start positions, lag, pause) are the core's, documented
there. This adapter creates the ``AIOKafkaConsumer`` (manual commits, 4 MB per partition per fetch), runs
the rebalance listener in the event loop, and maps the core's steps to aiokafka's calls.

A new group's start at a time seeks each partition to ``offsets_for_times``; a partition with no record
that late seeks to its end offset by number: ``seek_to_end()`` inside the rebalance listener is overridden
by ``auto_offset_reset`` (the whole topic was read again from offset 0; the source contract suite's start
test catches it).
"""

from __future__ import annotations

import asyncio
import time
from contextlib import suppress

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.structs import OffsetAndMetadata

from rmmwatch.kafka_settings import describe_error
from rmmwatch.sources.base import Batch
from rmmwatch.sources.kafka_core import KafkaCore, Key, Position, log


def _key(tp: TopicPartition) -> Key:
    return tp.topic, tp.partition


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, source: KafkaSource) -> None:
        self.source = source

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.source._on_revoked({_key(tp) for tp in revoked})

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.source._on_assigned(set(assigned))


class KafkaSource(KafkaCore):
    """A consumer-group member reading raw message values through aiokafka."""

    client = "aiokafka"
    client_errors = (KafkaError,)
    _consumer: AIOKafkaConsumer | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def _connected(self) -> bool:
        return self._consumer is not None

    async def _connect(self) -> None:
        consumer = AIOKafkaConsumer(
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="latest" if self.start_at == "latest" else "earliest",
            max_poll_records=self.max_messages,
            # Defender envelopes are tens of KB: the 1 MB default starves the prefetcher.
            max_partition_fetch_bytes=4194304,
            session_timeout_ms=self.settings.session_timeout_ms,
            heartbeat_interval_ms=max(100, self.settings.session_timeout_ms // 3),
            **self.settings.client_options(),
        )
        consumer.subscribe(self.topics, listener=_Listener(self))
        # Set before start(): the first assignment (and its listener, which seeks) can run inside it.
        self._consumer = consumer
        try:
            await consumer.start()
        except BaseException:
            await self._disconnect()
            raise

    async def _disconnect(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            with suppress(Exception):
                await consumer.stop()

    # -- reading ---------------------------------------------------------------------------
    def _apply_pause(self) -> None:
        consumer = self._consumer
        if consumer is not None:
            (consumer.pause if self._paused else consumer.resume)(*consumer.assignment())

    async def fetch(self, timeout_s: float) -> Batch | None:
        consumer = self._consumer
        if consumer is None:
            return None
        if self._paused:
            consumer.pause(*consumer.assignment())  # partitions assigned since pause() stay paused too
        try:
            data = await consumer.getmany(timeout_ms=max(0, int(timeout_s * 1000)), max_records=self.max_messages)
        except KafkaError as exc:
            self._brokers_ok = False
            log.warning("kafka_fetch_failed", error=describe_error(exc))
            await asyncio.sleep(min(timeout_s, 1.0))
            return None
        if not data:
            return None
        records = [record for partition_records in data.values() for record in partition_records]
        messages = [record.value if record.value is not None else b"" for record in records]
        last = {_key(tp): partition_records[-1].offset + 1 for tp, partition_records in data.items()}

        def origin(index: int) -> tuple[str, int, int]:
            record = records[index]
            return record.topic, record.partition, record.offset

        return self._batch(messages, last, origin)

    # -- committing ------------------------------------------------------------------------
    async def _commit(self, plan: Position) -> None:
        consumer = self._consumer
        assert consumer is not None
        offsets = {TopicPartition(*key): OffsetAndMetadata(mark.value, "") for key, mark in plan.items()}
        try:
            await consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            self._commit_superseded(exc)
            return
        except KafkaError as exc:
            raise self._commit_failed(exc) from None
        self._commit_done(plan)

    # -- rebalances (in the event loop, inside getmany or the coordinator) -----------------
    async def _on_revoked(self, revoked: set[Key]) -> None:
        deadline = time.monotonic() + self.rebalance_wait_s
        # The loop's commits arrive meanwhile, in this event loop; the ledger is I/O-free, so it is polled.
        while not self._settled(revoked, deadline):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        self._forget(revoked)

    async def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        keys = {_key(tp) for tp in assigned}
        self.ledger.assign(keys)
        if self._paused:
            consumer.pause(*assigned)
        committed: dict[Key, int] = {}
        for tp in assigned:
            offset = await consumer.committed(tp)
            if offset is not None:
                committed[_key(tp)] = offset
        unset = [tp for tp in assigned if _key(tp) not in committed]
        if unset and self._start_ms is not None:
            found = await consumer.offsets_for_times(dict.fromkeys(unset, self._start_ms))
            ends = await consumer.end_offsets([tp for tp in unset if found.get(tp) is None])
            for tp in unset:
                hit = found.get(tp)
                consumer.seek(tp, ends[tp] if hit is None else hit.offset)
        self._assigned(keys, committed)

    # -- lag and reachability --------------------------------------------------------------
    async def _end_offsets(self, owned: list[Key]) -> dict[Key, int] | None:
        consumer = self._consumer
        if consumer is None:
            return None
        try:
            ends = await asyncio.wait_for(consumer.end_offsets([TopicPartition(*key) for key in owned]), timeout=10)
        except (KafkaError, TimeoutError) as exc:
            self._reachable(exc)
            return None
        self._reachable(None)
        return {_key(tp): end for tp, end in ends.items()}

    def _partition_count(self, topic: str) -> int:
        consumer = self._consumer
        return len((consumer.partitions_for_topic(topic) if consumer is not None else None) or ())
