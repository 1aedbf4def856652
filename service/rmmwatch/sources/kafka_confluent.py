"""Kafka through librdkafka (confluent-kafka): the I/O under ``sources/kafka_core.py``, the same contract as
``sources/kafka.py``.

Why a second client: on the read path aiokafka decodes every record batch in Python with the
GIL held; librdkafka fetches and decodes in C threads. ``load/bench.py`` measured the bare
aiokafka consumer at a quarter of librdkafka's read rate, and rmmwatch's decode+match fed by
librdkafka at about five times rmmwatch on aiokafka (load/README.md).

The semantics are the core's (module docstring there): cumulative positions tagged with the assignment
generation, commits only of partitions still held in the same generation and never backwards, a revoke
that waits for the batches already handed out, a new group's start at earliest, latest or a time, lag and
reachability probes, pause/resume.

Threading: ``confluent_kafka.Consumer`` is used from one thread only, ``rmmwatch-kafka``. Every
call (consume, commit, committed, watermarks, pause) runs there. ``fetch`` consumes in short
slices and, between slices, serves the commit requests the loop queued, so a commit waits at
most one slice behind a fetch. Rebalance callbacks run on that thread inside ``consume``; the
revoke callback serves queued commits itself while it waits for the in-flight batches, which
is how the loop's commit of the revoked batch reaches the broker before the partition moves.
The partition ledger takes its own lock, so the thread and the event loop share it safely.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from typing import Any, TypeVar, Unpack

from confluent_kafka import OFFSET_END, OFFSET_INVALID, Consumer, KafkaError, KafkaException, Message, TopicPartition

from rmmwatch.kafka_settings import KafkaSettings, describe_error
from rmmwatch.logging import redactor
from rmmwatch.sources.base import Batch, SourceUnavailable
from rmmwatch.sources.kafka_core import KafkaCore, KafkaOptions, Key, Origin, Position, log

T = TypeVar("T")
Found = tuple[list[bytes], list[Origin], dict[Key, int]]  # messages, where each came from, next offsets

# Commit errors that mean "a rebalance superseded this member's view": dropped, the new owner re-reads.
_SUPERSEDED = {
    KafkaError.REBALANCE_IN_PROGRESS,
    KafkaError.ILLEGAL_GENERATION,
    KafkaError.UNKNOWN_MEMBER_ID,
    KafkaError._NO_OFFSET,
    KafkaError._ASSIGNMENT_LOST,
    KafkaError._STATE,
}
_UNREACHABLE = (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT)
_SLICE_S = 0.05


def _keys(partitions: list[TopicPartition]) -> set[Key]:
    return {(tp.topic, tp.partition) for tp in partitions}


class ConfluentKafkaSource(KafkaCore):
    """A consumer-group member reading raw message values through librdkafka."""

    client = "confluent"
    client_errors = (KafkaException,)

    def __init__(
        self,
        settings: KafkaSettings,
        topics: Sequence[str],
        *,
        connect_timeout_s: float = 20.0,
        **options: Unpack[KafkaOptions],
    ) -> None:
        """``connect_timeout_s``: how long ``start`` waits for the brokers' metadata; the rest as in KafkaCore."""
        super().__init__(settings, topics, **options)
        self.connect_timeout_s = connect_timeout_s
        self._config = settings.librdkafka_config()  # refuses unsupported settings before anything starts
        self._consumer: Consumer | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._commits: queue.SimpleQueue[tuple[Position, Future[None]]] = queue.SimpleQueue()
        self._pause_applied = False  # what the consumer's thread last told librdkafka
        self._closing = False
        self._fatal: str | None = None
        self._partition_counts: dict[str, int] = {}

    # -- the consumer's thread -------------------------------------------------------------
    async def _on_thread(self, function: Callable[..., T], *args: Any) -> T:
        if self._thread is None:
            raise SourceUnavailable("the kafka source is closed")
        return await asyncio.get_running_loop().run_in_executor(self._thread, function, *args)

    def _error_cb(self, error: KafkaError) -> None:
        if error.code() in _UNREACHABLE:
            self._brokers_ok = False
        if error.code() in (KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED, KafkaError._SSL):
            self._fatal = describe_error(error)
        if error.fatal():
            self._fatal = describe_error(error)
        log.warning("kafka_client_error", error=describe_error(error))

    # -- lifecycle -------------------------------------------------------------------------
    def _connected(self) -> bool:
        return self._consumer is not None and self._thread is not None

    async def _connect(self) -> None:
        config = {
            **self._config,
            "group.id": self.group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "latest" if self.start_at == "latest" else "earliest",
            "session.timeout.ms": self.settings.session_timeout_ms,
            "heartbeat.interval.ms": max(100, self.settings.session_timeout_ms // 3),
            # Defender envelopes are tens of KB; 4 MB per partition per fetch, like the aiokafka source.
            "max.partition.fetch.bytes": 4 * 1024 * 1024,
            # librdkafka prefetches up to this much per consumer (default 64 MB): bounded for the RSS budget.
            "queued.max.messages.kbytes": 16 * 1024,
            # When the prefetch queue is full librdkafka backs off (default 1 s): that stalls a fast loop.
            "fetch.queue.backoff.ms": 10,
            "error_cb": self._error_cb,
            "logger": _Logger(),
        }
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rmmwatch-kafka")
        try:
            await self._on_thread(self._start_blocking, config)
        except BaseException:
            await self._shutdown_thread()
            raise

    def _start_blocking(self, config: dict[str, Any]) -> None:
        consumer = Consumer(config)
        try:
            deadline = time.monotonic() + self.connect_timeout_s
            while True:  # metadata from a broker proves the connection and the credentials
                consumer.poll(0)  # serves error_cb (authentication failures arrive there)
                if self._fatal is not None:
                    raise KafkaException(KafkaError(KafkaError._AUTHENTICATION, self._fatal))
                try:
                    metadata = consumer.list_topics(timeout=min(2.0, max(0.1, deadline - time.monotonic())))
                    break
                except KafkaException:
                    if time.monotonic() >= deadline:
                        raise
            self._note_partition_counts(metadata)
            consumer.subscribe(self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost)
        except BaseException:
            with suppress(Exception):
                consumer.close()
            raise
        self._consumer = consumer

    def _note_partition_counts(self, metadata: Any) -> None:
        for topic in self.topics:
            found = metadata.topics.get(topic)
            if found is not None and found.error is None:
                self._partition_counts[topic] = len(found.partitions)

    def _partition_count(self, topic: str) -> int:
        return self._partition_counts.get(topic, 0)

    async def _disconnect(self) -> None:
        self._closing = True
        if self._consumer is not None and self._thread is not None:
            with suppress(Exception):
                await self._on_thread(self._close_blocking)
        await self._shutdown_thread()

    def _close_blocking(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            self._serve_commits(consumer)
            consumer.close()  # leaves the group (the revoke callback does not wait: closing)

    async def _shutdown_thread(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, thread.shutdown)
        while not self._commits.empty():  # nobody will serve these any more
            _, future = self._commits.get_nowait()
            if not future.done():
                future.set_exception(SourceUnavailable("the kafka source closed before the commit"))

    # -- reading (on the consumer's thread) ------------------------------------------------
    def _apply_pause_blocking(self, consumer: Consumer) -> None:
        held = [TopicPartition(topic, partition) for topic, partition in self.ledger.owned()]
        if held:
            (consumer.pause if self._paused else consumer.resume)(held)

    async def fetch(self, timeout_s: float) -> Batch | None:
        if not self._connected():
            return None
        try:
            found = await self._on_thread(self._fetch_blocking, timeout_s)
        except RuntimeError:  # the thread was shut down by close()
            return None
        if found is None:
            return None
        messages, origins, last = found
        return self._batch(messages, last, origins.__getitem__)

    def _fetch_blocking(self, timeout_s: float) -> Found | None:
        consumer = self._consumer
        if consumer is None:
            return None
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            self._serve_commits(consumer)
            if self._pause_applied is not self._paused:
                self._apply_pause_blocking(consumer)
                self._pause_applied = self._paused
            remaining = deadline - time.monotonic()
            batch = consumer.consume(num_messages=self.max_messages, timeout=max(0.0, min(_SLICE_S, remaining)))
            if batch:
                found = self._unpack(batch)
                if found is not None:
                    return found
            if time.monotonic() >= deadline:
                self._serve_commits(consumer)
                return None

    def _unpack(self, batch: list[Message]) -> Found | None:
        messages: list[bytes] = []
        origins: list[Origin] = []
        last: dict[Key, int] = {}
        for message in batch:
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    self._brokers_ok = error.code() not in _UNREACHABLE
                    log.warning("kafka_fetch_failed", error=describe_error(error))
                continue
            topic, partition, offset = message.topic(), message.partition(), message.offset()
            if topic is None or partition is None or offset is None:
                continue
            value = message.value()
            messages.append(value if isinstance(value, bytes) else b"")
            origins.append((topic, partition, offset))
            last[(topic, partition)] = offset + 1
        return (messages, origins, last) if messages else None

    # -- committing ------------------------------------------------------------------------
    async def _commit(self, plan: Position) -> None:
        thread = self._thread
        assert thread is not None
        done: Future[None] = Future()
        self._commits.put((plan, done))
        # Served by a fetch in progress (between slices), by a revoke callback, or by this job.
        with suppress(RuntimeError):
            thread.submit(self._serve_commits_now)
        await asyncio.wrap_future(done)

    def _serve_commits_now(self) -> None:
        if self._consumer is not None:
            self._serve_commits(self._consumer)

    def _serve_commits(self, consumer: Consumer) -> None:
        while True:
            try:
                plan, done = self._commits.get_nowait()
            except queue.Empty:
                return
            if done.done():
                continue
            try:
                self._commit_blocking(consumer, plan)
            except BaseException as exc:  # handed to the awaiting coroutine
                done.set_exception(exc)
            else:
                done.set_result(None)

    def _commit_blocking(self, consumer: Consumer, plan: Position) -> None:
        plan = self.ledger.commit_plan(plan)  # again: a rebalance may have run since the request was queued
        if not plan:
            return
        offsets = [TopicPartition(topic, partition, mark.value) for (topic, partition), mark in plan.items()]
        try:
            results = consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            if exc.args and isinstance(exc.args[0], KafkaError) and exc.args[0].code() in _SUPERSEDED:
                self._commit_superseded(exc)
                return
            raise self._commit_failed(exc) from None
        self._commit_done({key: plan[key] for key in _keys([tp for tp in results or offsets if tp.error is None])})

    # -- rebalances (on the consumer's thread, inside consume) -----------------------------
    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        revoked = _keys(partitions)
        deadline = time.monotonic() + self.rebalance_wait_s
        while not self._closing:
            self._serve_commits(consumer)
            if self._settled(revoked, deadline):
                break
            time.sleep(0.02)
        self._forget(revoked)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._forget(_keys(partitions), lost=True)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        timeout = max(5.0, self.settings.request_timeout_ms / 1000)
        committed: dict[Key, int] = {}
        for tp in consumer.committed(partitions, timeout=timeout):
            if tp.error is None and tp.offset >= 0:
                committed[(tp.topic, tp.partition)] = tp.offset  # committed offsets always win
        chosen: dict[Key, int] = dict(committed)
        unset = [tp for tp in partitions if (tp.topic, tp.partition) not in committed]
        if unset and self._start_ms is not None:
            wanted = [TopicPartition(tp.topic, tp.partition, self._start_ms) for tp in unset]
            for tp in consumer.offsets_for_times(wanted, timeout=timeout):
                found = tp.error is None and tp.offset >= 0
                chosen[(tp.topic, tp.partition)] = tp.offset if found else OFFSET_END
        keys = _keys(partitions)
        self.ledger.assign(keys)
        for tp in partitions:
            tp.offset = chosen.get((tp.topic, tp.partition), OFFSET_INVALID)  # OFFSET_INVALID: auto.offset.reset
        consumer.assign(partitions)
        if self._paused:
            consumer.pause(partitions)
        self._assigned(keys, committed)

    # -- lag and reachability --------------------------------------------------------------
    async def _end_offsets(self, owned: list[Key]) -> dict[Key, int] | None:
        return await self._on_thread(self._end_offsets_blocking, owned)

    def _end_offsets_blocking(self, owned: list[Key]) -> dict[Key, int] | None:
        consumer = self._consumer
        if consumer is None:
            return None
        try:
            self._note_partition_counts(consumer.list_topics(timeout=5.0))
        except KafkaException as exc:
            self._reachable(exc)
            return None
        ends: dict[Key, int] = {}
        for topic, partition in sorted(owned):
            try:
                _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=5.0)
            except KafkaException as exc:
                log.warning("kafka_lag_unknown", error=describe_error(exc))
                return None
            ends[(topic, partition)] = high
        self._reachable(None)
        return ends


class _Logger:
    """librdkafka's log lines through structlog (``logger`` config), secrets redacted."""

    def log(self, level: int, message: str, *args: Any) -> None:
        text = redactor.redact(message % args if args else message)
        if level >= logging.ERROR:
            log.error("librdkafka", message=text)
        elif level >= logging.WARNING:
            log.warning("librdkafka", message=text)
        else:
            log.debug("librdkafka", message=text)
