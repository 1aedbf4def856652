"""Dead-letter destinations: undecodable input kept with its reason, so nothing disappears without a trace.

``log`` (the default) keeps nothing beyond the counter and the (rate-limited) log line the
loop writes for every bad input; ``jsonl:PATH`` also appends ``{"reason", "detail",
"origin", "record", "payload_base64"}`` to a file, fsynced before the source position moves
past it; ``kafka:TOPIC`` is in ``sinks/kafka.py``. They are sinks of dead letters: the same
seam and contract suite as the alert sinks (``sinks/base.py``).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence

import orjson

from rmmwatch.model import DeadLetter
from rmmwatch.sinks.stream import JsonLinesFile


class LogOnlyDeadLetters:
    """Nothing beyond the counter and the (rate-limited) log line the loop already writes."""

    name = "log"

    async def open(self) -> None:
        return None

    async def send(self, letters: Sequence[DeadLetter]) -> None:
        return None

    async def close(self) -> None:
        return None


def dead_letter_document(letter: DeadLetter) -> bytes:
    """One dead letter as a JSON document (the payload base64-encoded: it may not be text)."""
    return orjson.dumps(
        {
            "reason": letter.reason,
            "detail": letter.detail,
            "origin": letter.origin,
            "record": letter.record,
            "payload_base64": base64.b64encode(letter.payload).decode(),
        }
    )


class JsonlDeadLetters(JsonLinesFile):
    """Appends dead letters to a JSON lines file."""

    what = "jsonl dead letters"

    async def send(self, letters: Sequence[DeadLetter]) -> None:
        await self.append([dead_letter_document(letter) for letter in letters])
