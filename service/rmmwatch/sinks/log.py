"""The ``log`` alert sink: each alert as one structured log line (``--shadow-sink``'s default).

A shadow rule's alerts must be seen without paging anyone: by default they are written to
the service's own log, one ``shadow_alert`` line (level warning, so a production
``--log-level warning`` keeps them) per alert with the whole alert document under ``alert``.
Writing the line is the delivery: a log stream that cannot be written raises
:class:`SinkError`, and the alerts stay in the outbox like any sink's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from rmmwatch.alerts import Alert
from rmmwatch.logging import get_logger
from rmmwatch.sinks.base import SinkError

log = get_logger("rmmwatch.shadow")

#: Writes one log line: the event name and its fields.
Emit = Callable[..., Any]


class LogAlertSink:
    """One ``event`` log line per alert, with the alert document (the default shadow sink)."""

    name = "log"

    def __init__(self, event: str = "shadow_alert", emit: Emit | None = None) -> None:
        self.event = event
        self._emit: Emit = emit if emit is not None else log.warning

    async def open(self) -> None:
        return None

    async def send(self, alerts: Sequence[Alert]) -> None:
        try:
            for alert in alerts:
                self._emit(
                    self.event,
                    rule=alert.rule_id,
                    kind=alert.kind,
                    alert_id=alert.alert_id,
                    revision=alert.revision,
                    alert=alert.document(),
                )
        except (OSError, ValueError) as exc:  # ValueError: the stream was closed under us
            raise SinkError(f"log: {exc}") from None

    async def close(self) -> None:
        return None
