"""The sink seam: deliver a batch of outbox alerts, or raise :class:`SinkError`.

``send`` returning means every alert in the batch is delivered (durably, where the sink
can tell); only then does the loop mark them sent. Delivery is at-least-once: a crash
between delivery and marking re-sends the same ``(alert_id, revision)`` byte-for-byte.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from rmmwatch.alerts import Alert


class SinkError(Exception):
    """Delivery failed; the alerts stay in the outbox and are retried."""


class Sink(Protocol):
    """An alert destination."""

    name: str

    async def open(self) -> None:
        """Prepare (open files, connect)."""

    async def send(self, alerts: Sequence[Alert]) -> None:
        """Deliver all of ``alerts`` or raise SinkError."""

    async def close(self) -> None:
        """Flush and release (idempotent)."""
