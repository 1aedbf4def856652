"""The commit stage: steps 3 to 5 of the commit order (docs/architecture.md §2), and its gate.

A batch's position is held here once its matches are applied (step 3), and committed to
the source only while the outbox is empty (step 4 done), so a committed position never
covers an undelivered alert. Positions are cumulative (each source's newest position
covers every batch before it), so only the newest held position is kept. A failed commit
is kept and retried by the loop; a later batch's position supersedes it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import InitVar, dataclass, field
from typing import Any

from rmmwatch.accounting import Accounting
from rmmwatch.delivery import Delivery
from rmmwatch.logging import get_logger
from rmmwatch.metrics import Metrics
from rmmwatch.model import BatchResult, Clock, Match
from rmmwatch.retry import Backoff
from rmmwatch.sources.base import Source, SourceUnavailable
from rmmwatch.stopping import Shutdown
from rmmwatch.stores.base import ApplyResult, Store, StoreUnavailable

log = get_logger("rmmwatch.commits")


class CommitGate:
    """Holds the newest applied position until everything before it is delivered."""

    def __init__(self, source: Source, metrics: Metrics) -> None:
        self.source = source
        self.metrics = metrics
        self.failed = False
        self._position: Any = None
        self._holding = False

    def hold(self, position: Any) -> None:
        """A batch is applied: its position waits for delivery (it covers every earlier batch)."""
        self._position = position
        self._holding = True

    async def commit_if_delivered(self, outbox_pending: int) -> None:
        """Commit the held position if the outbox is empty; a failure is kept for a retry."""
        if not self._holding or outbox_pending:
            return
        try:
            await self.source.commit(self._position)
        except SourceUnavailable as exc:
            log.warning("commit_failed", error=str(exc))
            self.failed = True
            return  # kept: retried by the loop, or covered by the next batch's later position
        self.failed = False
        self._holding = False
        self.metrics.commits.inc()


#: At most this many queued batches are applied in one store call (group commit).
GROUP_COMMIT_MAX = 8


@dataclass(slots=True)
class Decoded:
    """A batch handed to the commit stage: its position and what decode+match found (the raw
    messages are dropped here: dead letters were written before, and nothing later reads them)."""

    position: Any
    messages: int
    result: BatchResult
    started: float


@dataclass(eq=False, kw_only=True)
class CommitStage:
    """Steps 3 to 5 for the batches the loop decoded: apply, deliver, commit, strictly in order.

    While it waits on the store (an fsync) or the brokers (a commit), the loop already fetches
    and decodes the next batch. The queue between them is short (two batches), so a slow store
    or sink backs up into the source. When several decoded batches wait, they are applied in one
    ``apply_many`` (one transaction, one fsync for sqlite), delivered once, and the newest
    position is committed (positions are cumulative). The queue holds positions and matches,
    never the raw messages.
    """

    source: InitVar[Source]  # kept by the gate alone: only the gate commits to it
    store: Store
    delivery: Delivery
    accounting: Accounting
    metrics: Metrics
    clock: Clock
    shutdown: Shutdown
    store_health: Callable[[bool], None]
    gate: CommitGate = field(init=False)
    queue: asyncio.Queue[Decoded | None] = field(init=False)

    def __post_init__(self, source: Source) -> None:
        self.gate = CommitGate(source, self.metrics)
        self.queue = asyncio.Queue(maxsize=2)

    async def hand_over(self, item: Decoded | None, stage: asyncio.Task[None]) -> bool:
        """Queue ``item`` (None: no more); False if the stage (``stage``, running :meth:`run`) ended first."""
        if not self.queue.full():
            self.queue.put_nowait(item)
            return True
        put = asyncio.ensure_future(self.queue.put(item))
        await asyncio.wait({put, stage}, return_when=asyncio.FIRST_COMPLETED)
        if put.done():
            return True
        put.cancel()  # stopping while the store was down: the stage ended, nobody takes it
        return False

    async def run(self) -> None:
        """Take batches until None; ends early (nothing committed) if stopped while the store is down."""
        while True:
            item = await self.queue.get()
            if item is None:
                return
            # Group commit: the batches that queued up while the previous ones were applied and
            # delivered go through the store, the sinks and the source commit together.
            items = [item]
            del item
            last = False
            while len(items) < GROUP_COMMIT_MAX and not self.queue.empty():
                more = self.queue.get_nowait()
                if more is None:
                    last = True
                    break
                items.append(more)
            if not await self._commit(items):
                return
            del items
            if last:
                return

    async def _commit(self, items: list[Decoded]) -> bool:
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
        self.gate.hold(items[-1].position)  # cumulative: covers the earlier batches
        if applied.created:
            self.delivery.outbox_changed()
        await self.deliver_and_commit(force=bool(applied.created))
        done = time.perf_counter()
        for i, count in zip(items, matched, strict=True):
            self.accounting.finished(done - i.started, i.messages, count)
        return True

    async def deliver_and_commit(self, *, force: bool = False) -> None:
        """Deliver the outbox; commit the held position if it is empty afterwards."""
        async with self.delivery.lock:
            await self.delivery.deliver_locked(force=force)
            await self.gate.commit_if_delivered(self.delivery.pending)

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
                self.store_health(True)
                return applied
            except StoreUnavailable as exc:
                self.store_health(False)
                self.metrics.store_errors.labels(operation="apply").inc()
                if self.shutdown.requested.is_set():
                    return None
                delay = backoff.next_delay()
                log.warning("store_unavailable", error=str(exc), retry_in_s=delay)
                await self.shutdown.sleep(delay)
