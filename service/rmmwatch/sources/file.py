"""Replay from a file (NDJSON, or one JSON document) or stdin, optionally following growth.

Each non-empty line is one message (CRLF or LF); a file whose first line is not JSON but
whose whole text is one JSON document (a pretty-printed Event Hubs body) is one message.
The position is a byte offset; with a checkpoint file it survives restarts (written
atomically: temp file, fsync, rename), so a killed replay resumes where it committed.
A checkpoint that cannot be written (a full disk) is a failed commit, retried with backoff
(``SourceUnavailable`` naming the cause): the loop goes on, the position is re-read after a
crash meanwhile, and applying it again changes nothing.
A file that shrinks while followed was truncated or rotated: reading restarts at 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from pathlib import Path
from typing import IO, Any

import orjson

from rmmwatch.logging import get_logger
from rmmwatch.sources.base import Batch, LocalSource, SourceUnavailable

log = get_logger("rmmwatch.sources.file")

_CHUNK = 1 << 20


class FileSource(LocalSource):
    """A file or stdin as a stream of messages."""

    def __init__(
        self,
        path: str,
        *,
        follow: bool = False,
        checkpoint: str | None = None,
        max_messages: int = 500,
        poll_s: float = 0.2,
    ) -> None:
        self.path = path
        self.stdin = path == "-"
        self.name = "stdin" if self.stdin else "file"
        self.follow = follow and not self.stdin  # stdin ends at its EOF
        self.checkpoint = Path(checkpoint) if checkpoint and not self.stdin else None
        self.max_messages = max_messages
        self.poll_s = poll_s
        self._file: IO[bytes] | None = None
        self._buffer = b""
        self._cursor = 0  # next unread byte of _buffer
        self._offset = 0  # file offset of _buffer[0]
        self._line = 0  # lines consumed so far
        self._eof = False
        self._done = False
        self._whole = False
        self._committed: int | None = None
        self._stdin_read: asyncio.Task[bytes] | None = None
        self._checkpoint_retry = _CheckpointRetry()

    @property
    def exhausted(self) -> bool:
        return self._done

    def at_eof(self) -> bool:
        """Whether the input has ended (a file not followed, or stdin closed)."""
        return self._eof

    def ready(self) -> tuple[bool, str]:
        return (self._file is not None, "reading" if self._file is not None else "not started")

    async def start(self) -> None:
        if self.stdin:
            self._file = sys.stdin.buffer
            return
        start = self._restore()
        try:
            self._file = open(self.path, "rb")  # noqa: SIM115  (kept open for the source's life)
        except OSError as exc:
            raise OSError(f"cannot open input {self.path}: {exc.strerror or exc}") from None
        size = os.fstat(self._file.fileno()).st_size
        if start > size:
            log.warning("checkpoint_beyond_end", path=self.path, checkpoint=start, size=size)
            start, self._line = 0, 0
        self._file.seek(start)
        self._offset = start
        if start == 0 and not self.follow:
            await self._maybe_whole_document()

    def _restore(self) -> int:
        if self.checkpoint is None or not self.checkpoint.exists():
            return 0
        try:
            saved = orjson.loads(self.checkpoint.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            log.warning("checkpoint_unreadable", checkpoint=str(self.checkpoint), error=str(exc))
            return 0
        if saved.get("path") != os.path.abspath(self.path):
            log.info("checkpoint_other_file", checkpoint=str(self.checkpoint), path=saved.get("path"))
            return 0
        self._line = int(saved.get("line", 0))
        return int(saved.get("offset", 0))

    async def _maybe_whole_document(self) -> None:
        """One pretty-printed JSON document (not NDJSON) becomes one message."""
        assert self._file is not None
        first = self._file.readline().strip()
        self._file.seek(0)
        if first[:1] not in (b"{", b"["):
            return
        try:
            orjson.loads(first)
            return  # the first line is JSON on its own: NDJSON
        except orjson.JSONDecodeError:
            pass
        whole = await asyncio.to_thread(self._file.read)
        try:
            orjson.loads(whole)
        except orjson.JSONDecodeError:
            self._file.seek(0)  # not one document either: read as lines, errors are reported per line
            return
        self._buffer = whole
        self._whole = True

    async def fetch(self, timeout_s: float) -> Batch | None:
        if await self._idle_while_paused(timeout_s):
            return None
        if self._file is None or self._done:
            return None
        if self._whole:
            return self._take_whole()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        messages: list[bytes] = []
        lines: list[int] = []
        while len(messages) < self.max_messages:
            newline = self._buffer.find(b"\n", self._cursor)
            if newline >= 0:
                text = self._buffer[self._cursor : newline].strip()
                self._cursor = newline + 1
                self._line += 1
                if text:
                    messages.append(text)
                    lines.append(self._line)
                continue
            if self._eof:
                tail = self._buffer[self._cursor :].strip()
                self._cursor = len(self._buffer)
                if tail:
                    self._line += 1
                    messages.append(tail)
                    lines.append(self._line)
                self._done = True
                break
            chunk = await self._read_more(0 if messages else max(0.0, deadline - loop.time()))
            if chunk is None:
                if self.at_eof():
                    continue  # take the last line without a newline, then stop
                break
            self._offset += self._cursor
            self._buffer = self._buffer[self._cursor :] + chunk
            self._cursor = 0
        if not messages:
            return None
        position = (self._offset + self._cursor, self._line)
        path, name = self.path, self.name

        def locate(index: int) -> dict[str, Any]:
            return {"source": name, "path": path, "line": lines[index]}

        return Batch(messages, position, locate)

    def _take_whole(self) -> Batch:
        message = self._buffer.strip()
        self._cursor = len(self._buffer)
        self._line = 1
        self._done = True
        path, name = self.path, self.name
        return Batch([message], (self._cursor, 1), lambda i: {"source": name, "path": path, "line": 1})

    async def _read_more(self, timeout_s: float) -> bytes | None:
        """More bytes (b"" never returned); None when nothing arrived in time. Sets _eof at the end."""
        assert self._file is not None
        if self.stdin:
            return await self._read_stdin(timeout_s)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            chunk = self._file.read(_CHUNK)
            if chunk:
                return chunk
            if not self.follow:
                self._eof = True
                return None
            self._check_truncation()
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            await asyncio.sleep(min(self.poll_s, remaining))

    async def _read_stdin(self, timeout_s: float) -> bytes | None:
        # A blocking read runs in a thread; a read still pending when the timeout passes is
        # kept for the next call, so no bytes are lost and the loop keeps ticking.
        assert self._file is not None
        if self._stdin_read is None:
            reader = self._file.read1  # type: ignore[attr-defined]
            self._stdin_read = asyncio.ensure_future(asyncio.to_thread(reader, _CHUNK))
        done, _ = await asyncio.wait({self._stdin_read}, timeout=timeout_s)
        if not done:
            return None
        chunk = bytes(self._stdin_read.result())
        self._stdin_read = None
        if not chunk:
            self._eof = True
            return None
        return chunk

    def _check_truncation(self) -> None:
        assert self._file is not None
        try:
            size = os.stat(self.path).st_size
        except OSError:
            return
        if size < self._offset + len(self._buffer):
            log.warning("input_truncated", path=self.path, offset=self._offset, size=size)
            self._file.seek(0)
            self._offset = 0
            self._buffer = b""
            self._cursor = 0
            self._line = 0

    async def commit(self, position: Any) -> None:
        if self.checkpoint is None:
            return
        offset, line = position
        if self._committed is not None and offset <= self._committed:
            return
        data = orjson.dumps({"path": os.path.abspath(self.path), "offset": offset, "line": line})
        retry = self._checkpoint_retry
        wait_s = retry.wait_s()
        if wait_s > 0:
            raise SourceUnavailable(
                f"checkpoint {self.checkpoint} not written ({retry.cause}); next try in {wait_s:.1f} s"
            )
        try:
            await asyncio.to_thread(_write_atomically, self.checkpoint, data)
        except OSError as exc:
            delay_s = retry.failed(exc.strerror or str(exc))
            raise SourceUnavailable(
                f"cannot write the checkpoint {self.checkpoint}: {retry.cause}; retrying in {delay_s:.1f} s"
            ) from None
        retry.succeeded()
        self._committed = offset

    async def close(self) -> None:
        if self._stdin_read is not None:
            self._stdin_read.cancel()
        if self._file is not None and not self.stdin:
            self._file.close()
        self._file = None


class _CheckpointRetry:
    """Backoff between checkpoint writes that failed: 0.5 s, 1 s, 2 s ... 30 s, reset by a success."""

    def __init__(self) -> None:
        self.failures = 0
        self.cause = ""
        self._next_try = 0.0

    def wait_s(self) -> float:
        return self._next_try - time.monotonic() if self.failures else 0.0

    def failed(self, cause: str) -> float:
        delay_s = min(30.0, 0.5 * float(1 << min(self.failures, 10)))
        self.failures += 1
        self.cause = cause
        self._next_try = time.monotonic() + delay_s
        return delay_s

    def succeeded(self) -> None:
        self.failures = 0


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError:
        with contextlib.suppress(OSError):  # a full disk: leave no partial temp file taking space
            temporary.unlink()
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
