"""The service: the loop and its lifecycle, in the commit order of docs/architecture.md.

1. take a batch from the source; 2. decode+match (pure, synchronous, in its own thread);
3. ``store.apply_many``: advance the window to now, add the matches, write alerts to the
   outbox, atomically; 4. deliver outbox alerts to every sink, mark them sent
   (``delivery.py``); 5. commit the source position, only when the outbox is empty
   (``commits.py``). Between batches a wall-clock tick advances the window.

Cheaper ways through the same order: a batch without matches skips step 3 (the tick
advances the window; nothing else in the store depends on a batch); when several decoded
batches wait, the commit stage applies them in one ``apply_many`` (one transaction, one
fsync for sqlite), delivers once and commits the newest position (positions are
cumulative). The queue between the stages holds positions and matches, not raw messages.

Failures never lose data: a store error leaves the batch uncommitted and the loop retries
it with backoff; a sink error leaves alerts in the outbox (retried with backoff, and
reading pauses once ``max_pending_alerts`` wait); a crash re-reads from the last committed
position, and apply is idempotent.

Stopping: SIGTERM, SIGINT or SIGHUP finish the batches in flight, deliver what is left and
commit, within ``shutdown_timeout_s`` whatever the store and sinks do (past it the loop is
cancelled: what was not committed is re-read by the next run, undelivered alerts stay in
the outbox). A second signal stops at once, the same way.
"""

from __future__ import annotations

import asyncio
import faulthandler
import io
import signal
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from rmmwatch.accounting import Accounting
from rmmwatch.commits import CommitGate
from rmmwatch.config import ConfigError
from rmmwatch.delivery import Delivery
from rmmwatch.events import Detector
from rmmwatch.http import HealthServer
from rmmwatch.kql.datetimes import TICKS_PER_SECOND
from rmmwatch.logging import get_logger
from rmmwatch.metrics import Metrics
from rmmwatch.model import BatchResult, Clock, Match, wall_clock
from rmmwatch.retry import Backoff
from rmmwatch.rules import Rule
from rmmwatch.sinks.base import AlertSink, DeadLetterSink, SinkError
from rmmwatch.sources.base import Batch, Source, SourceUnavailable
from rmmwatch.stores.base import ApplyResult, Store, StoreUnavailable

log = get_logger("rmmwatch.app")

#: At most this many queued batches are applied in one store call (group commit).
GROUP_COMMIT_MAX = 8
#: Signals that stop the service gracefully (SIGHUP too, until it means "reload the rules").
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
#: Each part's close at shutdown gets at most this long.
CLOSE_TIMEOUT_S = 5.0


@dataclass(slots=True)
class _Decoded:
    """A batch handed to the commit stage: its position and what decode+match found (the raw
    messages are dropped here: dead letters were written before, and nothing later reads them)."""

    position: Any
    messages: int
    result: BatchResult
    started: float


class App:
    """Runs a source through the detector into a store, delivering alerts, until stopped."""

    def __init__(
        self,
        *,
        rules: Sequence[Rule],
        source: Source,
        store: Store,
        sinks: Sequence[AlertSink],
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
        self.metrics = metrics
        self.detector = detector
        self.tick_interval_s = tick_interval_s
        self.max_pending_alerts = max_pending_alerts
        self.shutdown_timeout_s = shutdown_timeout_s
        self.clock = clock
        self.delivery = Delivery(
            store=store,
            sinks=sinks,
            dead_letters=dead_letters,
            metrics=metrics,
            clock=clock,
            on_store_error=self._store_failed,
            count_up_to=max_pending_alerts,
        )
        self.commits = CommitGate(source, metrics)
        self.accounting = Accounting(metrics, source.name, self.rules)
        self.http = (
            HealthServer(metrics.registry, self._live, self._ready, metrics_host, metrics_port)
            if metrics_port >= 0
            else None
        )
        self._stopping = asyncio.Event()
        self._stop_deadline: float | None = None
        self._task: asyncio.Task[Any] | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._cancelled_by_stop = False
        self._closing = False  # past the loop: the shutdown is bounded on its own, nothing is cancelled
        self._last_loop = time.monotonic()
        self._last_tick = 0.0
        self._last_stats = 0.0
        self._store_ok = False
        self._failed = False
        # One thread, always the same: the prefilter's scratch space belongs to one thread at a time.
        self._detect_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rmmwatch-detect")
        self._queue: asyncio.Queue[_Decoded | None] = asyncio.Queue(maxsize=2)

    @property
    def stats(self) -> dict[str, int]:
        return {**self.accounting.stats, "alerts": self.delivery.delivered}

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

    def _store_failed(self) -> None:
        self._store_ok = False

    # -- stopping -------------------------------------------------------------------------
    def stop(self) -> None:
        """Finish the batches in flight and exit, within the shutdown timeout; a second call: at once."""
        if not self._stopping.is_set():
            log.info("stopping", timeout_s=self.shutdown_timeout_s)
            self._stopping.set()
            self._stop_deadline = time.monotonic() + self.shutdown_timeout_s
            with suppress(RuntimeError):
                loop = asyncio.get_running_loop()
                self._watchdog = loop.call_later(self.shutdown_timeout_s, self._cancel, "shutdown_timeout")
            return
        self._cancel("stop_signal_repeated")

    def _cancel(self, why: str) -> None:
        task = self._task
        if task is not None and not task.done() and not self._cancelled_by_stop and not self._closing:
            log.warning("stopping_now", reason=why, note="what was not committed is re-read by the next run")
            self._cancelled_by_stop = True
            task.cancel()

    def _remaining(self) -> float:
        """Seconds left before the shutdown deadline (the whole timeout while not stopping)."""
        if self._stop_deadline is None:
            return self.shutdown_timeout_s
        return max(0.0, self._stop_deadline - time.monotonic())

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
        """Run until stopped or until a finite source is exhausted. Returns an exit code.

        Raises :class:`ConfigError` when the metrics server cannot listen where it is told to."""
        loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        for sig in STOP_SIGNALS:
            with suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop)
        # Diagnosis of a stuck process without a debugger: SIGUSR1 prints every thread's stack
        # (from C, even if the loop is blocked), SIGUSR2 every asyncio task's.
        with suppress(AttributeError, ValueError, RuntimeError, io.UnsupportedOperation):
            faulthandler.register(signal.SIGUSR1, all_threads=True)
        with suppress(AttributeError, NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGUSR2, self.dump_tasks)
        try:
            if self.http is not None:
                try:
                    await self.http.start()
                except OSError as exc:
                    raise ConfigError(
                        f"--metrics-host/--metrics-port: cannot listen on {self.http.host}:{self.http.port}: "
                        f"{exc.strerror or exc}"
                    ) from None
            return await self._run_until_stopped()
        finally:
            self._closing = True
            if self._watchdog is not None:
                self._watchdog.cancel()
            await self._shutdown()
            for sig in (*STOP_SIGNALS, signal.SIGUSR2):
                with suppress(AttributeError, NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)
            with suppress(AttributeError, ValueError, RuntimeError):
                faulthandler.unregister(signal.SIGUSR1)

    async def _run_until_stopped(self) -> int:
        try:
            try:
                await self._open()
            except (SourceUnavailable, SinkError) as exc:
                log.error("cannot_start", error=str(exc))
                return 1
            if self._stopping.is_set():
                return 0
            await self.delivery.deliver(force=True)
            await self._loop()
            drained = await self._drain()
            return 1 if self._failed else drained
        except asyncio.CancelledError:
            if not self._cancelled_by_stop:
                raise
            if self._task is not None:
                self._task.uncancel()
            return 1

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
        for sink in self.delivery.sinks:
            await sink.open()
        await self.delivery.dead_letters.open()
        await self.source.start()
        log.info(
            "started",
            source=self.source.name,
            store=self.store.name,
            sinks=[s.name for s in self.delivery.sinks],
            rules=[r.id for r in self.rules],
            prefilter=self.detector.prefilter.describe(),
        )

    async def _shutdown(self) -> None:
        if self._store_ok and not self._cancelled_by_stop:
            with suppress(Exception):
                await asyncio.wait_for(self._deliver_and_commit(force=True), timeout=self._remaining())
        for closer in (
            self.source.close,
            self.delivery.dead_letters.close,
            *[s.close for s in self.delivery.sinks],
            self.store.close,
        ):
            try:
                await asyncio.wait_for(closer(), timeout=CLOSE_TIMEOUT_S)
            except Exception as exc:
                log.warning("close_failed", error=str(exc) or type(exc).__name__)
        if self.http is not None:
            await self.http.stop()
        self._detect_thread.shutdown(wait=False)
        log.info("stopped", **self.stats, bad_input=dict(sorted(self.accounting.bad_input_by_reason.items())))

    async def _drain(self) -> int:
        """Deliver what is left and commit, retrying up to the shutdown deadline: 0 if all done, else 1."""
        deadline = time.monotonic() + self._remaining()
        while True:
            delivered = await self.delivery.deliver(force=True)
            if delivered:
                async with self.delivery.lock:
                    await self.commits.commit_if_delivered(self.delivery.pending)
                return 0
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._stopping.is_set():
                log.error(
                    "undelivered_alerts",
                    pending=self.delivery.pending,
                    note="they stay in the outbox (sqlite/redis) and are delivered by the next run",
                )
                return 1
            await self._sleep(min(remaining, max(0.01, self.delivery.due_in())))

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
                if self.delivery.pending or self.commits.failed:
                    # Retry what the commit stage could not finish (a sink or the source was down).
                    await self._deliver_and_commit()
                if self.delivery.pending >= self.max_pending_alerts:
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
                self.accounting.decoded(result)
                if result.problems:
                    letters = self.accounting.bad_input(batch, result)
                    if not await self.delivery.dead_letter(letters, self._stopping):
                        break  # stopping with undelivered dead letters: this batch is not committed
                decoded = _Decoded(batch.position, len(batch.messages), result, started)
                del batch, result  # the raw messages, possibly megabytes, are not kept while the batch waits
                if not await self._hand_over(decoded, committer):
                    break  # the commit stage ended (stopping while the store was down)
                del decoded  # the commit stage owns it now (and frees its matches once applied)
        finally:
            if prefetch is not None:  # failing: what it fetched is not committed and is re-read on restart
                prefetch.cancel()
                with suppress(asyncio.CancelledError, Exception):
                    await prefetch
            if not committer.done():
                await self._hand_over(None, committer)
            await committer  # re-raises what broke the commit stage

    async def _hand_over(self, item: _Decoded | None, committer: asyncio.Task[None]) -> bool:
        """Queue ``item`` for the commit stage; False if the commit stage ended while the queue was full."""
        if not self._queue.full():
            self._queue.put_nowait(item)
            return True
        put = asyncio.ensure_future(self._queue.put(item))
        await asyncio.wait({put, committer}, return_when=asyncio.FIRST_COMPLETED)
        if put.done():
            return True
        put.cancel()
        return False

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
        self.accounting.applied(applied)
        self.commits.hold(items[-1].position)  # cumulative: covers the earlier batches
        if applied.created:
            self.delivery.outbox_changed()
        await self._deliver_and_commit(force=bool(applied.created))
        done = time.perf_counter()
        for i, count in zip(items, matched, strict=True):
            self.accounting.finished(done - i.started, i.messages, count)
        return True

    async def _deliver_and_commit(self, *, force: bool = False) -> None:
        async with self.delivery.lock:
            await self.delivery.deliver_locked(force=force)
            await self.commits.commit_if_delivered(self.delivery.pending)

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
        self.accounting.applied(applied)
        # Every tick looks at the outbox: a shared store may hand over alerts another replica left.
        self.delivery.outbox_changed()
        await self.delivery.deliver(force=bool(applied.created))
        if self._last_tick - self._last_stats >= 15 * self.tick_interval_s:
            self._last_stats = self._last_tick
            await self.accounting.refresh_state(self.store)
