"""Replay from a file (NDJSON, or one JSON document) or stdin, optionally following growth.

Each non-empty line is one message (CRLF or LF). A stream that starts with one JSON document
over many lines (a pretty-printed Event Hubs body, an Advanced Hunting export: its first line
leaves a ``{`` or ``[`` open) is read as a document: one message when it fits the limit, else
one message per element of its array; what follows the document is read as lines
(``sources/framing.py`` says how). UTF-8 with or without a byte-order mark and UTF-16
(PowerShell's ``Out-File``) are read alike. Reading and framing happen in worker threads, a
chunk at a time, so a huge line or a slow disk never blocks the loop, and a line or an element
is held only up to the limit.

The position is an offset in the UTF-8 stream (after a BOM, after transcoding UTF-16) and a
line number; with a checkpoint (``sources/checkpoint.py``) it survives restarts, so a killed
replay resumes where it committed. Inside a split document the position stays at the
document's start (its elements have no resumable boundary): a restart re-reads it, and the
idempotent store absorbs the repeats.

Following (``--follow``) reads lines only (a document is what a finished export is). A file
that shrinks was truncated, and one whose path now names another file was rotated: reading
starts again at the new content's first byte, and positions of the old content are never
committed after it (they carry the content's generation).
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from collections import deque
from pathlib import Path
from typing import IO, Any

import orjson

from rmmwatch.logging import get_logger
from rmmwatch.sources.base import Batch, LocalSource
from rmmwatch.sources.checkpoint import Checkpoint, Saved
from rmmwatch.sources.framing import UTF8, DocumentFramer, Frame, LineFramer, Transcoder, sniff, starts_a_document

log = get_logger("rmmwatch.sources.file")

_CHUNK = 1 << 20
DEFAULT_MAX_MESSAGE_BYTES = 1_048_576


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
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self.path = path
        self.stdin = path == "-"
        self.name = "stdin" if self.stdin else "file"
        self.follow = follow and not self.stdin  # stdin ends at its EOF
        self.checkpoint = Checkpoint(Path(checkpoint), path) if checkpoint and not self.stdin else None
        self.max_messages = max_messages
        self.poll_s = poll_s
        self.limit = max_message_bytes
        self._reader = _Reader(path, follow=self.follow)
        self._framing = _Framing(self.limit, follow=self.follow)
        self._frames: deque[Frame] = deque()
        self._generation = 0  # the file's content: a truncation or a rotation starts a new one
        self._finished = False  # the framers were told the input ended
        self._done = False

    @property
    def exhausted(self) -> bool:
        return self._done

    def at_eof(self) -> bool:
        """Whether the input has ended (a file not followed, or stdin closed)."""
        return self._reader.eof

    def ready(self) -> tuple[bool, str]:
        opened = self._reader.opened
        return (opened, "reading" if opened else "not started")

    async def start(self) -> None:
        saved = self.checkpoint.restore() if self.checkpoint is not None else Saved()
        size = self._reader.open()
        if saved.offset and size is not None and saved.offset + saved.bom > size:
            log.warning("checkpoint_beyond_end", path=self.path, checkpoint=saved.offset, size=size)
            saved = Saved()
        if saved.offset:
            self._framing.resume(saved)
            self._reader.seek(saved.offset + saved.bom if saved.encoding == UTF8 else saved.bom)

    # -- reading ------------------------------------------------------------------------------
    async def fetch(self, timeout_s: float) -> Batch | None:
        if await self._idle_while_paused(timeout_s):
            return None
        if not self._reader.opened or self._done:
            return None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        frames: list[Frame] = []
        while len(frames) < self.max_messages:
            if self._frames:
                frames.append(self._frames.popleft())
                continue
            if self._reader.restarted:
                if frames:
                    break  # what was read of the old content goes first, with its own generation
                self._restart()
                continue
            if self.at_eof():
                if self._finished:
                    self._done = True
                    break
                self._finished = True
                self._frames.extend(await asyncio.to_thread(self._framing.take, b"", True))
                continue
            raw = await self._reader.read(0 if frames else max(0.0, deadline - loop.time()), self.poll_s)
            if raw is None:
                if self.at_eof():
                    continue  # the last line without a newline, then stop
                break
            self._frames.extend(await asyncio.to_thread(self._framing.take, raw, False))
        if not frames:
            return None
        last = frames[-1]
        position = (last.end, last.resume_line, self._generation)
        messages = [f.message for f in frames]
        lines = [f.line for f in frames]
        path, name = self.path, self.name

        def locate(index: int) -> dict[str, Any]:
            return {"source": name, "path": path, "line": lines[index]}

        return Batch(messages, position, locate)

    def _restart(self) -> None:
        """The followed file was truncated or rotated: everything from its new first byte, as new content."""
        self._reader.restarted = False
        self._generation += 1
        self._framing = _Framing(self.limit, follow=self.follow)
        if self.checkpoint is not None:
            self.checkpoint.restart()

    # -- committing ---------------------------------------------------------------------------
    async def commit(self, position: Any) -> None:
        offset, line, generation = position
        if self.checkpoint is None or generation != self._generation:
            return  # a position of content the file no longer holds: never written over the new one's
        framing = self._framing
        await self.checkpoint.write(Saved(offset, line, framing.encoding, framing.bom))

    async def close(self) -> None:
        self._reader.close()


class _Framing:
    """Bytes read in, frames out: the encoding told once, lines or a document decided once, then framed."""

    def __init__(self, limit: int, *, follow: bool) -> None:
        self.limit = limit
        self.follow = follow
        self.encoding = UTF8
        self.bom = 0
        self._transcoder: Transcoder | None = None
        self._sniffed = False  # the encoding is known (from the first bytes, or the checkpoint)
        self._head = b""  # the first raw bytes, until there are enough to tell the encoding
        self._undecided: bytes | None = b""  # the first decoded line, until lines-or-document is decided
        self._skip = 0  # logical bytes to drop (a UTF-16 resume re-reads up to its checkpoint)
        self._lines = LineFramer(limit)
        self._document: DocumentFramer | None = None

    def resume(self, saved: Saved) -> None:
        """Go on from a checkpoint: its encoding, lines only (a document restarts from offset 0)."""
        self.encoding, self.bom = saved.encoding, saved.bom
        self._sniffed, self._undecided = True, None
        self._lines = LineFramer(self.limit, offset=saved.offset, line=saved.line)
        if self.encoding != UTF8:  # transcoded: no byte of the file maps to the offset; read up to it again
            self._transcoder = Transcoder(self.encoding)
            self._skip = saved.offset

    def take(self, raw: bytes, final: bool) -> list[Frame]:
        """Frame ``raw`` (``final``: the input ended after it)."""
        frames: list[Frame] = []
        if not self._sniffed:
            self._head += raw
            if len(self._head) < 4 and not final:
                return frames
            self.encoding, self.bom = sniff(self._head)
            self._sniffed = True
            if self.encoding != UTF8:
                self._transcoder = Transcoder(self.encoding)
            raw, self._head = self._head[self.bom :], b""
        text = self._decode(raw, final)
        if self._undecided is not None:
            self._undecided += text
            first = self._undecided
            if not (final or self.follow or b"\n" in first or len(first) > self.limit):
                return frames  # the first line is not complete yet
            self._undecided = None
            if not self.follow and starts_a_document(first.split(b"\n", 1)[0], self.limit):
                self._document = DocumentFramer(self.limit)
            text = first
        self._feed(text, frames)
        if final:
            self._finish(frames)
        return frames

    def _decode(self, raw: bytes, final: bool) -> bytes:
        text = raw if self._transcoder is None else self._transcoder.feed(raw, final=final)
        if self._skip:
            dropped = min(self._skip, len(text))
            self._skip -= dropped
            text = text[dropped:]
        return text

    def _feed(self, text: bytes, frames: list[Frame]) -> None:
        document = self._document
        if document is None:
            frames.extend(self._lines.feed(text))
            return
        self._from_document(document, document.feed(text), frames)

    def _finish(self, frames: list[Frame]) -> None:
        document = self._document
        if document is not None:
            self._from_document(document, document.finish(), frames)
        frames.extend(self._lines.finish())

    def _from_document(self, document: DocumentFramer, made: list[Frame], frames: list[Frame]) -> None:
        if not document.done:
            frames.extend(made)
            return
        self._document = None
        if not document.splitting and made and not _is_json(made[0].message):
            # Not one document after all: its lines are the messages, each judged by the decoder.
            frames.extend(self._lines.feed(made[0].message + b"\n"))
        else:
            frames.extend(made)
            rest, offset, line = document.leftover()
            self._lines = LineFramer(self.limit, offset=offset, line=line - 1)
            frames.extend(self._lines.feed(rest))


class _Reader:
    """The raw bytes: a file read in a worker thread (following it, noticing truncation and rotation), or stdin
    read by a daemon thread of its own (an idle pipe never holds the process at exit)."""

    def __init__(self, path: str, *, follow: bool) -> None:
        self.path = path
        self.stdin = path == "-"
        self.follow = follow
        self.eof = False
        self.restarted = False  # the followed file was truncated or rotated since the last read
        self._file: IO[bytes] | None = None
        self._read = 0  # bytes read from the file (truncation check)
        self._stdin: _StdinThread | None = None

    @property
    def opened(self) -> bool:
        return self._file is not None or self._stdin is not None

    def open(self) -> int | None:
        """Open the input; its size (None for stdin)."""
        if self.stdin:
            self._stdin = _StdinThread(asyncio.get_running_loop())
            return None
        try:
            self._file = open(self.path, "rb")  # noqa: SIM115  (kept open for the source's life)
        except OSError as exc:
            raise OSError(f"cannot open input {self.path}: {exc.strerror or exc}") from None
        return os.fstat(self._file.fileno()).st_size

    def seek(self, offset: int) -> None:
        assert self._file is not None
        self._file.seek(offset)
        self._read = offset

    async def read(self, timeout_s: float, poll_s: float) -> bytes | None:
        """More bytes (b"" never returned); None when nothing arrived in time. Sets ``eof`` at the end."""
        if self._stdin is not None:
            chunk = await self._stdin.read(timeout_s)
            if chunk is None:
                return None
            if not chunk:
                self.eof = True
                return None
            return chunk
        assert self._file is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            chunk = await asyncio.to_thread(self._file.read, _CHUNK)
            if chunk:
                self._read += len(chunk)
                return chunk
            if not self.follow:
                self.eof = True
                return None
            if self._replaced():
                return None
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            await asyncio.sleep(min(poll_s, remaining))

    def _replaced(self) -> bool:
        """Whether the followed path now holds other content (truncated in place, or rotated); if so, read
        it from its first byte."""
        assert self._file is not None
        try:
            now = os.stat(self.path)
        except OSError:
            return False  # rotated away and not yet re-created: keep the old file until it is
        mine = os.fstat(self._file.fileno())
        if (now.st_dev, now.st_ino) != (mine.st_dev, mine.st_ino):
            log.warning("input_rotated", path=self.path, offset=self._read)
            self._file.close()
            self._file = open(self.path, "rb")  # noqa: SIM115
        elif now.st_size < self._read:
            log.warning("input_truncated", path=self.path, offset=self._read, size=now.st_size)
            self._file.seek(0)
        else:
            return False
        self._read = 0
        self.restarted = True
        return True

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._stdin is not None:
            self._stdin.close()
            self._stdin = None


class _StdinThread:
    """Reads stdin in a daemon thread, a chunk at a time, at most a few chunks ahead of the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._chunks: asyncio.Queue[bytes] = asyncio.Queue(maxsize=4)
        self._pending: asyncio.Task[bytes] | None = None
        threading.Thread(target=self._run, name="rmmwatch-stdin", daemon=True).start()

    def _run(self) -> None:
        # os.read on the descriptor, not sys.stdin.buffer: a daemon thread blocked inside the buffered reader
        # holds its lock, and the interpreter aborts at exit when it finds the lock taken.
        try:
            descriptor: int | None = sys.stdin.fileno()
        except (AttributeError, OSError, ValueError) as exc:  # closed, or no descriptor behind it
            log.error("stdin_unreadable", error=str(exc) or type(exc).__name__)
            descriptor = None
        while True:
            try:
                chunk = os.read(descriptor, _CHUNK) if descriptor is not None else b""
            except OSError as exc:
                log.error("stdin_unreadable", error=str(exc) or type(exc).__name__)
                chunk = b""
            try:
                asyncio.run_coroutine_threadsafe(self._chunks.put(chunk), self._loop).result()
            except RuntimeError:  # the loop is gone: nobody reads any more
                return
            if not chunk:
                return

    def close(self) -> None:
        if self._pending is not None:
            self._pending.cancel()

    async def read(self, timeout_s: float) -> bytes | None:
        """The next chunk (b"" at the end), or None if none came within ``timeout_s`` (a pending get is kept)."""
        if self._pending is None:
            self._pending = asyncio.ensure_future(self._chunks.get())
        done, _ = await asyncio.wait({self._pending}, timeout=timeout_s)
        if not done:
            return None
        chunk = self._pending.result()
        self._pending = None
        return chunk


def _is_json(text: bytes) -> bool:
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return True
