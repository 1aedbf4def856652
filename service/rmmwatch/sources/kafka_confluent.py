"""Kafka through librdkafka (confluent-kafka): the same source contract as ``sources/kafka.py``.

Why a second client: on the read path aiokafka decodes every record batch in Python with the
GIL held; librdkafka fetches and decodes in C threads. ``load/bench.py`` measured the bare
aiokafka consumer at a quarter of librdkafka's read rate, and rmmwatch's decode+match fed by
librdkafka at about five times rmmwatch on aiokafka (load/README.md).

The semantics are those of ``KafkaSource`` (module docstring there): cumulative positions
tagged with the assignment generation, commits only of partitions still held in the same
generation and never backwards, a revoke that waits for the batches already handed out, a
new group's start at earliest, latest or a time, lag and reachability probes, pause/resume.

Threading: ``confluent_kafka.Consumer`` is used from one thread only, ``rmmwatch-kafka``. Every
call (consume, commit, committed, watermarks, pause) runs there. ``fetch`` consumes in short
slices and, between slices, serves the commit requests the loop queued, so a commit waits at
most one slice behind a fetch. Rebalance callbacks run on that thread inside ``consume``; the
revoke callback serves queued commits itself while it waits for the in-flight batches, which
is how the loop's commit of the revoked batch reaches the broker before the partition moves.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from typing import Any, TypeVar

from confluent_kafka import OFFSET_END, OFFSET_INVALID, Consumer, KafkaError, KafkaException, Message, TopicPartition

from rmmwatch.kafka_client import KafkaSettings, connect_failure
from rmmwatch.kql.datetimes import DatetimeError, parse_datetime
from rmmwatch.logging import get_logger, redactor
from rmmwatch.metrics import Metrics
from rmmwatch.sources.base import Batch, SourceUnavailable

log = get_logger("rmmwatch.sources.kafka")

Key = tuple[str, int]  # (topic, partition)
Position = dict[Key, tuple[int, int]]  # partition -> (next offset, generation)
T = TypeVar("T")

# Commit errors that mean "a rebalance superseded this member's view": dropped, the new owner re-reads.
_SUPERSEDED = {
    KafkaError.REBALANCE_IN_PROGRESS,
    KafkaError.ILLEGAL_GENERATION,
    KafkaError.UNKNOWN_MEMBER_ID,
    KafkaError._NO_OFFSET,
    KafkaError._ASSIGNMENT_LOST,
    KafkaError._STATE,
}
_SLICE_S = 0.05


def describe(error: object) -> str:
    """A librdkafka error as one line, secrets redacted."""
    if isinstance(error, KafkaException) and error.args and isinstance(error.args[0], KafkaError):
        error = error.args[0]
    if isinstance(error, KafkaError):
        return redactor.redact(f"{error.name()}: {error.str()}")
    return redactor.redact(f"{type(error).__name__}: {error}")


class ConfluentKafkaSource:
    """A consumer-group member reading raw message values through librdkafka."""

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
        connect_timeout_s: float = 20.0,
    ) -> None:
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
        self.exclusive = exclusive
        self.connect_timeout_s = connect_timeout_s
        self._config = settings.librdkafka_config()  # refuses unsupported settings before anything starts
        self._consumer: Consumer | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._generation: dict[Key, int] = {}
        self._next_generation = 0
        self._handed_out: dict[Key, int] = {}
        self._committed: dict[Key, int] = {}
        self._assigned: set[Key] = set()
        self._commits: queue.SimpleQueue[tuple[list[TopicPartition], Future[None]]] = queue.SimpleQueue()
        self._brokers_ok = False
        self._paused = False
        self._pause_applied = False  # what the consumer's thread last told librdkafka
        self._closing = False
        self._fatal: str | None = None
        self._probe: asyncio.Task[None] | None = None
        self._partial_since: float | None = None
        self._problem: str | None = None
        self._partition_counts: dict[str, int] = {}

    # -- the consumer's thread -----------------------------------------------------------
    async def _on_thread(self, function: Callable[..., T], *args: Any) -> T:
        if self._thread is None:
            raise SourceUnavailable("the kafka source is closed")
        return await asyncio.get_running_loop().run_in_executor(self._thread, function, *args)

    def _error_cb(self, error: KafkaError) -> None:
        if error.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            self._brokers_ok = False
        if error.code() in (KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED, KafkaError._SSL):
            self._fatal = describe(error)
        if error.fatal():
            self._fatal = describe(error)
        log.warning("kafka_client_error", error=describe(error))

    # -- lifecycle -----------------------------------------------------------------------
    @property
    def exhausted(self) -> bool:
        return False

    def ready(self) -> tuple[bool, str]:
        if self._consumer is None:
            return False, "not started"
        with self._lock:
            assigned = len(self._assigned)
        if not assigned:
            return False, f"no partitions assigned in group {self.group_id!r}"
        if not self._brokers_ok:
            return False, "brokers unreachable"
        return True, f"{assigned} partition(s) assigned"

    def _where(self) -> str:
        settings = self.settings
        sasl = (
            f", SASL {settings.sasl_mechanism} as {settings.sasl_username}"
            if settings.security_protocol.startswith("SASL")
            else ""
        )
        return f"{settings.bootstrap_servers} ({settings.security_protocol}{sasl})"

    async def start(self) -> None:
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
        except KafkaException as exc:
            await self._shutdown_thread()
            raise SourceUnavailable(await connect_failure(self.settings, describe(exc))) from None
        self._brokers_ok = True
        self._probe = asyncio.create_task(self._probe_loop(), name="rmmwatch-kafka-probe")
        log.info(
            "kafka_started", topics=self.topics, group=self.group_id, bootstrap=self.settings.bootstrap_servers,
            client="confluent",
        )  # fmt: skip

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

    async def close(self) -> None:
        self._closing = True
        if self._probe is not None:
            self._probe.cancel()
            with suppress(asyncio.CancelledError, Exception):
                await self._probe
            self._probe = None
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

    # -- reading -------------------------------------------------------------------------
    def problem(self) -> str | None:
        return self._problem

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> None:
        self._paused = False

    def _apply_pause(self, consumer: Consumer) -> None:
        with self._lock:
            held = [TopicPartition(t, p) for t, p in self._assigned]
        if not held:
            return
        if self._paused:
            consumer.pause(held)
        else:
            consumer.resume(held)

    async def fetch(self, timeout_s: float) -> Batch | None:
        if self._consumer is None or self._thread is None:
            return None
        try:
            found = await self._on_thread(self._fetch_blocking, timeout_s)
        except RuntimeError:  # the thread was shut down by close()
            return None
        if found is None:
            return None
        messages, origins, position = found

        def locate(index: int) -> dict[str, Any]:
            topic, partition, offset = origins[index]
            return {"source": "kafka", "topic": topic, "partition": partition, "offset": offset}

        return Batch(messages, position, locate)

    def _fetch_blocking(self, timeout_s: float) -> tuple[list[bytes], list[tuple[str, int, int]], Position] | None:
        consumer = self._consumer
        if consumer is None:
            return None
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            self._serve_commits(consumer)
            if self._pause_applied is not self._paused:
                self._apply_pause(consumer)
                self._pause_applied = self._paused
            remaining = deadline - time.monotonic()
            batch = consumer.consume(num_messages=self.max_messages, timeout=max(0.0, min(_SLICE_S, remaining)))
            if batch:
                found = self._hand_out(batch)
                if found is not None:
                    return found
            if time.monotonic() >= deadline:
                self._serve_commits(consumer)
                return None

    def _hand_out(self, batch: list[Message]) -> tuple[list[bytes], list[tuple[str, int, int]], Position] | None:
        messages: list[bytes] = []
        origins: list[tuple[str, int, int]] = []
        last: dict[Key, int] = {}
        for message in batch:
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    self._brokers_ok = error.code() not in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT)
                    log.warning("kafka_fetch_failed", error=describe(error))
                continue
            topic, partition, offset = message.topic(), message.partition(), message.offset()
            if topic is None or partition is None or offset is None:
                continue
            value = message.value()
            messages.append(value if isinstance(value, bytes) else b"")
            origins.append((topic, partition, offset))
            last[(topic, partition)] = offset + 1
        if not messages:
            return None
        with self._lock:
            for key, offset in last.items():
                self._handed_out[key] = max(self._handed_out.get(key, 0), offset)
            # Cumulative, as in KafkaSource: committing the newest batch covers every earlier one.
            generation = self._generation
            position: Position = {key: (offset, generation.get(key, -1)) for key, offset in self._handed_out.items()}
        return messages, origins, position

    # -- committing ----------------------------------------------------------------------
    async def commit(self, position: Any) -> None:
        if self._consumer is None or self._thread is None:
            return
        offsets: list[TopicPartition] = []
        with self._lock:
            for key, (offset, generation) in dict(position).items():
                if key not in self._assigned or self._generation.get(key) != generation:
                    continue  # revoked since: the new owner re-reads, the store absorbs duplicates
                if offset <= self._committed.get(key, -1):
                    continue
                offsets.append(TopicPartition(key[0], key[1], offset))
        if not offsets:
            return
        done: Future[None] = Future()
        self._commits.put((offsets, done))
        # Served by a fetch in progress (between slices), by a revoke callback, or by this job.
        thread = self._thread
        with suppress(RuntimeError):
            thread.submit(self._serve_commits_now)
        await asyncio.wrap_future(done)

    def _serve_commits_now(self) -> None:
        if self._consumer is not None:
            self._serve_commits(self._consumer)

    def _serve_commits(self, consumer: Consumer) -> None:
        while True:
            try:
                offsets, done = self._commits.get_nowait()
            except queue.Empty:
                return
            if done.done():
                continue
            try:
                self._commit_blocking(consumer, offsets)
            except BaseException as exc:  # handed to the awaiting coroutine
                done.set_exception(exc)
            else:
                done.set_result(None)

    def _still_newer(self, tp: TopicPartition) -> bool:
        key = (tp.topic, tp.partition)
        return key in self._assigned and tp.offset > self._committed.get(key, -1)

    def _commit_blocking(self, consumer: Consumer, offsets: list[TopicPartition]) -> None:
        with self._lock:  # re-checked here: a rebalance may have run since the request was queued
            offsets = [tp for tp in offsets if self._still_newer(tp)]
        if not offsets:
            return
        try:
            results = consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            code = exc.args[0].code() if exc.args and isinstance(exc.args[0], KafkaError) else None
            if code in _SUPERSEDED:
                log.info("kafka_commit_superseded_by_rebalance", error=describe(exc))
                return
            self._brokers_ok = False
            raise SourceUnavailable(f"kafka commit failed: {describe(exc)}") from None
        with self._lock:
            for tp in results or offsets:
                if tp.error is None:
                    key = (tp.topic, tp.partition)
                    self._committed[key] = max(self._committed.get(key, -1), tp.offset)
        self._brokers_ok = True

    # -- rebalances (on the consumer's thread, inside consume) ---------------------------
    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        deadline = time.monotonic() + self.rebalance_wait_s
        while not self._closing:
            self._serve_commits(consumer)
            with self._lock:
                pending = [k for k in revoked if self._handed_out.get(k, 0) > self._committed.get(k, 0)]
            if not pending:
                break
            if time.monotonic() >= deadline:
                log.warning("kafka_revoked_with_uncommitted_batches", partitions=sorted(_name(k) for k in revoked))
                break
            time.sleep(0.02)
        self._forget(revoked)
        log.info("kafka_partitions_revoked", partitions=sorted(_name(k) for k in revoked))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        lost = {(tp.topic, tp.partition) for tp in partitions}
        self._forget(lost)
        log.warning("kafka_partitions_lost", partitions=sorted(_name(k) for k in lost))

    def _forget(self, keys: set[Key]) -> None:
        with self._lock:
            for key in keys:
                self._assigned.discard(key)
                self._generation.pop(key, None)
                self._handed_out.pop(key, None)
                self._committed.pop(key, None)
        if self.metrics is not None:
            for topic, partition in keys:
                with suppress(KeyError):
                    self.metrics.consumer_lag.remove(topic, str(partition))

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        timeout = max(5.0, self.settings.request_timeout_ms / 1000)
        starts: dict[Key, int] = {}
        for tp in consumer.committed(partitions, timeout=timeout):
            if tp.error is None and tp.offset >= 0:
                starts[(tp.topic, tp.partition)] = tp.offset  # committed offsets always win
        unset = [tp for tp in partitions if (tp.topic, tp.partition) not in starts]
        chosen: dict[Key, int] = dict(starts)
        if unset and self._start_ms is not None:
            wanted = [TopicPartition(tp.topic, tp.partition, self._start_ms) for tp in unset]
            for tp in consumer.offsets_for_times(wanted, timeout=timeout):
                found = tp.error is None and tp.offset >= 0
                chosen[(tp.topic, tp.partition)] = tp.offset if found else OFFSET_END
        with self._lock:
            self._next_generation += 1
            for tp in partitions:
                key = (tp.topic, tp.partition)
                self._generation[key] = self._next_generation
                self._assigned.add(key)
                tp.offset = chosen.get(key, OFFSET_INVALID)  # OFFSET_INVALID: auto.offset.reset
                if key in starts:
                    self._committed[key] = starts[key]
                    self._handed_out[key] = starts[key]
        consumer.assign(partitions)
        if self._paused:
            consumer.pause(partitions)
        log.info("kafka_partitions_assigned", partitions=sorted(_name((tp.topic, tp.partition)) for tp in partitions))

    # -- lag and reachability ------------------------------------------------------------
    async def committed_offsets(self) -> dict[tuple[str, int], int]:
        """The group's committed offset of every assigned partition, read from the broker."""
        return await self._on_thread(self._committed_blocking)

    def _committed_blocking(self) -> dict[tuple[str, int], int]:
        consumer = self._consumer
        if consumer is None:
            return {}
        with self._lock:
            held = [TopicPartition(t, p) for t, p in self._assigned]
        return {(tp.topic, tp.partition): tp.offset for tp in consumer.committed(held, timeout=10.0)}

    def _probe_blocking(self) -> dict[Key, int] | None:
        consumer = self._consumer
        if consumer is None:
            return None
        try:
            metadata = consumer.list_topics(timeout=5.0)
        except KafkaException as exc:
            if self._brokers_ok:
                log.warning("kafka_brokers_unreachable", error=describe(exc))
            self._brokers_ok = False
            return None
        self._note_partition_counts(metadata)
        with self._lock:
            held = sorted(self._assigned)
        ends: dict[Key, int] = {}
        for topic, partition in held:
            try:
                _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=5.0)
            except KafkaException as exc:
                log.warning("kafka_lag_unknown", error=describe(exc))
                return None
            ends[(topic, partition)] = high
        if not self._brokers_ok:
            log.info("kafka_brokers_reachable")
        self._brokers_ok = True
        return ends

    def _check_exclusive(self) -> None:
        """As in KafkaSource: a member that owns only part of the topics, with an unshared store,
        means a second replica; tolerated for a while (a restarted pod's old member), then fatal."""
        total = sum(self._partition_counts.get(topic, 0) for topic in self.topics)
        with self._lock:
            held = len(self._assigned)
        if held >= total:
            self._partial_since = None
            return
        now = time.monotonic()
        if self._partial_since is None:
            self._partial_since = now
        grace = max(30.0, 3 * self.settings.session_timeout_ms / 1000)
        if now - self._partial_since > grace:
            self._problem = (
                f"this process owns {held} of {total} partitions of {', '.join(self.topics)} in group "
                f"{self.group_id!r}: another replica shares the group, and the sqlite store is single-process; "
                "run one replica, or use --store redis://... for several"
            )

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.sleep(self.probe_interval_s)
            if self._consumer is None:
                return
            with self._lock:
                if not self._assigned:
                    continue
            try:
                ends = await self._on_thread(self._probe_blocking)
            except (RuntimeError, SourceUnavailable):
                return
            if ends is None:
                continue
            if self.exclusive:
                self._check_exclusive()
            if self.metrics is None:
                continue
            for (topic, partition), end in ends.items():
                with self._lock:
                    committed = self._committed.get((topic, partition), 0)
                self.metrics.consumer_lag.labels(topic=topic, partition=str(partition)).set(max(0, end - committed))


def _name(key: Key) -> str:
    return f"{key[0]}-{key[1]}"


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
