"""The source seam: batches of raw message bytes with an opaque position to commit.

Nothing above a source knows its transport. The loop commits a position only after the
batch's state and alerts are durable and delivered (the commit order, docs/architecture.md §2), and a
source resumes from its last committed position after a restart.

Beside the protocol, what several sources share: :class:`LocalSource` (the sources outside any group) and
:func:`cancel` (ending a source's background task). The partitioned sources share their bookkeeping through
``sources/partitions.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Protocol


class SourceUnavailable(Exception):
    """The source cannot be reached (at start: fatal, with the reason; at commit: retried)."""


@dataclass(slots=True)
class Batch:
    """Raw messages, the position after them, and a way to say where message ``i`` came from."""

    messages: Sequence[bytes]
    position: Any
    locate: Callable[[int], dict[str, Any]]


class Source(Protocol):
    """Yields batches, commits positions."""

    name: str

    async def start(self) -> None:
        """Connect, join the group, restore positions."""

    async def fetch(self, timeout_s: float) -> Batch | None:
        """The next batch, or None if nothing arrived within ``timeout_s``."""

    @property
    def exhausted(self) -> bool:
        """True when a finite source has delivered everything (replay without --follow)."""

    async def commit(self, position: Any) -> None:
        """Make ``position`` the resume point (idempotent; later positions supersede)."""

    def ready(self) -> tuple[bool, str]:
        """Readiness and a short reason."""

    def problem(self) -> str | None:
        """A fatal condition found while running (for example: a second replica on an exclusive store)."""

    def pause(self) -> None:
        """Stop delivering messages (backpressure); ``fetch`` keeps the connection alive and returns None."""

    def resume(self) -> None:
        """Deliver messages again."""

    async def close(self) -> None:
        """Leave the group, close connections (idempotent)."""


class LocalSource:
    """What the sources outside any group share (file, stdin, synthetic): nothing fatal to find while running, and
    pause as a flag that ``fetch`` honours through :meth:`_idle_while_paused`."""

    _paused = False

    def problem(self) -> str | None:
        return None

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> None:
        self._paused = False

    async def _idle_while_paused(self, timeout_s: float) -> bool:
        """Whether paused; if so, after idling a little of ``timeout_s`` (``fetch`` then returns None)."""
        if not self._paused:
            return False
        await asyncio.sleep(min(timeout_s, 0.1))
        return True


async def cancel(task: asyncio.Task[Any] | None) -> None:
    """Cancel a background task of a source (if any) and wait until it has ended, whatever it raised."""
    if task is None:
        return
    task.cancel()
    with suppress(asyncio.CancelledError, Exception):
        await task
