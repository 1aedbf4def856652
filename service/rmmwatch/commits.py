"""The commit gate: step 5 of the commit order (docs/architecture.md).

A batch's position is held here once its matches are applied (step 3), and committed to
the source only while the outbox is empty (step 4 done), so a committed position never
covers an undelivered alert. Positions are cumulative (each source's newest position
covers every batch before it), so only the newest held position is kept. A failed commit
is kept and retried by the loop; a later batch's position supersedes it.
"""

from __future__ import annotations

from typing import Any

from rmmwatch.logging import get_logger
from rmmwatch.metrics import Metrics
from rmmwatch.sources.base import Source, SourceUnavailable

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
