"""Delivery: outbox alerts to every sink, then marked sent; dead letters to their destination.

Step 4 of the commit order (docs/architecture.md). Alerts are read from the store's outbox
(where step 3 wrote them durably), sent to every sink, and only then marked sent; a sink
that fails leaves them in the outbox, and the next attempt waits for a backoff (0.5 s
doubling up to 30 s). The loop reads ``pending`` for backpressure and commits the source
position only once the outbox is empty, so "delivered" always comes before "committed". A
store error while reading or marking the outbox makes ``pending`` unknown, which counts as
nonzero until a read succeeds: an outbox that could not be read is never taken as empty.

Shadow mode: alerts of a shadow rule (``mode: shadow``, ``--shadow-rule``) go only to the shadow
sinks (``--shadow-sink``), those of every other rule only to the live ones (``--sink``):
:class:`AlertRoutes` says which, by the alert's rule id. Both kinds are read from the one outbox
and marked sent together once every sink of their kind took them, so the guarantees are the same
(a failing shadow sink holds the commit like a failing live one; nothing shadow reaches a pager).

Dead letters have no outbox: they are sent before their batch is handed to the commit
stage, retried with the same backoff while their destination fails (reading stops, the
batch is not committed), and counted per destination like an alert sink's failures. A
stop while they cannot be delivered leaves the batch uncommitted: the next run re-reads
it and dead-letters it again, so undecodable input never disappears without a trace.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Literal

from rmmwatch.alerts import Alert
from rmmwatch.kql.datetimes import TICKS_PER_SECOND
from rmmwatch.logging import get_logger
from rmmwatch.metrics import Metrics
from rmmwatch.model import Clock, DeadLetter
from rmmwatch.retry import Backoff
from rmmwatch.sinks.base import AlertSink, DeadLetterSink, SinkError
from rmmwatch.stores.base import Store, StoreUnavailable

log = get_logger("rmmwatch.delivery")

#: Alerts read from the outbox per round; a round repeats until the outbox is empty.
OUTBOX_PAGE = 500


@dataclass(frozen=True, slots=True)
class AlertRoutes:
    """Which sinks take which alerts: a shadow rule's to ``shadow`` only, every other one's to ``live`` only."""

    live: Sequence[AlertSink]
    shadow: Sequence[AlertSink] = ()
    #: The ids of the rules whose mode is shadow.
    shadow_rules: frozenset[str] = frozenset()

    @property
    def every_sink(self) -> list[AlertSink]:
        """Every sink, live then shadow (to open and close them)."""
        return [*self.live, *self.shadow]

    def sink_names(self) -> list[str]:
        return [s.name for s in self.live] + [f"shadow:{s.name}" for s in self.shadow]

    def split(self, alerts: Sequence[Alert]) -> tuple[list[Alert], list[Alert]]:
        """``alerts`` as (live, shadow), each in outbox order."""
        live: list[Alert] = []
        shadow: list[Alert] = []
        for alert in alerts:
            (shadow if alert.rule_id in self.shadow_rules else live).append(alert)
        return live, shadow


@dataclass(eq=False, kw_only=True)
class Delivery:
    """Owns the outbox's way out: which alerts wait, when to try again, and what was delivered."""

    store: Store
    #: The alert sinks: a plain sequence (every alert to each), or routes (live and shadow sinks).
    sinks: Sequence[AlertSink] | AlertRoutes
    dead_letters: DeadLetterSink
    metrics: Metrics
    clock: Clock
    on_store_error: Callable[[], None]
    #: How far to count waiting alerts when a sink fails (the backpressure limit).
    count_up_to: int = OUTBOX_PAGE
    backoff: Backoff = field(init=False, default_factory=Backoff)
    #: Held while alerts go out and while the position they cover is committed.
    lock: asyncio.Lock = field(init=False, default_factory=asyncio.Lock)
    #: Alerts found waiting in the outbox at the last look; at least 1 while the last look failed (unknown).
    pending: int = field(init=False, default=0)
    delivered: int = field(init=False, default=0)
    _next_attempt: float = field(init=False, default=0.0)
    _dirty: bool = field(init=False, default=True)  # at start, alerts of a previous run may wait in the outbox
    #: Counts :meth:`outbox_changed` calls: a read that started before a change cannot clear ``_dirty``.
    _changes: int = field(init=False, default=0)

    routes: AlertRoutes = field(init=False)

    def __post_init__(self) -> None:
        # The caller's sequences, copied: the sinks are fixed for the run.
        routes = self.sinks if isinstance(self.sinks, AlertRoutes) else AlertRoutes(self.sinks)
        self.routes = AlertRoutes(list(routes.live), list(routes.shadow), frozenset(routes.shadow_rules))
        self.sinks = self.routes.live

    @property
    def every_sink(self) -> list[AlertSink]:
        """Live and shadow sinks alike (to open and close them)."""
        return self.routes.every_sink

    def outbox_changed(self) -> None:
        """Something may have been written to the outbox (an apply, a tick, another replica)."""
        self._dirty = True
        self._changes += 1

    def due_in(self) -> float:
        """Seconds until the next attempt after a failure is due (0: now)."""
        return max(0.0, self._next_attempt - time.monotonic())

    async def deliver(self, *, force: bool = False) -> bool:
        """Deliver outbox alerts to every sink; True when the outbox is empty."""
        async with self.lock:
            return await self.deliver_locked(force=force)

    async def deliver_locked(self, *, force: bool = False) -> bool:
        """:meth:`deliver` for a caller that holds :attr:`lock`. ``force`` ignores the backoff."""
        if not self._dirty and not self.pending:
            return True  # nothing was written to the outbox since it was last found empty
        if not force and time.monotonic() < self._next_attempt:
            return False
        while True:
            changes = self._changes
            try:
                alerts = await self.store.pending_alerts(OUTBOX_PAGE)
            except StoreUnavailable:
                self._store_failed()
                return False
            self.pending = len(alerts)
            self.metrics.outbox_pending.set(len(alerts))
            if not alerts:
                self.backoff.reset()
                # Clean only if nothing was written since this read began: an apply that ran while the read
                # was in flight (a round trip, a thread) may have written alerts its snapshot does not hold.
                self._dirty = self._changes != changes
                return True
            live, shadow = self.routes.split(alerts)
            if not await self._send(self.routes.live, live, "live", len(alerts)):
                return False
            if not await self._send(self.routes.shadow, shadow, "shadow", len(alerts)):
                return False
            try:
                await self.store.mark_sent([a.key for a in alerts])
            except StoreUnavailable:
                self._store_failed()
                return False
            self._observe(alerts)

    async def _send(
        self, sinks: Sequence[AlertSink], alerts: Sequence[Alert], mode: Literal["live", "shadow"], page: int
    ) -> bool:
        """``alerts`` to each of ``sinks`` (a shadow sink's failures are labelled ``shadow:<name>``)."""
        if not alerts:
            return True
        for sink in sinks:
            try:
                await sink.send(alerts)
            except SinkError as exc:
                name = sink.name if mode == "live" else f"shadow:{sink.name}"
                delay = self._failed(name, exc)
                log.warning("sink_failed", sink=name, error=str(exc), alerts=len(alerts), retry_in_s=delay)
                await self._count_waiting(page)
                return False
            for alert in alerts:
                self.metrics.alerts.labels(rule=alert.rule_id, kind=alert.kind, sink=sink.name, mode=mode).inc()
        return True

    def _store_failed(self) -> None:
        """The outbox could not be read (or marked): what waits in it is unknown until the next successful read.

        Unknown counts as waiting: ``pending`` is at least 1, so the commit gate holds the position and the loop
        retries delivery. Keeping the last count instead (0 after an empty read) would let a batch whose apply
        just wrote an alert be committed past it."""
        self.on_store_error()
        self.pending = max(self.pending, 1)
        self._dirty = True

    async def _count_waiting(self, page: int) -> None:
        """After a failure: how many alerts wait, beyond the page read (backpressure compares it to its limit)."""
        if page < OUTBOX_PAGE or self.count_up_to <= page:
            return
        try:
            self.pending = await self.store.pending_count(self.count_up_to)
        except StoreUnavailable:
            self.on_store_error()
            return
        self.metrics.outbox_pending.set(self.pending)

    def _failed(self, sink: str, exc: SinkError) -> float:
        self.metrics.sink_failures.labels(sink=sink).inc()
        delay = self.backoff.next_delay()
        self._next_attempt = time.monotonic() + delay
        return delay

    def _observe(self, alerts: Sequence[Alert]) -> None:
        now = self.clock()
        for alert in alerts:
            self.delivered += 1
            if alert.kind == "end":
                continue
            self.metrics.event_to_alert.observe(max(0.0, (now - alert.event_ticks) / TICKS_PER_SECOND))
            self.metrics.seen_to_alert.observe(max(0.0, (now - alert.seen_ticks) / TICKS_PER_SECOND))

    async def dead_letter(self, letters: Sequence[DeadLetter], stopping: asyncio.Event) -> bool:
        """Send ``letters`` until their destination takes them; False if stopped first."""
        if not letters:
            return True
        destination = self.dead_letters
        label = f"dead-letter:{destination.name}"
        backoff = Backoff(self.backoff.first_s, self.backoff.cap_s)
        while True:
            try:
                await destination.send(letters)
            except SinkError as exc:
                self.metrics.sink_failures.labels(sink=label).inc()
                delay = backoff.next_delay()
                log.warning("dead_letter_failed", sink=label, error=str(exc), letters=len(letters), retry_in_s=delay)
                if stopping.is_set():
                    return False
                with suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), timeout=delay)
                continue
            self.metrics.dead_letters.labels(destination=destination.name).inc(len(letters))
            return True
