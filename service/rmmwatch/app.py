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

Stopping (``stopping.py``): SIGTERM, SIGINT or SIGHUP finish the batches in flight, deliver
what is left and commit, within ``shutdown_timeout_s`` whatever the store and sinks do (past
it the loop is cancelled: what was not committed is re-read by the next run, undelivered
alerts stay in the outbox). A second signal stops at once, the same way.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress

from rmmwatch.accounting import Accounting
from rmmwatch.commits import CommitStage, Decoded
from rmmwatch.config import ConfigError
from rmmwatch.delivery import AlertRoutes, Delivery
from rmmwatch.events import Detector
from rmmwatch.http import HealthServer
from rmmwatch.kql.datetimes import TICKS_PER_SECOND
from rmmwatch.logging import get_logger
from rmmwatch.metrics import Metrics
from rmmwatch.model import Clock, wall_clock
from rmmwatch.retry import Backoff
from rmmwatch.rules import Rule
from rmmwatch.sinks.base import AlertSink, DeadLetterSink, SinkError
from rmmwatch.sources.base import Batch, Source, SourceUnavailable
from rmmwatch.stopping import Shutdown
from rmmwatch.stores.base import Store, StoreUnavailable

log = get_logger("rmmwatch.app")

#: Each part's close at shutdown gets at most this long.
CLOSE_TIMEOUT_S = 5.0


class App:
    """Runs a source through the detector into a store, delivering alerts, until stopped."""

    def __init__(
        self,
        *,
        rules: Sequence[Rule],
        source: Source,
        store: Store,
        sinks: Sequence[AlertSink] | AlertRoutes,
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
        self.clock = clock
        self.shutdown = Shutdown(shutdown_timeout_s)
        self.delivery = Delivery(
            store=store,
            sinks=sinks,
            dead_letters=dead_letters,
            metrics=metrics,
            clock=clock,
            on_store_error=lambda: self._store_health(False),
            count_up_to=max_pending_alerts,
        )
        self.accounting = Accounting(metrics, source.name, self.rules)
        self.commit_stage = CommitStage(
            source=source,
            store=store,
            delivery=self.delivery,
            accounting=self.accounting,
            metrics=metrics,
            clock=clock,
            shutdown=self.shutdown,
            store_health=self._store_health,
        )
        self.commits = self.commit_stage.gate
        self.http = (
            HealthServer(metrics.registry, self._live, self._ready, metrics_host, metrics_port)
            if metrics_port >= 0
            else None
        )
        self._last_loop = time.monotonic()
        self._last_tick = 0.0
        self._last_stats = 0.0
        self._store_ok = False
        self._failed = False
        self._reported_undelivered = False  # the "undelivered_alerts" line is written once
        # One thread, always the same: the prefilter's scratch space belongs to one thread at a time.
        self._detect_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rmmwatch-detect")

    @property
    def stats(self) -> dict[str, int]:
        return {**self.accounting.stats, "alerts": self.delivery.delivered}

    def stop(self) -> None:
        """Finish the batches in flight and exit, within the shutdown timeout; a second call: at once."""
        self.shutdown.request()

    # -- health -------------------------------------------------------------------------
    def _live(self) -> tuple[bool, str]:
        age = time.monotonic() - self._last_loop
        limit = max(30.0, 10 * self.tick_interval_s)
        return (age < limit, f"loop turned {age:.1f}s ago")

    def _ready(self) -> tuple[bool, str]:
        source_ok, source_detail = self.source.ready()
        ok = source_ok and self._store_ok and not self.shutdown.requested.is_set()
        self.metrics.ready.labels(component="source").set(1 if source_ok else 0)
        self.metrics.ready.labels(component="store").set(1 if self._store_ok else 0)
        return ok, f"source: {source_detail}; store: {'ok' if self._store_ok else 'unavailable'}"

    def _store_health(self, ok: bool) -> None:
        self._store_ok = ok

    # -- lifecycle ----------------------------------------------------------------------
    async def run(self) -> int:
        """Run until stopped or until a finite source is exhausted. Returns an exit code.

        Raises :class:`ConfigError` when the metrics server cannot listen where it is told to."""
        self.shutdown.guard(asyncio.current_task())
        with self.shutdown.signals():
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
                self.shutdown.closing()
                await self._close()

    async def _run_until_stopped(self) -> int:
        try:
            try:
                await self._open()
            except (SourceUnavailable, SinkError) as exc:
                log.error("cannot_start", error=str(exc))
                return 1
            if self.shutdown.requested.is_set():
                return 0
            await self.delivery.deliver(force=True)
            await self._loop()
            drained = await self._drain()
            return 1 if self._failed else drained
        except asyncio.CancelledError:
            if not self.shutdown.forced:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            if self.delivery.pending:
                self._report_undelivered()
            return 1

    async def _open(self) -> None:
        backoff = Backoff()
        while not self.shutdown.requested.is_set():
            try:
                await self.store.open()
                self._store_ok = True
                break
            except StoreUnavailable as exc:
                delay = backoff.next_delay()
                log.warning("store_unavailable", error=str(exc), retry_in_s=delay)
                self.metrics.store_errors.labels(operation="open").inc()
                await self.shutdown.sleep(delay)
        for sink in self.delivery.every_sink:
            await sink.open()
        await self.delivery.dead_letters.open()
        await self.source.start()
        log.info(
            "started",
            source=self.source.name,
            store=self.store.name,
            sinks=self.delivery.routes.sink_names(),
            rules=[r.id for r in self.rules],
            prefilter=self.detector.prefilter.describe(),
        )

    async def _close(self) -> None:
        if self._store_ok and not self.shutdown.forced:
            with suppress(Exception):
                await asyncio.wait_for(self.commit_stage.deliver_and_commit(force=True), self.shutdown.remaining())
        for closer in (
            self.source.close,
            self.delivery.dead_letters.close,
            *[s.close for s in self.delivery.every_sink],
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
        deadline = time.monotonic() + self.shutdown.remaining()
        while True:
            if await self.delivery.deliver(force=True):
                async with self.delivery.lock:
                    await self.commits.commit_if_delivered(self.delivery.pending)
                return 0
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.shutdown.requested.is_set():
                self._report_undelivered()
                return 1
            await self.shutdown.sleep(min(remaining, max(0.01, self.delivery.due_in())))

    def _report_undelivered(self) -> None:
        if not self._reported_undelivered:
            self._reported_undelivered = True
            log.error(
                "undelivered_alerts",
                pending=self.delivery.pending,
                note="they stay in the outbox (sqlite/redis) and are delivered by the next run",
            )

    # -- the loop -------------------------------------------------------------------------
    async def _loop(self) -> None:
        """Fetch and decode here; the commit stage (``commits.py``) applies, delivers and commits."""
        loop = asyncio.get_running_loop()
        stage = self.commit_stage
        committer = asyncio.create_task(stage.run(), name="rmmwatch-commit-stage")
        # The next fetch runs while a batch is decoded (three stages: fetch, decode, commit).
        prefetch: asyncio.Task[Batch | None] | None = None
        stopping = self.shutdown.requested
        try:
            # Stopping: the batch already prefetched is still decoded and committed (graceful drain).
            while not committer.done() and (not stopping.is_set() or prefetch is not None):
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
                    await stage.deliver_and_commit()
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
                if not stopping.is_set():
                    prefetch = asyncio.create_task(self.source.fetch(self._fetch_timeout()), name="rmmwatch-fetch")
                # Decode+match in its own thread: the byte prefilter (most of its time) releases the
                # GIL, so on a second core it overlaps the Kafka client's work.
                result = await loop.run_in_executor(self._detect_thread, self.detector.process, batch.messages)
                self.accounting.decoded(result)
                if result.problems:
                    letters = self.accounting.bad_input(batch, result)
                    if not await self.delivery.dead_letter(letters, stopping):
                        # Stopping with undelivered dead letters: this batch is not committed, and the run
                        # did not finish its work (exit 1, as with undelivered alerts).
                        log.error(
                            "undelivered_dead_letters",
                            letters=len(letters),
                            destination=self.delivery.dead_letters.name,
                            note="the batch is not committed: the next run reads it again",
                        )
                        self._failed = True
                        break
                decoded = Decoded(batch.position, len(batch.messages), result, started)
                del batch, result  # the raw messages, possibly megabytes, are not kept while the batch waits
                if not await stage.hand_over(decoded, committer):
                    break  # the commit stage ended (stopping while the store was down)
                del decoded  # the commit stage owns it now (and frees its matches once applied)
        finally:
            self.shutdown.finishing()  # what is left below and in the drain ends within the shutdown timeout
            if prefetch is not None:  # failing: what it fetched is not committed and is re-read on restart
                prefetch.cancel()
                with suppress(asyncio.CancelledError, Exception):
                    await prefetch
            if not committer.done():
                await stage.hand_over(None, committer)
            await committer  # re-raises what broke the commit stage

    def _fetch_timeout(self) -> float:
        """Until the next tick is due."""
        return max(0.0, min(self.tick_interval_s, self._last_tick + self.tick_interval_s - time.monotonic()))

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
