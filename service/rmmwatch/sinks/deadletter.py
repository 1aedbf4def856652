"""Dead letters: undecodable input kept with its reason, so nothing disappears without a trace.

``log`` (the default) counts and logs each one (rate-limited); ``jsonl:PATH`` also appends
``{"reason", "detail", "origin", "record", "payload_base64"}`` to a file, fsynced before the
source position moves past it. (The Kafka dead-letter topic lives with the Kafka source.)
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, Any, Protocol

import orjson


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One undecodable message or record."""

    reason: str
    detail: str
    origin: dict[str, Any]
    record: int | None
    payload: bytes


class DeadLetterSink(Protocol):
    name: str

    async def open(self) -> None: ...

    async def send(self, letters: Sequence[DeadLetter]) -> None: ...

    async def close(self) -> None: ...


class LogOnlyDeadLetters:
    """Nothing beyond the counter and the (rate-limited) log line the loop already writes."""

    name = "log"

    async def open(self) -> None:
        return None

    async def send(self, letters: Sequence[DeadLetter]) -> None:
        return None

    async def close(self) -> None:
        return None


class JsonlDeadLetters:
    """Appends dead letters to a JSON lines file."""

    name = "jsonl"

    def __init__(self, path: str) -> None:
        self.path = path
        self._file: IO[bytes] | None = None

    async def open(self) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        self._file = open(self.path, "ab")  # noqa: SIM115

    async def send(self, letters: Sequence[DeadLetter]) -> None:
        file = self._file
        assert file is not None
        data = b"".join(
            orjson.dumps(
                {
                    "reason": letter.reason,
                    "detail": letter.detail,
                    "origin": letter.origin,
                    "record": letter.record,
                    "payload_base64": base64.b64encode(letter.payload).decode(),
                }
            )
            + b"\n"
            for letter in letters
        )

        def write() -> None:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())

        await asyncio.to_thread(write)

    async def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
