"""The sink seam: deliver a batch of items (alerts, or dead letters), or raise :class:`SinkError`.

``send`` returning means every item in the batch is delivered (durably, where the sink can
tell); only then does the loop mark alerts sent or move the source position past dead
letters. Delivery is at-least-once: a crash between delivery and marking re-sends the same
``(alert_id, revision)`` byte-for-byte. Any failure, whatever its cause (a refused
connection, a hostile reply, a full disk), is a :class:`SinkError`: the loop counts it,
keeps the items, and retries with backoff. Alert sinks and dead-letter destinations share
this seam and its contract suite (tests/contract/test_sink_contract.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar

from rmmwatch.alerts import Alert
from rmmwatch.model import DeadLetter

Item_contra = TypeVar("Item_contra", contravariant=True)


class SinkError(Exception):
    """Delivery failed; the items are kept (alerts in the outbox, dead letters uncommitted) and retried."""


class Sink(Protocol[Item_contra]):
    """A destination for items of one kind."""

    name: str

    async def open(self) -> None:
        """Prepare (open files, connect); a SinkError here stops the service at start."""

    async def send(self, items: Sequence[Item_contra], /) -> None:
        """Deliver all of ``items`` or raise SinkError."""

    async def close(self) -> None:
        """Flush and release (idempotent)."""


#: An alert destination (stdout, jsonl, webhook, kafka).
AlertSink = Sink[Alert]
#: A dead-letter destination (log, jsonl, kafka).
DeadLetterSink = Sink[DeadLetter]
