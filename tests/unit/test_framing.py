"""Framing a replayed byte stream (``sources/framing.py``): encodings, bounded lines, large documents split.

It proves: the encoding is told from a UTF-8 BOM, a UTF-16 BOM, or UTF-16's zero bytes, and UTF-16 is
transcoded across any chunk boundary; lines are framed whatever the chunking, a line longer than the
limit is handed on as its prefix with its real size (holding no more than the limit), blank lines and
CRLF are dropped; a JSON document at most the limit is one frame, a larger one is split into its
array's (or its ``records`` array's) elements, with the line each starts on, whatever the chunking,
strings with brackets, commas and escaped quotes included, and what follows the document is left over.
"""

from __future__ import annotations

import codecs

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rmmwatch.sources.framing import (
    UTF8,
    UTF16_BE,
    UTF16_LE,
    DocumentFramer,
    Frame,
    LineFramer,
    Oversized,
    Transcoder,
    sniff,
)


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        pytest.param(b'{"a"', (UTF8, 0), id="plain UTF-8"),
        pytest.param(b'\xef\xbb\xbf{"a', (UTF8, 3), id="UTF-8 BOM"),
        pytest.param(codecs.BOM_UTF16_LE + '{"'.encode("utf-16-le"), (UTF16_LE, 2), id="UTF-16 LE BOM"),
        pytest.param(codecs.BOM_UTF16_BE + '{"'.encode("utf-16-be"), (UTF16_BE, 2), id="UTF-16 BE BOM"),
        pytest.param('{"a'.encode("utf-16-le"), (UTF16_LE, 0), id="UTF-16 LE without a mark"),
        pytest.param('["a'.encode("utf-16-be"), (UTF16_BE, 0), id="UTF-16 BE without a mark"),
        pytest.param(b"", (UTF8, 0), id="empty"),
        pytest.param(b"\x00\x00\x00\x00", (UTF8, 0), id="zeros are not UTF-16 JSON"),
    ],
)
def test_sniff_tells_the_encoding_and_the_mark_to_skip(head: bytes, expected: tuple[str, int]) -> None:
    """The first bytes say the encoding: a BOM, or JSON's first character beside a zero byte."""
    assert sniff(head) == expected


@pytest.mark.parametrize("encoding", [UTF16_LE, UTF16_BE])
@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 1000])
def test_utf16_is_transcoded_across_any_chunk_boundary(encoding: str, chunk: int) -> None:
    """Non-ASCII text, a surrogate pair included, survives being cut anywhere."""
    text = '{"ProcessVersionInfoCompanyName": "Krämer IT Solutions GmbH 😀"}\n'
    raw = text.encode(encoding)
    transcoder = Transcoder(encoding)
    out = b"".join(transcoder.feed(raw[i : i + chunk]) for i in range(0, len(raw), chunk))
    out += transcoder.feed(b"", final=True)
    assert out == text.encode("utf-8")


def _frames_of(framer: LineFramer | DocumentFramer, data: bytes, chunk: int) -> list[Frame]:
    frames: list[Frame] = []
    for i in range(0, len(data), chunk):
        frames += framer.feed(data[i : i + chunk])
        if isinstance(framer, DocumentFramer) and framer.done:
            break
    return frames + ([] if isinstance(framer, DocumentFramer) and framer.done else framer.finish())


@pytest.mark.parametrize("chunk", [1, 3, 16, 10_000])
def test_lines_are_framed_whatever_the_chunking(chunk: int) -> None:
    """CRLF and LF, blank lines skipped but counted, the last line without a newline, offsets after each."""
    data = b'\r\n{"n": 1}\r\n\n  {"n": 2}  \n{"n": 3}'
    frames = _frames_of(LineFramer(100), data, chunk)
    assert [(f.message, f.line) for f in frames] == [(b'{"n": 1}', 2), (b'{"n": 2}', 4), (b'{"n": 3}', 5)]
    assert [f.end for f in frames] == [12, data.index(b'{"n": 3}'), len(data)]


@pytest.mark.parametrize("chunk", [1, 5, 64, 100_000])
def test_a_line_longer_than_the_limit_is_its_prefix_and_its_size(chunk: int) -> None:
    """A 10,000-byte line with a limit of 100: an Oversized prefix of 101 bytes that knows the real size; the
    framer never held more than the prefix; the next line is framed as usual."""
    long_line = b"x" * 10_000
    framer = LineFramer(100)
    frames: list[Frame] = []
    held = 0
    for i in range(0, len(long_line), chunk):
        frames += framer.feed(long_line[i : i + chunk])
        held = max(held, framer._kept)
    frames += framer.feed(b'\n{"n": 2}\n')
    assert held <= 101
    assert len(frames) == 2
    assert isinstance(frames[0].message, Oversized)
    assert frames[0].message == long_line[:101]
    assert frames[0].message.full_size == 10_000
    assert (frames[1].message, frames[1].line) == (b'{"n": 2}', 2)


def _document(rows: int, wrapped: bool, pretty: bool = True) -> tuple[bytes, list[dict[str, object]]]:
    elements = [
        {"DeviceId": f"d{i}", "Text": f'a "quoted" [bracket], {{brace}} \\ {i}', "Nested": {"list": [1, 2, {"x": i}]}}
        for i in range(rows)
    ]
    option = orjson.OPT_INDENT_2 if pretty else 0
    document = orjson.dumps({"records": elements, "after": [1, 2]} if wrapped else elements, option=option)
    return document, elements


@pytest.mark.parametrize("wrapped", [False, True], ids=["array", "records"])
@pytest.mark.parametrize("chunk", [1, 7, 4096, 10_000_000])
def test_a_document_over_the_limit_is_split_into_its_elements(wrapped: bool, chunk: int) -> None:
    """Each element of the array (or of ``records``) is one frame, exactly its JSON, on the line it starts."""
    document, elements = _document(40, wrapped)
    frames = _frames_of(DocumentFramer(500), document, chunk)
    assert [orjson.loads(f.message) for f in frames] == elements
    lines = document.split(b"\n")
    for frame in frames:
        assert lines[frame.line - 1].strip() == b"{", frame.line


def test_a_document_within_the_limit_stays_one_frame() -> None:
    """Up to the limit the document is one message, as the decoder has always taken it."""
    document, _ = _document(3, wrapped=True)
    frames = _frames_of(DocumentFramer(len(document) + 10), document, 50)
    assert [f.message for f in frames] == [document.strip()]


def test_scalar_and_string_elements_are_frames_too() -> None:
    """Elements that are not objects are still handed on (the decoder reports them), never dropped."""
    document = b'[\n  1,\n  "two, [three]",\n  null,\n  {"a": [4]},\n  true\n]\n'
    frames = _frames_of(DocumentFramer(20), document, 3)
    assert [f.message for f in frames] == [b"1", b'"two, [three]"', b"null", b'{"a": [4]}', b"true"]
    assert [f.line for f in frames] == [2, 3, 4, 5, 6]


def test_an_oversized_element_is_its_prefix_and_an_object_without_records_is_oversized() -> None:
    """An element over the limit is an Oversized prefix; a too large object with no array to split, too."""
    big = {"DeviceId": "d", "Text": "y" * 5000}
    frames = _frames_of(DocumentFramer(1000), orjson.dumps([{"a": 1}, big], option=orjson.OPT_INDENT_2), 64)
    assert orjson.loads(frames[0].message) == {"a": 1}
    assert isinstance(frames[1].message, Oversized) and frames[1].message.full_size > 5000
    single = orjson.dumps(big, option=orjson.OPT_INDENT_2)
    frames = _frames_of(DocumentFramer(1000), single, 64)
    assert len(frames) == 1 and isinstance(frames[0].message, Oversized)
    assert frames[0].message.full_size == len(single)


def test_what_follows_the_document_is_left_over_with_its_line() -> None:
    """A document followed by NDJSON lines: the framer stops at the document's end and gives back the rest."""
    document, elements = _document(20, wrapped=False)
    data = document + b'\n{"after": 1}\n'
    framer = DocumentFramer(300)
    frames = framer.feed(data)
    assert framer.done
    assert [orjson.loads(f.message) for f in frames] == elements
    rest, offset, line = framer.leftover()
    assert rest.strip() == b'{"after": 1}'
    assert data[offset:] == rest
    assert line == document.count(b"\n") + 1


_TEXT = st.text(alphabet=st.sampled_from('ab"\\\\[]{},: \n\u00e9\u2028x'), max_size=40)
_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-1000, 1000) | _TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    elements=st.lists(st.dictionaries(_TEXT, _VALUES, max_size=5), max_size=12),
    wrapped=st.booleans(),
    limit=st.integers(8, 400),
    chunks=st.lists(st.integers(1, 97), min_size=1, max_size=6),
)
def test_a_document_is_one_message_or_its_elements_whatever_the_chunking(
    elements: list[dict[str, object]], wrapped: bool, limit: int, chunks: list[int]
) -> None:
    """Any document, any limit, any chunking: within the limit, the document; over it, each element exactly (an
    element over the limit as its prefix with its real size), never a fragment, never a loss."""
    document = orjson.dumps({"meta": [1, {"records": []}], "records": elements} if wrapped else elements,
                            option=orjson.OPT_INDENT_2)  # fmt: skip
    framer = DocumentFramer(limit)
    frames: list[Frame] = []
    position, turn = 0, 0
    while position < len(document) and not framer.done:
        size = chunks[turn % len(chunks)]
        frames += framer.feed(document[position : position + size])
        position, turn = position + size, turn + 1
    frames += framer.finish()
    if len(document) <= limit:
        assert [f.message for f in frames] == [document]
        return
    assert len(frames) == len(elements)
    for frame, element in zip(frames, elements, strict=True):
        if isinstance(frame.message, Oversized):
            assert frame.message.full_size > limit
            assert len(frame.message) == limit + 1
        else:
            assert orjson.loads(frame.message) == element
            assert frame.end == 0 and frame.resume_line == 0  # an element resumes at the document's start
