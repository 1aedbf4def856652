"""Framing a byte stream into messages: encodings, lines and large JSON documents. Pure, no I/O.

The file and stdin replay (``sources/file.py``) reads bytes and hands them here. Three jobs:

* **Encoding.** Advanced Hunting exports are UTF-8, sometimes with a byte-order mark (a BOM on
  the first line used to make its first event undecodable), and PowerShell's default
  ``Out-File`` writes UTF-16. :func:`sniff` recognises a UTF-8 BOM (dropped), and UTF-16 by its
  BOM or by a first character ``{``/``[`` followed by a zero byte; :class:`Transcoder` turns
  UTF-16 into UTF-8 as it streams, so everything after it sees UTF-8.
* **Lines** (:class:`LineFramer`). One message per non-empty line, CRLF or LF. A line is held
  only up to ``limit`` bytes: past that, the rest of it is counted and dropped as it arrives,
  and the line is handed on as an :class:`Oversized` prefix (the decoder reports it as
  ``oversized`` with its real size and dead-letters the prefix). So a file without newlines
  costs ``limit`` bytes of memory, not its size, and each byte is looked at a fixed number of
  times (no re-scanning of a growing buffer).
* **One large JSON document** (:class:`DocumentFramer`). A pretty-printed Event Hubs body or an
  Advanced Hunting export is one JSON document over many lines. Up to ``limit`` bytes it stays
  one message, as before. Larger (an export of 700 rows is over a megabyte), it is split as it
  streams: each element of a top-level array, or of the ``records`` array of a top-level
  object, becomes one message, so the message limit (Event Hubs' 1 MB) never applies to a file.

Offsets are positions in the UTF-8 stream after transcoding ("logical" offsets); the file
source maps them back to the file for its checkpoints.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

UTF8 = "utf-8"
UTF16_LE = "utf-16-le"
UTF16_BE = "utf-16-be"
_BOM_UTF8 = b"\xef\xbb\xbf"


class Oversized(bytes):
    """The first ``limit + 1`` bytes of a message that was ``full_size`` bytes long (the rest was dropped)."""

    full_size: int

    def __new__(cls, prefix: bytes, full_size: int) -> Oversized:
        made = super().__new__(cls, prefix)
        made.full_size = full_size
        return made


def sniff(head: bytes) -> tuple[str, int]:
    """The encoding of a stream that starts with ``head`` (at least 4 bytes when the stream has them),
    and how many bytes of byte-order mark to skip."""
    if head.startswith(_BOM_UTF8):
        return UTF8, 3
    if head.startswith(b"\xff\xfe") and not head.startswith(b"\xff\xfe\x00\x00"):
        return UTF16_LE, 2
    if head.startswith(b"\xfe\xff"):
        return UTF16_BE, 2
    # UTF-16 without a mark: JSON starts with '{' or '[' (maybe after spaces), one zero byte beside it.
    if len(head) >= 2 and head[1] == 0 and head[0] in b"{[ \r\n\t" and head[0] != 0:
        return UTF16_LE, 0
    if len(head) >= 2 and head[0] == 0 and head[1] in b"{[ \r\n\t" and head[1] != 0:
        return UTF16_BE, 0
    return UTF8, 0


class Transcoder:
    """UTF-16 in, UTF-8 out, across chunk boundaries (an odd byte or half a surrogate pair waits)."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        # 'replace': a corrupt UTF-16 unit becomes U+FFFD; the record still fails to match, it is never dropped.
        self._decoder = codecs.getincrementaldecoder(encoding)(errors="replace")

    def feed(self, raw: bytes, *, final: bool = False) -> bytes:
        return self._decoder.decode(raw, final=final).encode("utf-8", errors="surrogatepass")


@dataclass(slots=True)
class Frame:
    """A message, the line it starts on (1-based), and the logical offset just after it."""

    message: bytes
    line: int
    end: int


class LineFramer:
    """Non-empty lines of at most ``limit`` bytes kept (longer ones as :class:`Oversized` prefixes)."""

    def __init__(self, limit: int, *, offset: int = 0, line: int = 0) -> None:
        self.limit = limit
        self.offset = offset  # logical offset of the first byte not yet framed
        self.line = line  # lines framed so far
        self._pieces: list[bytes] = []  # the current line's bytes, at most limit + 1 of them
        self._kept = 0
        self._size = 0  # the current line's full size so far

    @property
    def pending(self) -> int:
        """Bytes of the current, unfinished line."""
        return self._size

    def feed(self, data: bytes) -> list[Frame]:
        """Frame the complete lines in ``data`` (the end of the last one waits for more)."""
        frames: list[Frame] = []
        start = 0
        while True:
            newline = data.find(b"\n", start)
            if newline < 0:
                self._hold(data[start:])
                return frames
            self._hold(data[start:newline])
            frame = self._end_line(consumed=1)
            if frame is not None:
                frames.append(frame)
            start = newline + 1

    def finish(self) -> list[Frame]:
        """The last line, when the stream ended without a newline."""
        if not self._size:
            return []
        frame = self._end_line(consumed=0)
        return [frame] if frame is not None else []

    def _hold(self, piece: bytes) -> None:
        if not piece:
            return
        self._size += len(piece)
        room = self.limit + 1 - self._kept
        if room > 0:
            kept = piece[:room]
            self._pieces.append(kept)
            self._kept += len(kept)

    def _end_line(self, *, consumed: int) -> Frame | None:
        size, pieces = self._size, self._pieces
        self._pieces, self._kept, self._size = [], 0, 0
        self.line += 1
        self.offset += size + consumed
        text = b"".join(pieces)
        if size > self.limit:
            # CR, blanks: a line this long is not blank; what it holds is judged by the decoder.
            return Frame(Oversized(text, size), self.line, self.offset)
        text = text.strip()
        return Frame(text, self.line, self.offset) if text else None


#: The characters the document scanner stops at (everything else is skipped at C speed).
_STRUCTURE = re.compile(rb'["\[\]{},:]')
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_RECORDS_KEY = b'"records"'


class DocumentFramer:
    """One JSON document: whole if it is at most ``limit`` bytes, else its array's elements one by one.

    The scanner follows strings (with escapes), brackets and commas only; it does not validate
    JSON, the decoder does (an element that is not JSON is reported, with its line, as
    ``malformed_json``). Bytes before the current element are dropped as it goes, so memory is
    bounded by the largest element (an element longer than ``limit`` is handed on as an
    :class:`Oversized` prefix). The framer stops at the end of the first document; what follows
    it (:meth:`leftover`) is read as lines.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.splitting = False
        self._buffer = bytearray()
        self._base = 0  # logical offset of _buffer[0]
        self._line_base = 1  # line of _buffer[0]
        self._counted_to = 0  # newlines of _buffer[:_counted_to] are counted ...
        self._counted = 0  # ... here
        self._scan = 0  # next index of _buffer to scan
        self._depth = 0
        self._element_depth: int | None = None  # depth at which elements are framed
        self._element_start: int | None = None  # index in _buffer of the current element
        self._cut = 0  # index in _buffer where a scalar element would start (after the last ',' or '[')
        self._key: bytes | None = None  # the last string at object depth 1 (a key, if ':' follows)
        self._pending_key: bytes | None = None
        self._done = False
        self._found_array = False
        self._prefix = b""  # the document's first limit + 1 bytes, for one without an array to split

    def feed(self, data: bytes) -> list[Frame]:
        self._buffer += data
        if not self.splitting:
            if len(self._buffer) <= self.limit:
                return []  # may still be one message
            self.splitting = True
            self._prefix = bytes(self._buffer[: self.limit + 1])
        return self._split()

    def finish(self) -> list[Frame]:
        """The rest, at the end of the stream."""
        if not self.splitting:
            whole = bytes(self._buffer).strip()
            self._buffer.clear()
            return [Frame(whole, 1, self._base)] if whole else []
        frames = self._split()
        if self._element_start is not None:  # an element the document never closed
            tail = bytes(self._buffer[self._element_start :]).strip()
            if tail:
                frames.append(Frame(tail, self._line_at(self._element_start), self._base + len(self._buffer)))
            self._element_start = None
        return frames

    @property
    def done(self) -> bool:
        """The document ended (what follows it is :meth:`leftover`)."""
        return self._done

    def leftover(self) -> tuple[bytes, int, int]:
        """The bytes after the document, their logical offset and the line they start on."""
        rest = bytes(self._buffer[self._scan :])
        return rest, self._base + self._scan, self._line_at(self._scan)

    def _line_at(self, index: int) -> int:
        """The line of ``_buffer[index]``; indexes asked only grow, so newlines are counted once each."""
        if index < self._counted_to:
            return self._line_base + self._buffer.count(b"\n", 0, index)
        self._counted += self._buffer.count(b"\n", self._counted_to, index)
        self._counted_to = index
        return self._line_base + self._counted

    def _split(self) -> list[Frame]:
        frames: list[Frame] = []
        buffer = self._buffer
        while not self._done:
            found = _STRUCTURE.search(buffer, self._scan)
            if found is None:
                self._scan = len(buffer)
                break
            index = found.start()
            char = buffer[index]
            if char == ord('"'):
                string = _STRING.match(buffer, index)
                if string is None:  # the string goes on in the next chunk
                    self._scan = index
                    break
                self._scan = string.end()
                if self._element_start is None and self._at_elements():
                    self._element_start = index  # a string element
                if self._depth == 1 and self._element_depth is None:
                    self._pending_key = bytes(string.group())
                continue
            self._scan = index + 1
            if char in b"[{":
                if self._element_start is None and self._at_elements():
                    self._element_start = index
                self._depth += 1
                opens_elements = self._depth == 1 or (self._depth == 2 and self._key == _RECORDS_KEY)
                if char == ord("[") and self._element_depth is None and opens_elements:
                    self._element_depth = self._depth  # the array whose elements are messages
                    self._cut = index + 1
                    self._found_array = True
                continue
            if char in b"]}":
                self._depth -= 1
                if self._element_depth is not None and self._depth == self._element_depth - 1:
                    self._close_element(index, frames)  # the array itself closed
                    self._element_depth = None
                    if self._depth == 0:
                        self._done = True
                elif self._element_start is not None and self._at_elements():
                    self._close_element(index + 1, frames)
                    self._cut = index + 1
                elif self._depth == 0:
                    self._done = True
                    if not self._found_array:  # one object, too large, with no records to split: oversized
                        size = self._base + index + 1
                        frames.append(Frame(Oversized(self._prefix, size), 1, size))
                continue
            if char == ord(":"):
                self._key, self._pending_key = self._pending_key, None
                continue
            # a comma
            if self._at_elements():
                self._close_element(index, frames)
                self._cut = index + 1
            elif self._depth == 1:
                self._key = None
        self._compact()
        return frames

    def _at_elements(self) -> bool:
        """Whether the scanner is directly inside the array whose elements are messages."""
        return self._element_depth is not None and self._depth == self._element_depth

    def _close_element(self, end: int, frames: list[Frame]) -> None:
        start = self._element_start
        self._element_start = None
        if start is None:
            # A scalar element (a number, true, null), or nothing (after an object, before ']'): what lies
            # between the last cut and here.
            raw = bytes(self._buffer[self._cut : end])
            text = raw.strip()
            if text:
                first = self._cut + len(raw) - len(raw.lstrip())
                frames.append(Frame(text, self._line_at(first), self._base + end))
            return
        element = bytes(self._buffer[start:end]).strip()
        line = self._line_at(start)
        if len(element) > self.limit:
            frames.append(Frame(Oversized(element[: self.limit + 1], len(element)), line, self._base + end))
        else:
            frames.append(Frame(element, line, self._base + end))

    def _compact(self) -> None:
        """Drop what no frame needs any more (everything before the current element or scan point)."""
        keep = self._element_start if self._element_start is not None else self._scan
        if self._element_depth is not None:
            keep = min(keep, self._cut)
        if keep <= 0:
            return
        dropped = self._buffer.count(b"\n", 0, keep)
        self._line_base += dropped
        if keep <= self._counted_to:
            self._counted -= dropped
            self._counted_to -= keep
        else:
            self._counted, self._counted_to = 0, 0
        del self._buffer[:keep]
        self._base += keep
        self._scan -= keep
        self._cut = max(0, self._cut - keep)
        if self._element_start is not None:
            self._element_start -= keep
