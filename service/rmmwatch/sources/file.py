"""Replay from a file (NDJSON, or one JSON document) or stdin, optionally following growth.

Each non-empty line is one message (CRLF or LF). A stream that starts with one JSON document
over many lines (a pretty-printed Event Hubs body, an Advanced Hunting export), or with one
line longer than the message limit, is read as a document: one message when it fits the limit,
else one message per element of its array (``sources/framing.py`` says how); what follows the
document is read as lines. UTF-8 with or without a byte-order mark and UTF-16 (PowerShell's
``Out-File``) are read alike. Reading happens in a worker thread, a chunk at a time, so a
huge line or a slow disk never blocks the loop, and a line is held only up to the limit.

The position is an offset in the UTF-8 stream (after a BOM, after transcoding UTF-16) and a
line number; with a checkpoint file it survives restarts (written atomically: temp file,
fsync, rename), so a killed replay resumes where it committed. Inside a split document the
position stays at the document's start until the document is done (its elements have no
resumable boundary): a restart re-reads it, and the idempotent store absorbs the repeats. A
checkpoint that cannot be written (a full disk) is a failed commit, retried with backoff
(``SourceUnavailable`` naming the cause): the loop goes on, the position is re-read after a
crash meanwhile, and applying it again changes nothing.
A file that shrinks while followed was truncated or rotated: reading restarts at 0.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections import deque
from pathlib import Path
from typing import IO, Any

import orjson

from rmmwatch.logging import get_logger
from rmmwatch.sources.base import Batch, LocalSource
from rmmwatch.sources.checkpoint import Checkpoint, Saved
from rmmwatch.sources.framing import UTF8, DocumentFramer, Frame, LineFramer, Transcoder, sniff

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
        self._file: IO[bytes] | None = None
        self._encoding = UTF8
        self._bom = 0
        self._transcoder: Transcoder | None = None
        self._sniffed = False  # the encoding is known (from the first bytes, or the checkpoint)
        self._head = b""  # the first raw bytes, until there are enough to tell the encoding
        self._undecided: bytes | None = b""  # the first decoded line, until lines-or-document is decided
        self._skip = 0  # logical bytes to drop (a UTF-16 resume re-reads up to its checkpoint)
        self._raw_read = 0  # bytes read from the file (truncation check)
        self._lines = LineFramer(self.limit)
        self._document: DocumentFramer | None = None
        self._frames: deque[Frame] = deque()
        self._held: tuple[int, int] | None = None  # the position while inside a split document
        self._eof = False
        self._finished = False  # the framers were told the input ended
        self._done = False
        self._stdin_read: asyncio.Task[bytes] | None = None

    @property
    def exhausted(self) -> bool:
        return self._done

    def at_eof(self) -> bool:
        """Whether the input has ended (a file not followed, or stdin closed)."""
        return self._eof

    def ready(self) -> tuple[bool, str]:
        return (self._file is not None, "reading" if self._file is not None else "not started")

    # -- starting -----------------------------------------------------------------------------
    async def start(self) -> None:
        if self.stdin:
            self._file = sys.stdin.buffer
            return
        saved = self.checkpoint.restore() if self.checkpoint is not None else Saved()
        offset, line = saved.offset, saved.line
        try:
            self._file = open(self.path, "rb")  # noqa: SIM115  (kept open for the source's life)
        except OSError as exc:
            raise OSError(f"cannot open input {self.path}: {exc.strerror or exc}") from None
        size = os.fstat(self._file.fileno()).st_size
        if offset and offset + saved.bom > size:
            log.warning("checkpoint_beyond_end", path=self.path, checkpoint=offset, size=size)
            offset = 0
        if offset == 0:
            return  # the encoding and the framing are told from the first bytes
        self._encoding, self._bom = saved.encoding, saved.bom
        self._sniffed, self._undecided = True, None
        self._lines = LineFramer(self.limit, offset=offset, line=line)
        if self._encoding == UTF8:
            self._file.seek(offset + self._bom)
            self._raw_read = offset + self._bom
        else:  # transcoded: no byte of the file maps to the offset; read up to it again
            self._transcoder = Transcoder(self._encoding)
            self._file.seek(self._bom)
            self._raw_read = self._bom
            self._skip = offset

    # -- reading ------------------------------------------------------------------------------
    async def fetch(self, timeout_s: float) -> Batch | None:
        if await self._idle_while_paused(timeout_s):
            return None
        if self._file is None or self._done:
            return None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        frames: list[Frame] = []
        while len(frames) < self.max_messages:
            if self._frames:
                frames.append(self._frames.popleft())
                continue
            if self.at_eof():
                if self._finished:
                    self._done = True
                    break
                self._finished = True
                self._take(b"", final=True)
                self._finish()
                continue
            raw = await self._read_more(0 if frames else max(0.0, deadline - loop.time()))
            if raw is None:
                if self.at_eof():
                    continue  # the last line without a newline, then stop
                break
            self._take(raw, final=False)
        if not frames:
            return None
        last = frames[-1]
        position = self._held if self._held is not None else (last.end, last.line)
        messages = [f.message for f in frames]
        lines = [f.line for f in frames]
        path, name = self.path, self.name

        def locate(index: int) -> dict[str, Any]:
            return {"source": name, "path": path, "line": lines[index]}

        return Batch(messages, position, locate)

    def _take(self, raw: bytes, *, final: bool) -> None:
        """Raw bytes in: the encoding told once, then lines or a document decided once, then framed."""
        if not self._sniffed:
            self._head += raw
            if len(self._head) < 4 and not final:
                return
            self._encoding, self._bom = sniff(self._head)
            self._sniffed = True
            if self._encoding != UTF8:
                self._transcoder = Transcoder(self._encoding)
                log.info("input_transcoded", path=self.path, encoding=self._encoding)
            raw, self._head = self._head[self._bom :], b""
        text = self._decode(raw)
        if final and self._transcoder is not None:
            text += self._transcoder.feed(b"", final=True)
        if self._undecided is not None:
            self._undecided += text
            first = self._undecided
            if not (final or self.follow or b"\n" in first or len(first) > self.limit):
                return  # the first line is not complete yet
            self._undecided = None
            if not self.follow and _starts_a_document(first, self.limit):
                self._document = DocumentFramer(self.limit)
                self._held = (0, 0)
            text = first
        self._feed(text)

    def _decode(self, raw: bytes) -> bytes:
        text = raw if self._transcoder is None else self._transcoder.feed(raw)
        if self._skip:
            dropped = min(self._skip, len(text))
            self._skip -= dropped
            text = text[dropped:]
        return text

    def _feed(self, text: bytes) -> None:
        if not text:
            return
        document = self._document
        if document is None:
            self._frames.extend(self._lines.feed(text))
            return
        self._frames.extend(document.feed(text))
        if document.done:
            self._after_document(document)

    def _finish(self) -> None:
        document = self._document
        if document is not None:
            frames = document.finish()
            if not document.splitting and frames and not _is_json(frames[0].message):
                # Not one document after all: its lines are the messages, each judged by the decoder.
                self._document, self._held = None, None
                self._frames.extend(self._lines.feed(frames[0].message))
            else:
                self._frames.extend(frames)
                self._after_document(document)
        self._frames.extend(self._lines.finish())

    def _after_document(self, document: DocumentFramer) -> None:
        rest, offset, line = document.leftover()
        self._document, self._held = None, None
        self._lines = LineFramer(self.limit, offset=offset, line=line - 1)
        self._frames.extend(self._lines.feed(rest))

    async def _read_more(self, timeout_s: float) -> bytes | None:
        """More bytes (b"" never returned); None when nothing arrived in time. Sets _eof at the end."""
        assert self._file is not None
        if self.stdin:
            return await self._read_stdin(timeout_s)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            chunk = await self._read_raw(_CHUNK)
            if chunk:
                return chunk
            if not self.follow:
                return None
            self._eof = False
            self._check_truncation()
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            await asyncio.sleep(min(self.poll_s, remaining))

    async def _read_raw(self, size: int) -> bytes | None:
        """Up to ``size`` bytes of the file, read in a worker thread; None (and _eof) at its end."""
        assert self._file is not None
        chunk = await asyncio.to_thread(self._file.read, size)
        if not chunk:
            self._eof = True
            return None
        self._raw_read += len(chunk)
        return chunk

    async def _read_stdin(self, timeout_s: float | None) -> bytes | None:
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
        """A followed file that shrank was truncated or rotated: read it again from its first byte."""
        assert self._file is not None
        try:
            size = os.stat(self.path).st_size
        except OSError:
            return
        if size >= self._raw_read:
            return
        log.warning("input_truncated", path=self.path, offset=self._raw_read, size=size)
        self._file.seek(0)
        self._raw_read = 0
        self._sniffed, self._head, self._undecided, self._transcoder, self._skip = False, b"", b"", None, 0
        self._lines = LineFramer(self.limit)
        self._frames.clear()
        if self.checkpoint is not None:
            self.checkpoint.restart()

    # -- committing ---------------------------------------------------------------------------
    async def commit(self, position: Any) -> None:
        if self.checkpoint is not None:
            offset, line = position
            await self.checkpoint.write(Saved(offset, line, self._encoding, self._bom))

    async def close(self) -> None:
        if self._stdin_read is not None:
            self._stdin_read.cancel()
        if self._file is not None and not self.stdin:
            self._file.close()
        self._file = None


def _starts_a_document(text: bytes, limit: int) -> bool:
    """A stream is a document when it opens with '{' or '[' and its first line is not a JSON value by itself
    (a pretty-printed document), or is longer than the message limit (one huge line: split, not refused)."""
    stripped = text.lstrip()
    if stripped[:1] not in (b"{", b"["):
        return False
    newline = stripped.find(b"\n")
    first = stripped if newline < 0 else stripped[:newline]
    if len(first) > limit:
        return True
    return newline >= 0 and not _is_json(first.strip())


def _is_json(text: bytes) -> bool:
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return True
