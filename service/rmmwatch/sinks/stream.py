"""Items as JSON lines: on stdout, or appended to a file (flushed and fsynced per batch)."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence
from typing import IO

from rmmwatch.alerts import Alert
from rmmwatch.sinks.base import SinkError


class JsonLinesFile:
    """An append-only file of JSON lines: each ``append`` is written, flushed and fsynced, or SinkError.

    The jsonl sinks are such files: the alert sink (:class:`JsonlSink`) and the dead letters
    (``sinks/deadletter.py``) each add a ``send`` that appends their own lines."""

    name = "jsonl"
    #: What error messages call this file.
    what = "jsonl file"

    def __init__(self, path: str) -> None:
        self.path = path
        self._file: IO[bytes] | None = None

    async def open(self) -> None:
        try:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            self._file = open(self.path, "ab")  # noqa: SIM115  (kept open for the sink's life)
        except OSError as exc:
            raise SinkError(f"{self.what} {self.path}: {exc.strerror or exc}") from None

    async def append(self, lines: Sequence[bytes]) -> None:
        file = self._file
        if file is None:
            raise SinkError(f"{self.what} is not open")
        data = b"".join(line + b"\n" for line in lines)

        def write() -> None:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())

        try:
            await asyncio.to_thread(write)
        except (OSError, ValueError) as exc:  # ValueError: the file was closed under us
            raise SinkError(f"{self.what} {self.path}: {getattr(exc, 'strerror', None) or exc}") from None

    async def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class StdoutSink:
    """One alert per line on stdout (the demo and pipe-to-anything sink)."""

    name = "stdout"

    def __init__(self, stream: IO[bytes] | None = None) -> None:
        self._stream = stream

    async def open(self) -> None:
        if self._stream is None:
            self._stream = sys.stdout.buffer

    async def send(self, alerts: Sequence[Alert]) -> None:
        assert self._stream is not None
        try:
            self._stream.write(b"".join(a.payload + b"\n" for a in alerts))
            self._stream.flush()
        except (OSError, ValueError) as exc:
            raise SinkError(f"stdout: {exc}") from None

    async def close(self) -> None:
        return None


class JsonlSink(JsonLinesFile):
    """Appends alerts to a file, one JSON document per line, fsynced before ``send`` returns."""

    what = "jsonl sink"

    async def send(self, alerts: Sequence[Alert]) -> None:
        await self.append([a.payload for a in alerts])
