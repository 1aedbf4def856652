"""Kafka (and Event Hubs' Kafka endpoint) as a source: one consumer group, manual commits.

* Batches come from ``getmany`` (at most ``max_messages``); a batch's position is, per
  partition handed out so far, the offset after its last record, tagged with the assignment
  generation (cumulative, so committing the newest batch covers every earlier one).
* ``commit`` commits only partitions still assigned in the same generation, and never moves
  a partition's offset backwards; a commit that a rebalance makes stale is dropped (the
  new owner re-reads those records, which the idempotent store absorbs).
* On revoke, the rebalance waits (up to ``rebalance_wait_s``) for the batches already handed
  out to be committed, so a clean rebalance re-delivers nothing; past that it abandons them.
* A new group starts at ``earliest`` (rebuilding the 5-day state from the retained stream),
  ``latest``, or a time (``offsets_for_times``); committed offsets always win.
* A background task measures lag (end offset minus committed offset, per partition) and
  broker reachability every few seconds: readiness is false while unassigned or while the
  brokers do not answer.
* ``pause()`` stops fetching (backpressure) while keeping the group membership alive.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from contextlib import suppress
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.structs import OffsetAndMetadata

from rmmwatch.kafka_client import KafkaSettings, connect_failure, describe_error
from rmmwatch.kql.datetimes import DatetimeError, parse_datetime
from rmmwatch.logging import get_logger
from rmmwatch.metrics import Metrics
from rmmwatch.sources.base import Batch, SourceUnavailable

log = get_logger("rmmwatch.sources.kafka")

Position = dict[TopicPartition, tuple[int, int]]  # partition -> (next offset, generation)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, source: KafkaSource) -> None:
        self.source = source

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.source._on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.source._on_assigned(set(assigned))


class KafkaSource:
    """A consumer-group member reading raw message values."""

    name = "kafka"

    def __init__(
        self,
        settings: KafkaSettings,
        topics: Sequence[str],
        *,
        group_id: str,
        start: str = "earliest",
        max_messages: int = 500,
        rebalance_wait_s: float = 20.0,
        metrics: Metrics | None = None,
        probe_interval_s: float = 5.0,
        exclusive: bool = False,
    ) -> None:
        """``exclusive``: this process must own every partition (its store is not shared)."""
        if not topics:
            raise ValueError("the kafka source needs --kafka-topics (or an EntityPath in the connection string)")
        self.settings = settings
        self.topics = list(topics)
        self.group_id = group_id
        self.start_at = start
        self._start_ms: int | None = None
        if start not in ("earliest", "latest"):
            try:
                self._start_ms = parse_datetime(start) // 10_000
            except DatetimeError:
                raise ValueError(f"--kafka-start: use earliest, latest or an ISO 8601 time, not {start!r}") from None
        self.max_messages = max_messages
        self.rebalance_wait_s = rebalance_wait_s
        self.metrics = metrics
        self.probe_interval_s = probe_interval_s
        self._consumer: AIOKafkaConsumer | None = None
        self._generation: dict[TopicPartition, int] = {}
        self._next_generation = 0
        self._handed_out: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._brokers_ok = False
        self._paused = False
        self._probe: asyncio.Task[None] | None = None
        self.exclusive = exclusive
        self._partial_since: float | None = None
        self._problem: str | None = None

    # -- lifecycle -----------------------------------------------------------------------
    @property
    def exhausted(self) -> bool:
        return False

    def ready(self) -> tuple[bool, str]:
        if self._consumer is None:
            return False, "not started"
        assigned = self._consumer.assignment()
        if not assigned:
            return False, f"no partitions assigned in group {self.group_id!r}"
        if not self._brokers_ok:
            return False, "brokers unreachable"
        return True, f"{len(assigned)} partition(s) assigned"

    async def start(self) -> None:
        options = self.settings.client_options()
        consumer = AIOKafkaConsumer(
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="latest" if self.start_at == "latest" else "earliest",
            max_poll_records=self.max_messages,
            # Defender envelopes are tens of KB: the 1 MB default starves the prefetcher.
            max_partition_fetch_bytes=4194304,
            session_timeout_ms=self.settings.session_timeout_ms,
            heartbeat_interval_ms=max(100, self.settings.session_timeout_ms // 3),
            **options,
        )
        consumer.subscribe(self.topics, listener=_Listener(self))
        # Set before start(): the first assignment (and its listener, which seeks) can run inside it.
        self._consumer = consumer
        try:
            await consumer.start()
        except KafkaError as exc:
            self._consumer = None
            with suppress(Exception):
                await consumer.stop()
            raise SourceUnavailable(await connect_failure(self.settings, describe_error(exc))) from None
        self._brokers_ok = True
        self._probe = asyncio.create_task(self._probe_loop(), name="rmmwatch-kafka-probe")
        log.info("kafka_started", topics=self.topics, group=self.group_id, bootstrap=self.settings.bootstrap_servers)

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            with suppress(asyncio.CancelledError, Exception):
                await self._probe
            self._probe = None
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            with suppress(Exception):
                await consumer.stop()

    # -- reading -------------------------------------------------------------------------
    def problem(self) -> str | None:
        return self._problem

    def pause(self) -> None:
        if self._consumer is not None and not self._paused:
            self._consumer.pause(*self._consumer.assignment())
            self._paused = True

    def resume(self) -> None:
        if self._consumer is not None and self._paused:
            self._consumer.resume(*self._consumer.assignment())
            self._paused = False

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
        for tp, partition_records in data.items():
            self._handed_out[tp] = max(self._handed_out.get(tp, 0), partition_records[-1].offset + 1)
        # Cumulative: every partition handed out so far, not only this batch's. The loop commits a
        # batch once everything before it is done, so a partition absent from the newest batch
        # still gets its last offset committed (and its lag reaches 0 when it goes idle).
        position: Position = {tp: (offset, self._generation.get(tp, -1)) for tp, offset in self._handed_out.items()}

        def locate(index: int) -> dict[str, Any]:
            record = records[index]
            return {"source": "kafka", "topic": record.topic, "partition": record.partition, "offset": record.offset}

        return Batch(messages, position, locate)

    # -- committing ----------------------------------------------------------------------
    async def commit(self, position: Any) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        assigned = consumer.assignment()
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        for tp, (offset, generation) in dict(position).items():
            if tp not in assigned or self._generation.get(tp) != generation:
                continue  # revoked since: the new owner re-reads, the store absorbs duplicates
            if offset <= self._committed.get(tp, -1):
                continue
            offsets[tp] = OffsetAndMetadata(offset, "")
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            log.info("kafka_commit_superseded_by_rebalance", error=describe_error(exc))
            return
        except KafkaError as exc:
            self._brokers_ok = False
            raise SourceUnavailable(f"kafka commit failed: {describe_error(exc)}") from None
        for tp, committed in offsets.items():
            self._committed[tp] = committed.offset
        self._brokers_ok = True

    # -- rebalances ----------------------------------------------------------------------
    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        deadline = time.monotonic() + self.rebalance_wait_s
        while time.monotonic() < deadline:
            pending = [tp for tp in revoked if self._handed_out.get(tp, 0) > self._committed.get(tp, 0)]
            if not pending:
                break
            await asyncio.sleep(0.05)
        else:
            log.warning("kafka_revoked_with_uncommitted_batches", partitions=sorted(str(tp) for tp in revoked))
        for tp in revoked:
            self._generation.pop(tp, None)
            self._handed_out.pop(tp, None)
            self._committed.pop(tp, None)
            if self.metrics is not None:
                with suppress(KeyError):
                    self.metrics.consumer_lag.remove(tp.topic, str(tp.partition))
        log.info("kafka_partitions_revoked", partitions=sorted(str(tp) for tp in revoked))

    async def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        consumer = self._consumer
        self._next_generation += 1
        for tp in assigned:
            self._generation[tp] = self._next_generation
        if consumer is not None and self._paused:
            consumer.pause(*assigned)
        if consumer is not None:
            for tp in assigned:
                committed = await consumer.committed(tp)
                if committed is not None:
                    self._committed[tp] = committed
                    self._handed_out[tp] = committed
                elif self._start_ms is not None:
                    found = await consumer.offsets_for_times({tp: self._start_ms})
                    hit = found.get(tp)
                    if hit is None:
                        await consumer.seek_to_end(tp)
                    else:
                        consumer.seek(tp, hit.offset)
        log.info("kafka_partitions_assigned", partitions=sorted(str(tp) for tp in assigned))

    async def committed_offsets(self) -> dict[tuple[str, int], int]:
        """The group's committed offset of every assigned partition, read from the broker."""
        consumer = self._consumer
        if consumer is None:
            return {}
        found: dict[tuple[str, int], int] = {}
        for tp in consumer.assignment():
            committed = await consumer.committed(tp)
            found[(tp.topic, tp.partition)] = -1 if committed is None else committed
        return found

    # -- lag and reachability ------------------------------------------------------------
    def _check_exclusive(self, consumer: AIOKafkaConsumer, assigned: set[TopicPartition]) -> None:
        """With an unshared store (sqlite), a member that owns only part of the topics means a
        second replica: each would see part of every device's events. Tolerated for a while (a
        restarted pod's old member lingers until its session expires), then fatal."""
        total = sum(len(consumer.partitions_for_topic(topic) or ()) for topic in self.topics)
        if len(assigned) >= total:
            self._partial_since = None
            return
        now = time.monotonic()
        if self._partial_since is None:
            self._partial_since = now
        grace = max(30.0, 3 * self.settings.session_timeout_ms / 1000)
        if now - self._partial_since > grace:
            self._problem = (
                f"this process owns {len(assigned)} of {total} partitions of {', '.join(self.topics)} in group "
                f"{self.group_id!r}: another replica shares the group, and the sqlite store is single-process; "
                "run one replica, or use --store redis://... for several"
            )

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.sleep(self.probe_interval_s)
            consumer = self._consumer
            if consumer is None:
                return
            assigned = consumer.assignment()
            if not assigned:
                continue
            try:
                ends = await asyncio.wait_for(consumer.end_offsets(list(assigned)), timeout=10)
            except (KafkaError, TimeoutError) as exc:
                if self._brokers_ok:
                    log.warning("kafka_brokers_unreachable", error=describe_error(exc))
                self._brokers_ok = False
                continue
            if not self._brokers_ok:
                log.info("kafka_brokers_reachable")
            self._brokers_ok = True
            if self.exclusive:
                self._check_exclusive(consumer, assigned)
            if self.metrics is None:
                continue
            for tp, end in ends.items():
                committed = self._committed.get(tp, 0)
                self.metrics.consumer_lag.labels(topic=tp.topic, partition=str(tp.partition)).set(
                    max(0, end - committed)
                )
