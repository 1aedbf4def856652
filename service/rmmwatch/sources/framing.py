"""Framing a byte stream into messages: encodings, lines and large JSON documents. Pure, no I/O.

The file and stdin replay (``sources/file.py``) reads bytes and hands them here. Three jobs:

* **Encoding.** Advanced Hunting exports are UTF-8, sometimes with a byte-order mark (a BOM on
  the first line used to make its first event undecodable), and PowerShell's default
  ``Out-File`` writes UTF-16. :func:`sniff` recognises a UTF-8 BOM (dropped), and UTF-16 by its
  BOM or by a first character ``{``/``[`` followed by a zero byte; :class:`Transcoder` turns
  UTF-16 into UTF-8 as it streams, so everything after it sees UTF-8.
* **Lines** (:class:`LineFramer`). One message per non-empty line, CRLF or LF. A line is held
  only up to ``limit`` bytes. A longer line that opens a JSON array or object (an Event Hubs
  body of a few hundred records saved on one line) is split into its elements as it streams;
  any other longer line is handed on as an :class:`Oversized` prefix (the decoder reports it as
  ``oversized`` with its real size and dead-letters the prefix). So a file without newlines
  costs ``limit`` bytes of memory, not its size.
* **One JSON document** (:class:`DocumentFramer`): a pretty-printed Event Hubs body or an
  Advanced Hunting export spans many lines. Up to ``limit`` bytes it is one message, as the
  decoder has always taken it. Larger (an export of 700 rows is over a megabyte), each element
  of its top-level array, or of the ``records`` array of its top-level object, becomes one
  message, so the message limit (Event Hubs' 1 MB) never applies to a file.

Every byte is looked at a bounded number of times (strings and structure are followed with
state kept across chunks), and memory is bounded by ``limit`` plus the chunk being read.

A :class:`Frame` carries the message, the line it starts on, and where a restarted replay may
resume after it: the offset after a line, but the document's start for an element of a split
document (an element has no resumable boundary of its own; the idempotent store absorbs the
repeat). Offsets are positions in the UTF-8 stream after transcoding ("logical" offsets).
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

UTF8 = "utf-8"
UTF16_LE = "utf-16-le"
UTF16_BE = "utf-16-be"
ENCODINGS = (UTF8, UTF16_LE, UTF16_BE)
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
    """A message, the line it starts on (1-based), and where a restart may resume after it (offset, lines)."""

    message: bytes
    line: int
    end: int
    resume_line: int


def starts_a_document(first_line: bytes, limit: int) -> bool:
    """Whether a stream whose first line is ``first_line`` is one JSON document over several lines: it opens a
    JSON container and leaves it open at the end of the line (``{`` or ``{"records": [``, as pretty-printers
    write), or the line alone is longer than the limit. A first line that is broken JSON is not a document:
    it is a bad line, and the lines after it are read as lines."""
    text = first_line.strip()
    if text[:1] not in (b"{", b"["):
        return False
    return len(text) > limit or text[-1:] in (b"{", b"[")


class LineFramer:
    """Non-empty lines of at most ``limit`` bytes; longer ones split as documents, or as Oversized prefixes."""

    def __init__(self, limit: int, *, offset: int = 0, line: int = 0) -> None:
        self.limit = limit
        self.offset = offset  # logical offset of the first byte not yet framed
        self.line = line  # lines framed so far
        self._pieces: list[bytes] = []  # the current line's bytes, at most limit + 1 of them
        self._kept = 0
        self._size = 0  # the current line's full size so far
        self._last = b""  # its last byte (a CR before the newline does not count toward the limit)
        self._document: DocumentFramer | None = None  # the current line, split as a document

    def feed(self, data: bytes) -> list[Frame]:
        """Frame the complete lines in ``data`` (the end of the last one waits for more)."""
        frames: list[Frame] = []
        start = 0
        while True:
            newline = data.find(b"\n", start)
            if newline < 0:
                self._hold(data[start:], frames)
                return frames
            self._hold(data[start:newline], frames)
            frames.extend(self._end_line(consumed=1))
            start = newline + 1

    def finish(self) -> list[Frame]:
        """The last line, when the stream ended without a newline."""
        return self._end_line(consumed=0) if self._size else []

    def _hold(self, piece: bytes, frames: list[Frame]) -> None:
        if not piece:
            return
        self._size += len(piece)
        self._last = piece[-1:]
        if self._document is not None:
            frames.extend(self._document.feed(piece))
            return
        room = self.limit + 1 - self._kept
        if room > 0:
            kept = piece[:room]
            self._pieces.append(kept)
            self._kept += len(kept)
        if self._size > self.limit + 1 and starts_a_document(b"".join(self._pieces), self.limit):
            # One line over the limit that opens an array or an object: split it into its elements.
            self._document = DocumentFramer(self.limit, offset=self.offset, line=self.line + 1)
            held, self._pieces = b"".join(self._pieces), []
            frames.extend(self._document.feed(held))
            frames.extend(self._document.feed(piece[room:] if room > 0 else piece))

    def _end_line(self, *, consumed: int) -> list[Frame]:
        size, pieces, document = self._size, self._pieces, self._document
        self._pieces, self._kept, self._size, self._document = [], 0, 0, None
        resume_line = self.line
        self.line += 1
        self.offset += size + consumed
        if document is not None:
            return [*document.finish(), *document.rest_as_frames()]
        text = b"".join(pieces)
        effective = size - (1 if self._last == b"\r" else 0)
        if effective > self.limit:
            # CR, blanks: a line this long is not blank; what it holds is judged by the decoder.
            return [Frame(Oversized(text, size), self.line, self.offset, self.line)]
        text = text.strip()
        del resume_line
        return [Frame(text, self.line, self.offset, self.line)] if text else []


#: Inside a string, the characters that matter: its closing quote and escapes.
_IN_STRING = re.compile(rb'["\\]')
#: Outside strings, the characters that matter (everything else is skipped at C speed).
_STRUCTURE = re.compile(rb'["\[\]{},:]')
_RECORDS_KEY = b'"records"'
_KEY_MAX = 32  # longer strings are never the key ``"records"``: not kept


class DocumentFramer:
    """One JSON document: whole if it is at most ``limit`` bytes, else its array's elements one by one.

    The scanner follows strings (with escapes), brackets and commas only, keeping its state across
    chunks; it does not validate JSON, the decoder does (an element that is not JSON is reported,
    with its line, as ``malformed_json``). Bytes nothing needs any more are dropped as it goes: the
    document while it may still be one message (at most ``limit`` bytes), else only the current
    element, and of an element longer than ``limit`` only its first ``limit + 1`` bytes. It stops at
    the end of the document; what follows (:meth:`leftover`) is for the line framer.
    """

    def __init__(self, limit: int, *, offset: int = 0, line: int = 1) -> None:
        self.limit = limit
        self.start = offset  # logical offset where the document starts: the resume point of its elements
        self.start_line = line
        self._buffer = bytearray()
        self._base = offset  # logical offset of _buffer[0]
        self._line_base = line  # line of _buffer[0]
        self._counted_to = 0  # newlines of _buffer[:_counted_to] are counted ...
        self._counted = 0  # ... here
        self._scan = 0  # next index of _buffer to look at
        self._depth = 0
        self._in_string = False
        self._string_start = 0
        self._whole = True  # at most limit bytes so far: may be one message (nothing emitted yet)
        self._element_depth: int | None = None  # depth at which elements are framed
        self._element_start: int | None = None  # index in _buffer of the current element (None: a scalar, at _cut)
        self._cut = 0  # index in _buffer just after the last ',' or '[' at the element level
        self._overflow: tuple[bytes, int, int] | None = None  # an element past the limit: prefix, abs start, line
        self._key: bytes | None = None  # the last key at object depth 1
        self._pending_key: bytes | None = None
        self._found_array = False
        self._done = False
        self._prefix = b""  # the document's first limit + 1 bytes, for an object with no array to split

    @property
    def done(self) -> bool:
        """The document ended (what follows it is :meth:`leftover`)."""
        return self._done

    @property
    def splitting(self) -> bool:
        return not self._whole

    def feed(self, data: bytes) -> list[Frame]:
        if self._done:
            self._buffer += data
            return []
        self._buffer += data
        frames: list[Frame] = []
        self._split(frames)
        return frames

    def finish(self) -> list[Frame]:
        """What is left at the end of the stream: the whole document if it stayed within the limit (valid or
        not: the caller judges), else the element the document never closed."""
        if self._done:
            return []
        if self._whole:
            whole = bytes(self._buffer).strip()
            self._buffer.clear()
            self._done = True
            return [Frame(whole, self.start_line, self.start, self.start_line - 1)] if whole else []
        frames: list[Frame] = []
        if self._overflow is not None:
            prefix, start, line = self._overflow
            frames.append(Frame(Oversized(prefix, self._base + len(self._buffer) - start), line, self.start,
                                self.start_line - 1))  # fmt: skip
        elif self._element_depth is not None:
            first = self._element_start if self._element_start is not None else self._cut
            tail = bytes(self._buffer[first:]).strip()
            if tail:
                frames.append(self._frame(tail, first))
        self._buffer.clear()
        self._done = True
        return frames

    def leftover(self) -> tuple[bytes, int, int]:
        """The bytes after the document, their logical offset and the line they start on."""
        rest = bytes(self._buffer[self._scan :])
        return rest, self._base + self._scan, self._line_at(self._scan)

    def rest_as_frames(self) -> list[Frame]:
        """What followed the document on its own line (one line split as a document): anything but blanks is
        bad input, handed on to be reported."""
        rest, _, line = self.leftover()
        text = rest.strip()
        self._buffer.clear()
        self._scan = 0
        return [Frame(text, line, self.start, self.start_line - 1)] if text else []

    # -- the scanner ------------------------------------------------------------------------
    def _split(self, frames: list[Frame]) -> None:
        buffer = self._buffer
        while not self._done:
            if self._whole and self._base + self._scan - self.start > self.limit:
                self._split_from_start(frames)  # larger than one message: its elements are the messages
                continue
            if self._in_string:
                found = _IN_STRING.search(buffer, self._scan)
                if found is None:
                    self._scan = len(buffer)
                    break
                index = found.start()
                if buffer[index] == ord("\\"):
                    if index + 1 >= len(buffer):  # the escaped character is in the next chunk
                        self._scan = index
                        break
                    self._scan = index + 2
                    continue
                self._in_string = False
                self._scan = index + 1
                if self._depth == 1 and self._element_depth is None and index + 1 - self._string_start <= _KEY_MAX:
                    self._pending_key = bytes(buffer[self._string_start : index + 1])
                continue
            found = _STRUCTURE.search(buffer, self._scan)
            if found is None:
                self._scan = len(buffer)
                break
            index = found.start()
            self._scan = index + 1
            self._structure(buffer[index], index, frames)
        self._bound_element()
        self._compact()

    def _structure(self, char: int, index: int, frames: list[Frame]) -> None:
        if char == ord('"'):
            if self._element_start is None and self._at_elements():
                self._element_start = index  # a string element
            self._in_string = True
            self._string_start = index
            return
        if char in b"[{":
            if self._element_start is None and self._at_elements():
                self._element_start = index
            self._depth += 1
            opens_elements = self._depth == 1 or (self._depth == 2 and self._key == _RECORDS_KEY)
            if char == ord("[") and self._element_depth is None and opens_elements:
                self._element_depth = self._depth  # the array whose elements are messages
                self._cut = index + 1
                self._found_array = True
            return
        if char in b"]}":
            self._depth -= 1
            if self._element_depth is not None and self._depth == self._element_depth - 1:
                self._close_element(index, frames)  # the array itself closed
                self._element_depth = None
            elif self._element_start is not None and self._at_elements():
                self._close_element(index + 1, frames)
                self._cut = index + 1
            if self._depth <= 0:
                self._end(index + 1, frames)
            return
        if char == ord(":"):
            self._key, self._pending_key = self._pending_key, None
            return
        if self._at_elements():  # a comma between elements
            self._close_element(index, frames)
            self._cut = index + 1
        elif self._depth == 1:
            self._key = None

    def _end(self, end: int, frames: list[Frame]) -> None:
        """The document closed at ``end`` (an index of _buffer)."""
        self._scan = end
        if self._whole and self._base + end - self.start > self.limit:
            self._split_from_start(frames)  # it closed past the limit: its elements are the messages
            return
        self._done = True
        if self._whole:  # one message; a restart may resume right after it
            frames.append(Frame(bytes(self._buffer[:end]).strip(), self.start_line, self._base + end,
                                self._line_at(end) - 1))  # fmt: skip
            return
        if not self._found_array:  # one object, too large, with no records to split: oversized
            frames.append(Frame(Oversized(self._prefix, self._base + end - self.start), self.start_line, self.start,
                                self.start_line - 1))  # fmt: skip

    def _at_elements(self) -> bool:
        """Whether the scanner is directly inside the array whose elements are messages."""
        return self._element_depth is not None and self._depth == self._element_depth

    def _close_element(self, end: int, frames: list[Frame]) -> None:
        if self._whole:
            self._element_start = None
            return  # while the document may be one message, its elements are not messages
        overflow, self._overflow = self._overflow, None
        start, self._element_start = self._element_start, None
        if overflow is not None:
            prefix, absolute, line = overflow
            frames.append(Frame(Oversized(prefix, self._base + end - absolute), line, self.start,
                                self.start_line - 1))  # fmt: skip
            return
        first = start if start is not None else self._cut
        text = bytes(self._buffer[first:end]).strip()
        if text:
            frames.append(self._frame(text, first))

    def _frame(self, text: bytes, first: int) -> Frame:
        raw = bytes(self._buffer[first : first + 64])
        line = self._line_at(first + len(raw) - len(raw.lstrip()))
        if len(text) > self.limit:  # read in one piece, so not bounded on the way: kept as its prefix, as then
            text = Oversized(text[: self.limit + 1], len(text))
        return Frame(text, line, self.start, self.start_line - 1)

    # -- memory -----------------------------------------------------------------------------
    def _split_from_start(self, frames: list[Frame]) -> None:
        """The document turned out larger than the limit: scan what was read again, emitting its elements."""
        self._whole = False
        self._prefix = bytes(self._buffer[: self.limit + 1])
        scanned = self._scan
        self._scan, self._depth, self._in_string = 0, 0, False
        self._element_depth = self._element_start = None
        self._cut, self._key, self._pending_key, self._found_array = 0, None, None, False
        buffer = self._buffer
        while self._scan < scanned and not self._done:
            if self._in_string:
                found = _IN_STRING.search(buffer, self._scan, scanned)
                if found is None:
                    self._scan = scanned
                    break
                index = found.start()
                if buffer[index] == ord("\\"):
                    self._scan = index + 2
                    continue
                self._in_string = False
                self._scan = index + 1
                if self._depth == 1 and self._element_depth is None and index + 1 - self._string_start <= _KEY_MAX:
                    self._pending_key = bytes(buffer[self._string_start : index + 1])
                continue
            found = _STRUCTURE.search(buffer, self._scan, scanned)
            if found is None:
                self._scan = scanned
                break
            index = found.start()
            self._scan = index + 1
            self._structure(buffer[index], index, frames)
        if not self._done:
            self._scan = max(self._scan, scanned)

    def _bound_element(self) -> None:
        """An element longer than the limit keeps only its first limit + 1 bytes (it will be oversized)."""
        if self._whole or self._overflow is not None or self._element_depth is None:
            return
        if self._depth < self._element_depth:
            return
        first = self._element_start if self._element_start is not None else self._cut
        if len(self._buffer) - first > self.limit + 1:
            self._overflow = (bytes(self._buffer[first : first + self.limit + 1]), self._base + first,
                              self._line_at(first))  # fmt: skip

    def _line_at(self, index: int) -> int:
        """The line of ``_buffer[index]``; indexes asked mostly grow, so newlines are counted about once each."""
        if index < self._counted_to:
            return self._line_base + self._buffer.count(b"\n", 0, index)
        self._counted += self._buffer.count(b"\n", self._counted_to, index)
        self._counted_to = index
        return self._line_base + self._counted

    def _compact(self) -> None:
        """Drop what no frame needs any more."""
        if self._whole or self._done:
            return
        keep = self._scan
        if self._element_start is not None and self._overflow is None:
            keep = min(keep, self._element_start)
        elif self._element_depth is not None and self._overflow is None:
            keep = min(keep, self._cut)
        if self._in_string and self._scan - self._string_start <= _KEY_MAX:
            keep = min(keep, self._string_start)
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
        self._string_start = max(0, self._string_start - keep)
        if self._element_start is not None:
            self._element_start -= keep
