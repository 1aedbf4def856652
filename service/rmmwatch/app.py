"""The service loop: one path for every event, in DESIGN.md's commit order.

1. take a batch from the source; 2. decode+match (pure, synchronous);
3. ``store.apply``: advance the window to now, add the matches, write alerts to the
   outbox, atomically; 4. deliver outbox alerts to every sink, mark them sent;
5. commit the source position, only when the outbox is empty (everything read so far
   is durable and delivered). Between batches a wall-clock tick advances the window.

Cheaper ways through the same order: a batch without matches skips step 3 (the tick
advances the window; nothing else in the store depends on a batch); when several
decoded batches wait, the commit stage applies them in one ``store.apply_many`` (one
transaction, one fsync for sqlite), delivers once and commits the newest position
(positions are cumulative). The queue between the stages holds positions and matches,
not the raw messages.

Failures never lose data: a store error leaves the batch uncommitted and the loop
retries it with backoff; a sink error leaves alerts in the outbox (retried with backoff,
and reading pauses once ``max_pending_alerts`` wait); a crash re-reads from the last
committed position, and apply is idempotent.
"""

from __future__ import annotations

import asyncio
import faulthandler
import io
import signal
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from rmmwatch.alerts import Alert
from rmmwatch.events import BatchResult, Detector, Match
from rmmwatch.http import HealthServer
from rmmwatch.kql.datetimes import TICKS_PER_SECOND
from rmmwatch.logging import RateLimiter, get_logger
from rmmwatch.metrics import Metrics
from rmmwatch.rules import Rule
from rmmwatch.sinks.base import Sink, SinkError
from rmmwatch.sinks.deadletter import DeadLetter, DeadLetterSink
from rmmwatch.sources.base import Batch, Source, SourceUnavailable
from rmmwatch.stores.base import ApplyResult, Store, StoreUnavailable

log = get_logger("rmmwatch.app")

Clock = Callable[[], int]


def wall_clock() -> int:
    """Now, in ticks (100 ns) since the Unix epoch."""
    return time.time_ns() // 100


class Backoff:
    """Exponential backoff with a cap: 0.5 s, 1 s, 2 s ... ``cap_s``."""

    def __init__(self, first_s: float = 0.5, cap_s: float = 30.0) -> None:
        self.first_s = first_s
        self.cap_s = cap_s
        self.failures = 0

    def reset(self) -> None:
        self.failures = 0

    def next_delay(self) -> float:
        delay = min(self.cap_s, self.first_s * (1 << min(self.failures, 20)))
        self.failures += 1
        return delay


@dataclass(slots=True)
class _Decoded:
    """A batch handed to the commit stage: its position and what decode+match found (the raw
    messages are dropped here: dead letters were written before, and nothing later reads them)."""

    position: Any
    messages: int
    result: BatchResult
    started: float


#: At most this many queued batches are applied in one store call (group commit).
GROUP_COMMIT_MAX = 8


class App:
    """Wires a source, the detector, a store and sinks into the running service."""

    def __init__(
        self,
        *,
        rules: Sequence[Rule],
        source: Source,
        store: Store,
        sinks: Sequence[Sink],
        dead_letters: DeadLetterSink,
        metrics: Metrics,
        detector: Detector,
        tick_interval_s: float = 1.0,
        max_pending_alerts: int = 10_000,
        metrics_host: str = "0.0.0.0",  # noqa: S104
        metrics_port: int = 9464,
        shutdown_timeout_s: float = 25.0,
        clock: Clock = wall_clock,
    ) -> None:
        self.rules = list(rules)
        self.source = source
        self.store = store
        self.sinks = list(sinks)
        self.dead_letters = dead_letters
        self.metrics = metrics
        self.detector = detector
        self.tick_interval_s = tick_interval_s
        self.max_pending_alerts = max_pending_alerts
        self.shutdown_timeout_s = shutdown_timeout_s
        self.clock = clock
        self.http = (
            HealthServer(metrics.registry, self._live, self._ready, metrics_host, metrics_port)
            if metrics_port >= 0
            else None
        )
        self._stopping = asyncio.Event()
        self._last_loop = time.monotonic()
        self._last_tick = 0.0
        self._last_stats = 0.0
        self._store_ok = False
        self._uncommitted: Any = None
        self._has_uncommitted = False
        self._pending_alerts = 0
        self._delivery_backoff = Backoff()
        self._next_delivery = 0.0
        self._delivery_lock = asyncio.Lock()
        self._outbox_dirty = True  # at start, alerts of a previous run may wait in the outbox
        self._failed = False
        self._commit_failed = False
        # One thread, always the same: the prefilter's scratch space belongs to one thread at a time.
        self._detect_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rmmwatch-detect")
        self._queue: asyncio.Queue[_Decoded | None] = asyncio.Queue(maxsize=2)
        self._problem_logs = RateLimiter(per_second=1.0, burst=20)
        self._excluded_logs = RateLimiter(per_second=5.0, burst=50)
        self.stats = {"batches": 0, "messages": 0, "matches": 0, "alerts": 0}
        metrics.describe_rules({r.id: r.name for r in self.rules})

    # -- health -------------------------------------------------------------------------
    def _live(self) -> tuple[bool, str]:
        age = time.monotonic() - self._last_loop
        limit = max(30.0, 10 * self.tick_interval_s)
        return (age < limit, f"loop turned {age:.1f}s ago")

    def _ready(self) -> tuple[bool, str]:
        source_ok, source_detail = self.source.ready()
        ok = source_ok and self._store_ok and not self._stopping.is_set()
        self.metrics.ready.labels(component="source").set(1 if source_ok else 0)
        self.metrics.ready.labels(component="store").set(1 if self._store_ok else 0)
        return ok, f"source: {source_detail}; store: {'ok' if self._store_ok else 'unavailable'}"

    def stop(self) -> None:
        """Ask the loop to finish the in-flight batch and exit."""
        if not self._stopping.is_set():
            log.info("stopping")
            self._stopping.set()

    @staticmethod
    def dump_tasks() -> None:
        """SIGUSR2: every asyncio task's stack to stderr (a stall's diagnosis; SIGUSR1 dumps the threads)."""
        out = io.StringIO()
        tasks = asyncio.all_tasks()
        out.write(f"rmmwatch: {len(tasks)} asyncio task(s)\n")
        for task in sorted(tasks, key=lambda t: t.get_name()):
            task.print_stack(file=out)
        sys.stderr.write(out.getvalue())
        sys.stderr.flush()

    # -- lifecycle ----------------------------------------------------------------------
    async def run(self) -> int:
        """Run until stopped or until a finite source is exhausted. Returns an exit code."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop)
        # Diagnosis of a stuck process without a debugger: SIGUSR1 prints every thread's stack
        # (from C, even if the loop is blocked), SIGUSR2 every asyncio task's.
        with suppress(AttributeError, ValueError, RuntimeError, io.UnsupportedOperation):
            faulthandler.register(signal.SIGUSR1, all_threads=True)
        with suppress(AttributeError, NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGUSR2, self.dump_tasks)
        if self.http is not None:
            await self.http.start()
        try:
            try:
                await self._open()
            except (SourceUnavailable, SinkError) as exc:
                log.error("cannot_start", error=str(exc))
                return 1
            if self._stopping.is_set():
                return 0
            await self._deliver(force=True)
            await self._loop()
            drained = await self._drain()
            return 1 if self._failed else drained
        finally:
            await self._shutdown()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2):
                with suppress(AttributeError, NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)
            with suppress(AttributeError, ValueError, RuntimeError):
                faulthandler.unregister(signal.SIGUSR1)

    async def _open(self) -> None:
        backoff = Backoff()
        while not self._stopping.is_set():
            try:
                await self.store.open()
                self._store_ok = True
                break
            except StoreUnavailable as exc:
                delay = backoff.next_delay()
                log.warning("store_unavailable", error=str(exc), retry_in_s=delay)
                self.metrics.store_errors.labels(operation="open").inc()
                await self._sleep(delay)
        for sink in self.sinks:
            await sink.open()
        await self.dead_letters.open()
        await self.source.start()
        log.info(
            "started",
            source=self.source.name,
            store=self.store.name,
            sinks=[s.name for s in self.sinks],
            rules=[r.id for r in self.rules],
            prefilter=self.detector.prefilter.describe(),
        )

    async def _shutdown(self) -> None:
        with suppress(Exception):
            if self._store_ok:
                await asyncio.wait_for(self._deliver_and_commit(force=True), timeout=self.shutdown_timeout_s)
        for closer in (
            self.source.close,
            self.dead_letters.close,
            *[s.close for s in self.sinks],
            self.store.close,
        ):
            try:
                await closer()
            except Exception as exc:
                log.warning("close_failed", error=str(exc))
        if self.http is not None:
            await self.http.stop()
        self._detect_thread.shutdown(wait=False)
        log.info("stopped", **self.stats)

    async def _drain(self) -> int:
        """Deliver what is left and commit, retrying up to the shutdown timeout: 0 if all done, else 1."""
        deadline = time.monotonic() + self.shutdown_timeout_s
        while True:
            delivered = await self._deliver(force=True)
            if delivered:
                async with self._delivery_lock:
                    await self._commit_if_delivered()
                return 0
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._stopping.is_set():
                log.error(
                    "undelivered_alerts",
                    pending=self._pending_alerts,
                    note="they stay in the outbox (sqlite/redis) and are delivered by the next run",
                )
                return 1
            await self._sleep(min(remaining, max(0.01, self._next_delivery - time.monotonic())))

    async def _sleep(self, seconds: float) -> None:
        with suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    # -- the loop -------------------------------------------------------------------------
    async def _loop(self) -> None:
        """Two stages: this loop fetches and decodes; the commit stage applies, delivers, commits.

        While the commit stage waits on the store (an fsync) or the brokers (a commit), this loop
        already fetches and decodes the next batch. The queue between them is short, so a slow
        store or sink backs up into the source, and batches are committed strictly in order.
        """
        loop = asyncio.get_running_loop()
        committer = asyncio.create_task(self._commit_stage(), name="rmmwatch-commit-stage")
        # The next fetch runs while a batch is decoded (three stages: fetch, decode, commit).
        prefetch: asyncio.Task[Batch | None] | None = None
        try:
            # Stopping: the batch already prefetched is still decoded and committed (graceful drain).
            while not committer.done() and (not self._stopping.is_set() or prefetch is not None):
                self._last_loop = time.monotonic()
                problem = self.source.problem()
                if problem is not None:
                    log.error("source_problem", error=problem)
                    self._failed = True
                    break
                if self._last_loop - self._last_tick >= self.tick_interval_s:
                    await self._tick()
                if self._pending_alerts or self._commit_failed:
                    # Retry what the commit stage could not finish (a sink or the source was down).
                    await self._deliver_and_commit()
                if self._pending_alerts >= self.max_pending_alerts:
                    # Backpressure: sinks are behind. The source is paused (fetch keeps a Kafka
                    # membership alive and returns nothing) until the outbox drains.
                    self.source.pause()
                else:
                    self.source.resume()
                if prefetch is not None:
                    batch, prefetch = await prefetch, None
                else:
                    batch = await self.source.fetch(self._fetch_timeout())
                if batch is None:
                    if self.source.exhausted:
                        log.info("source_exhausted")
                        break
                    continue
                started = time.perf_counter()
                if not self._stopping.is_set():
                    prefetch = asyncio.create_task(self.source.fetch(self._fetch_timeout()), name="rmmwatch-fetch")
                # Decode+match in its own thread: the byte prefilter (most of its time) releases the
                # GIL, so on a second core it overlaps the Kafka client's work.
                result = await loop.run_in_executor(self._detect_thread, self.detector.process, batch.messages)
                self._count(result)
                await self._dead_letter(batch, result)
                self._log_excluded(result)
                decoded = _Decoded(batch.position, len(batch.messages), result, started)
                del batch, result  # the raw messages, possibly megabytes, are not kept while the batch waits
                await self._queue.put(decoded)
                del decoded  # the commit stage owns it now (and frees its matches once applied)
        finally:
            if prefetch is not None:  # failing: what it fetched is not committed and is re-read on restart
                prefetch.cancel()
                with suppress(asyncio.CancelledError, Exception):
                    await prefetch
            if not committer.done():
                await self._queue.put(None)
            await committer  # re-raises what broke the commit stage

    def _fetch_timeout(self) -> float:
        """Until the next tick is due."""
        return max(0.0, min(self.tick_interval_s, self._last_tick + self.tick_interval_s - time.monotonic()))

    async def _commit_stage(self) -> None:
        while True:
            item = await self._queue.get()
            if item is None:
                return
            # Group commit: the batches that queued up while the previous ones were applied and
            # delivered go through the store, the sinks and the source commit together.
            items = [item]
            del item
            last = False
            while len(items) < GROUP_COMMIT_MAX and not self._queue.empty():
                more = self._queue.get_nowait()
                if more is None:
                    last = True
                    break
                items.append(more)
            if not await self._commit_items(items):
                return  # stopping while the store was down: nothing committed, re-read on restart
            del items
            if last:
                return

    async def _commit_items(self, items: list[_Decoded]) -> bool:
        """Apply, deliver and commit decoded batches (in order); False if stopped before applying."""
        parts = [i.result.matches for i in items]
        matched = [len(p) for p in parts]
        for i in items:  # the matches are referenced by ``parts`` alone: freed once applied
            i.result.matches = []
            i.result.excluded = []
        applied = await self._apply(parts)
        del parts
        if applied is None:
            return False
        self._count_applied(applied)
        self._uncommitted = items[-1].position  # cumulative: covers the earlier batches
        self._has_uncommitted = True
        created = applied.created
        if created:
            self._outbox_dirty = True
        await self._deliver_and_commit(force=bool(created))
        done = time.perf_counter()
        for i, count in zip(items, matched, strict=True):
            self.metrics.batch_seconds.observe(done - i.started)
            self.metrics.batch_messages.observe(i.messages)
            self.stats["batches"] += 1
            self.stats["messages"] += i.result.messages
            self.stats["matches"] += count
        return True

    async def _deliver_and_commit(self, *, force: bool = False) -> None:
        async with self._delivery_lock:
            await self._deliver_unlocked(force=force)
            await self._commit_if_delivered()

    async def _apply(self, parts: list[list[Match]]) -> ApplyResult | None:
        """The store's ``apply_many`` of the non-empty parts, retried while the store is down."""
        parts = [p for p in parts if p]
        if not parts:
            # Nothing matched: no store call, no transaction. The store keeps nothing per batch
            # (apply would only advance the window to now, which the tick does), so the position
            # is committed as soon as the outbox is empty.
            return ApplyResult()
        backoff = Backoff()
        while True:
            try:
                # apply_many even for one batch: it counts the alerts it creates without holding them.
                applied = await self.store.apply_many(parts, self.clock())
                self._store_ok = True
                return applied
            except StoreUnavailable as exc:
                self._store_ok = False
                self.metrics.store_errors.labels(operation="apply").inc()
                if self._stopping.is_set():
                    return None
                delay = backoff.next_delay()
                log.warning("store_unavailable", error=str(exc), retry_in_s=delay)
                await self._sleep(delay)

    async def _tick(self) -> None:
        self._last_tick = time.monotonic()
        now = self.clock()
        try:
            applied = await self.store.tick(now)
            self._store_ok = True
        except StoreUnavailable as exc:
            self._store_ok = False
            self._ready()
            self.metrics.store_errors.labels(operation="tick").inc()
            log.warning("store_unavailable", error=str(exc))
            return
        self.metrics.last_tick.set(now / TICKS_PER_SECOND)
        self._ready()  # keeps rmmwatch_ready{component} current without anyone probing /readyz
        self._count_applied(applied)
        # Every tick looks at the outbox: a shared store may hand over alerts another replica left.
        self._outbox_dirty = True
        await self._deliver(force=bool(applied.created))
        if self._last_tick - self._last_stats >= 15 * self.tick_interval_s:
            self._last_stats = self._last_tick
            await self._refresh_state_gauges()

    async def _refresh_state_gauges(self) -> None:
        try:
            stats = await self.store.stats()
        except StoreUnavailable:
            return
        for rule in self.rules:
            entry = stats.get(rule.id)
            self.metrics.state_groups.labels(rule=rule.id).set(entry.groups if entry else 0)
            self.metrics.state_events.labels(rule=rule.id).set(entry.events if entry else 0)

    # -- delivery and commit ------------------------------------------------------------
    async def _deliver(self, *, force: bool = False) -> bool:
        """Deliver outbox alerts to every sink; True when the outbox is empty."""
        async with self._delivery_lock:
            return await self._deliver_unlocked(force=force)

    async def _deliver_unlocked(self, *, force: bool = False) -> bool:
        if not self._outbox_dirty and not self._pending_alerts:
            return True  # nothing was written to the outbox since it was last found empty
        if not force and time.monotonic() < self._next_delivery:
            return False
        while True:
            try:
                alerts = await self.store.pending_alerts(500)
            except StoreUnavailable:
                self._store_ok = False
                return False
            self._pending_alerts = len(alerts)
            self.metrics.outbox_pending.set(len(alerts))
            if not alerts:
                self._delivery_backoff.reset()
                self._outbox_dirty = False
                return True
            for sink in self.sinks:
                try:
                    await sink.send(alerts)
                except SinkError as exc:
                    self.metrics.sink_failures.labels(sink=sink.name).inc()
                    delay = self._delivery_backoff.next_delay()
                    self._next_delivery = time.monotonic() + delay
                    log.warning("sink_failed", sink=sink.name, error=str(exc), alerts=len(alerts), retry_in_s=delay)
                    return False
                for alert in alerts:
                    self.metrics.alerts.labels(rule=alert.rule_id, kind=alert.kind, sink=sink.name).inc()
            try:
                await self.store.mark_sent([a.key for a in alerts])
            except StoreUnavailable:
                self._store_ok = False
                return False
            self._observe_delivered(alerts)

    def _observe_delivered(self, alerts: Sequence[Alert]) -> None:
        now = self.clock()
        for alert in alerts:
            self.stats["alerts"] += 1
            if alert.kind == "end":
                continue
            self.metrics.event_to_alert.observe(max(0.0, (now - alert.event_ticks) / TICKS_PER_SECOND))
            self.metrics.seen_to_alert.observe(max(0.0, (now - alert.seen_ticks) / TICKS_PER_SECOND))

    async def _commit_if_delivered(self) -> None:
        if not self._has_uncommitted or self._pending_alerts:
            return
        try:
            await self.source.commit(self._uncommitted)
        except SourceUnavailable as exc:
            log.warning("commit_failed", error=str(exc))
            self._commit_failed = True
            return  # kept: retried by the loop, or covered by the next batch's later position
        self._commit_failed = False
        self._has_uncommitted = False
        self.metrics.commits.inc()

    # -- accounting ---------------------------------------------------------------------
    def _count(self, result: BatchResult) -> None:
        m = self.metrics
        source = self.source.name
        m.messages.labels(source=source).inc(result.messages)
        m.message_bytes.labels(source=source).inc(result.bytes)
        if result.candidates:
            m.parsed.inc(result.candidates)
        if result.records:
            m.records.inc(result.records)
        if result.other_tables:
            m.other_tables.inc(result.other_tables)
        if result.matches:
            per_rule: dict[str, int] = {}
            for match in result.matches:
                per_rule[match.rule.id] = per_rule.get(match.rule.id, 0) + 1
            for rule_id, count in per_rule.items():
                m.matches.labels(rule=rule_id).inc(count)
        for excluded in result.excluded:
            m.excluded.labels(rule=excluded.match.rule.id, exclusion=excluded.exclusion.name).inc()

    def _count_applied(self, applied: ApplyResult) -> None:
        m = self.metrics
        for rule_id, count in applied.duplicates_by_rule.items():
            m.duplicates.labels(rule=rule_id).inc(count)
        for rule_id, count in applied.out_of_window_by_rule.items():
            m.out_of_window.labels(rule=rule_id).inc(count)
        for rule_id, count in applied.future_by_rule.items():
            m.future_dated.labels(rule=rule_id).inc(count)
        for (rule_id, kind), count in applied.alert_counts.items():
            m.alerts_created.labels(rule=rule_id, kind=kind).inc(count)

    async def _dead_letter(self, batch: Batch, result: BatchResult) -> None:
        if not result.problems:
            return
        letters: list[DeadLetter] = []
        for index, problem in result.problems:
            self.metrics.decode_errors.labels(reason=problem.reason).inc()
            origin = batch.locate(index)
            allowed, suppressed = self._problem_logs.allow(problem.reason)
            if allowed:
                log.warning(
                    "bad_input",
                    reason=problem.reason,
                    detail=problem.detail,
                    record=problem.record,
                    suppressed_since_last=suppressed,
                    **origin,
                )
            letters.append(DeadLetter(problem.reason, problem.detail, origin, problem.record, batch.messages[index]))
        await self.dead_letters.send(letters)
        self.metrics.dead_letters.labels(destination=self.dead_letters.name).inc(len(letters))

    def _log_excluded(self, result: BatchResult) -> None:
        for excluded in result.excluded:
            allowed, suppressed = self._excluded_logs.allow(excluded.match.rule.id)
            if allowed:
                trigger = excluded.match.trigger
                log.info(
                    "excluded",
                    rule=excluded.match.rule.id,
                    exclusion=excluded.exclusion.name,
                    DeviceId=trigger.get("DeviceId"),
                    DeviceName=trigger.get("DeviceName"),
                    Timestamp=trigger.get("Timestamp"),
                    ReportId=trigger.get("ReportId"),
                    FileName=trigger.get("FileName"),
                    ProcessCommandLine=trigger.get("ProcessCommandLine"),
                    InitiatingProcessFileName=trigger.get("InitiatingProcessFileName"),
                    AccountName=trigger.get("AccountName"),
                    suppressed_since_last=suppressed,
                )
