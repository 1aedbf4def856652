"""What the local sources do beyond the source contract (tests/contract/test_source_contract.py runs the contract
against them): the replay's line handling, truncation and whole documents, the generator's determinism and rate.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from rmmwatch.sources.base import Batch, Source
from rmmwatch.sources.file import FileSource
from rmmwatch.sources.framing import Oversized
from rmmwatch.sources.synthetic import SyntheticSource
from rmmwatch.synthetic import GeneratorConfig
from tests.helpers import FIXTURES


async def drain(source: Source, timeout_s: float = 0.05) -> list[Batch]:
    batches = []
    while not source.exhausted:
        batch = await source.fetch(timeout_s)
        if batch is None:
            if source.exhausted:
                break
            continue
        batches.append(batch)
    return batches


def _lines(count: int) -> bytes:
    return b"".join(orjson.dumps({"n": i}) + (b"\r\n" if i % 2 else b"\n") for i in range(count))


async def test_file_delivers_every_line_in_order_in_bounded_batches(tmp_path: Path) -> None:
    """NDJSON with mixed CRLF/LF and blank lines: every message once, in order, batches <= max."""
    path = tmp_path / "in.ndjson"
    path.write_bytes(b"\n" + _lines(25) + b"\n\n" + b'{"n": 25}')  # last line has no newline
    source = FileSource(str(path), max_messages=7)
    await source.start()
    batches = await drain(source)
    await source.close()
    values = [orjson.loads(m)["n"] for b in batches for m in b.messages]
    assert values == list(range(26))
    assert max(len(b.messages) for b in batches) <= 7
    assert batches[0].locate(0) == {"source": "file", "path": str(path), "line": 2}


async def test_follow_restarts_a_truncated_file(tmp_path: Path) -> None:
    """A followed file that shrinks (rotation, truncation) is read again from the start."""
    path = tmp_path / "live.ndjson"
    path.write_bytes(_lines(5))
    source = FileSource(str(path), follow=True, poll_s=0.01)
    await source.start()
    await source.fetch(0.2)
    path.write_bytes(b'{"n": 100}\n')
    batch = None
    for _ in range(400):  # waits on the condition, up to 20 s on a loaded machine
        batch = await source.fetch(0.05)
        if batch is not None:
            break
    await source.close()
    assert batch is not None and [orjson.loads(m)["n"] for m in batch.messages] == [100]


async def test_a_pretty_printed_document_is_one_message() -> None:
    """The Event Hubs sample (JSON over many lines) is one message, not 200 broken lines."""
    source = FileSource(str(FIXTURES / "defender-eventhub-message.json"))
    await source.start()
    batches = await drain(source)
    await source.close()
    assert [len(b.messages) for b in batches] == [1]
    assert len(orjson.loads(batches[0].messages[0])["records"]) == 4


async def test_synthetic_is_deterministic_for_a_seed() -> None:
    """Two generators with one seed and one clock produce the same bytes."""
    from rmmwatch.synthetic import Generator

    ticks = [0]

    def clock() -> int:
        ticks[0] += 10_000
        return 17_950_000_000_000_000 + ticks[0]

    one = list(Generator(GeneratorConfig(seed=3), clock).messages(20))
    ticks[0] = 0
    two = list(Generator(GeneratorConfig(seed=3), clock).messages(20))
    assert one == two


async def test_synthetic_rate_limits_delivery() -> None:
    """At 200 messages per second, a 0.1 s fetch window yields a bounded number of messages."""
    source = SyntheticSource(GeneratorConfig(seed=1, max_records=1), rate=200, max_messages=1000)
    await source.start()
    await asyncio.sleep(0.1)
    batch = await source.fetch(0.1)
    await source.close()
    assert batch is not None
    assert 1 <= len(batch.messages) <= 200


# -- what a replay must read whatever the export looks like (issue: silent loss in hunt and the file source) -----


async def _messages(path: Path, **options: Any) -> list[bytes]:
    source = FileSource(str(path), **options)
    await source.start()
    batches = await drain(source)
    await source.close()
    return [m for b in batches for m in b.messages]


def _rows(count: int) -> list[dict[str, Any]]:
    return [{"DeviceId": f"d{i}", "Text": f'row {i} with "quotes", [brackets] and {{braces}}'} for i in range(count)]


async def test_a_utf8_byte_order_mark_loses_no_event(tmp_path: Path) -> None:
    """A BOM before NDJSON, and before a pretty-printed document: the first event is read like the others."""
    lines = tmp_path / "bom.ndjson"
    lines.write_bytes(b"\xef\xbb\xbf" + b"".join(orjson.dumps(r) + b"\r\n" for r in _rows(3)))
    assert [orjson.loads(m) for m in await _messages(lines)] == _rows(3)
    document = tmp_path / "bom.json"
    document.write_bytes(b"\xef\xbb\xbf" + orjson.dumps({"records": _rows(3)}, option=orjson.OPT_INDENT_2))
    assert [orjson.loads(m) for m in await _messages(document)] == [{"records": _rows(3)}]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
@pytest.mark.parametrize("shape", ["ndjson", "document"])
async def test_utf16_exports_are_read_like_utf8(tmp_path: Path, encoding: str, shape: str) -> None:
    """PowerShell's Out-File writes UTF-16 (with a BOM; without one, told by its zero bytes): same messages."""
    rows = [{**r, "Company": "Krämer IT Solutions GmbH"} for r in _rows(4)]
    if shape == "ndjson":
        text = "".join(orjson.dumps(r).decode() + "\r\n" for r in rows)
        expected = rows
    else:
        text = orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode()
        expected = [rows]
    path = tmp_path / "export.json"
    path.write_bytes(text.encode(encoding))
    assert [orjson.loads(m) for m in await _messages(path)] == expected


@pytest.mark.parametrize("wrapped", [False, True], ids=["array", "records"])
async def test_a_document_larger_than_the_message_limit_is_streamed_as_its_elements(
    tmp_path: Path, wrapped: bool
) -> None:
    """An Advanced Hunting export of 12,000 rows (over 1 MB) is not one oversized message: each row is one."""
    rows = _rows(12_000)
    path = tmp_path / "export.json"
    path.write_bytes(orjson.dumps({"records": rows} if wrapped else rows, option=orjson.OPT_INDENT_2))
    assert path.stat().st_size > 1_048_576
    messages = await _messages(path, max_messages=250)
    assert [orjson.loads(m) for m in messages] == rows


async def test_a_huge_line_is_bounded_and_does_not_block_the_loop(tmp_path: Path) -> None:
    """200 MB without a newline: handed on as a limit-sized prefix that knows its real size, then the next line;
    the event loop keeps turning while it is read (it was read on the loop, re-joined quadratically)."""
    path = tmp_path / "huge.ndjson"
    size = 200 * 1024 * 1024
    with path.open("wb") as handle:
        handle.truncate(size)  # a sparse file of zero bytes: no newline in 200 MB
        handle.seek(size)
        handle.write(b'\n{"after": 1}\n')
    gaps: list[float] = []
    reading = True

    async def ticker() -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while reading:
            await asyncio.sleep(0.01)
            now = loop.time()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(ticker())
    messages = await _messages(path, max_message_bytes=1_048_576)
    reading = False
    await task
    assert len(messages) == 2
    assert isinstance(messages[0], Oversized) and messages[0].full_size == size
    assert len(messages[0]) == 1_048_577
    assert orjson.loads(messages[1]) == {"after": 1}
    assert max(gaps) < 3.0, f"the loop stalled {max(gaps):.1f} s"


async def test_a_utf16_replay_resumes_after_its_checkpoint(tmp_path: Path) -> None:
    """A UTF-16 file has no byte for a UTF-8 offset: a restart re-reads up to the checkpoint and goes on."""
    path = tmp_path / "export.ndjson"
    path.write_bytes("".join(orjson.dumps({"n": i}).decode() + "\n" for i in range(10)).encode("utf-16"))
    checkpoint = tmp_path / "offset.json"
    first = FileSource(str(path), checkpoint=str(checkpoint), max_messages=4)
    await first.start()
    batch = await first.fetch(0.5)
    assert batch is not None and [orjson.loads(m)["n"] for m in batch.messages] == [0, 1, 2, 3]
    await first.commit(batch.position)
    await first.close()
    rest = await _messages(path, checkpoint=str(checkpoint))
    assert [orjson.loads(m)["n"] for m in rest] == list(range(4, 10))


# -- what a hostile review of the replay found (each failed before its fix) ----------------------------------


def _record(i: int, pad: int = 1500) -> bytes:
    return orjson.dumps({"category": "AdvancedHunting-DeviceProcessEvents",
                         "properties": {"DeviceId": f"d{i}", "Text": "p" * pad, "n": i}})  # fmt: skip


async def test_a_broken_first_line_is_one_bad_line_not_a_document(tmp_path: Path) -> None:
    """A cut-off first record ahead of 1,000 good lines (2 MB): the first line is reported, the rest are read.
    (It made the whole file one document that never closed: 0 messages, no report.)"""
    path = tmp_path / "cut.ndjson"
    path.write_bytes(_record(0)[:-1] + b"\n" + b"".join(_record(i) + b"\n" for i in range(1, 1001)))
    messages = await _messages(path, max_messages=300)
    assert len(messages) == 1001
    assert messages[0] == _record(0)[:-1]
    assert [orjson.loads(m)["properties"]["n"] for m in messages[1:]] == list(range(1, 1001))


@pytest.mark.parametrize("size", [2, 700], ids=["within the limit", "over the limit"])
async def test_lines_after_a_pretty_document_are_read_as_lines(tmp_path: Path, size: int) -> None:
    """A pretty document (small: one message; large: its records) followed by NDJSON lines: everything is read.
    (Under the limit, the document and its trailing lines became one malformed message.)"""
    records = [orjson.loads(_record(i)) for i in range(size)]
    path = tmp_path / "doc.json"
    path.write_bytes(orjson.dumps({"records": records}, option=orjson.OPT_INDENT_2) + b"\n"
                     + _record(1000) + b"\n" + _record(1001) + b"\n")  # fmt: skip
    messages = [orjson.loads(m) for m in await _messages(path)]
    documents = [{"records": records}] if size == 2 else records
    assert messages == [*documents, orjson.loads(_record(1000)), orjson.loads(_record(1001))]


async def test_a_line_over_the_limit_anywhere_is_split_like_the_first(tmp_path: Path) -> None:
    """An Event Hubs body of 700 records saved on one line (over 1 MB) as line 2: split into its records, as it
    was when it was line 1 (it was refused as oversized)."""
    body = orjson.dumps({"records": [orjson.loads(_record(i)) for i in range(700)]})
    assert len(body) > 1_048_576
    path = tmp_path / "bodies.ndjson"
    path.write_bytes(_record(5000) + b"\n" + body + b"\n" + _record(5001) + b"\n")
    messages = [orjson.loads(m) for m in await _messages(path)]
    assert [m["properties"]["n"] for m in messages] == [5000, *range(700), 5001]


async def test_a_crlf_line_at_the_limit_is_not_oversized(tmp_path: Path) -> None:
    """The CR before the newline is not part of the message: a line exactly at the limit is not oversized."""
    line = _record(1)
    path = tmp_path / "crlf.ndjson"
    path.write_bytes(line + b"\r\n")
    messages = await _messages(path, max_message_bytes=len(line))
    assert messages == [line] and not isinstance(messages[0], Oversized)


async def test_a_restart_inside_a_split_document_reads_it_again_from_its_start(tmp_path: Path) -> None:
    """Committed after the first batch of a 700-record document: the restart re-reads the document whole (every
    message valid JSON), never from the middle of it. (It resumed mid-document: every message a fragment.)"""
    records = [orjson.loads(_record(i)) for i in range(700)]
    path = tmp_path / "export.json"
    path.write_bytes(orjson.dumps({"records": records}, option=orjson.OPT_INDENT_2))
    checkpoint = tmp_path / "offset.json"
    first = FileSource(str(path), checkpoint=str(checkpoint), max_messages=100)
    await first.start()
    batches = [await first.fetch(0.5) for _ in range(3)]
    for batch in batches:
        assert batch is not None
        await first.commit(batch.position)
    await first.close()
    again = await _messages(path, checkpoint=str(checkpoint))
    assert [orjson.loads(m) for m in again] == records


def test_a_long_string_in_a_document_costs_linear_time_and_bounded_memory(tmp_path: Path) -> None:
    """A one-line document holding a 32 MB string: framed with memory in proportion to the limit, not to the
    string (the string regex held about 120 times the string: 4 GB). Measured as the child's peak RSS."""
    path = tmp_path / "long.json"
    path.write_bytes(b'[{"ProcessCommandLine": "' + b"x" * (32 * 1024 * 1024) + b'"}, {"n": 1}]')
    script = (
        "import asyncio\n"
        "from rmmwatch.sources.file import FileSource\n"
        "async def main():\n"
        f"    s = FileSource({str(path)!r})\n"
        "    await s.start()\n"
        "    n = 0\n"
        "    while not s.exhausted:\n"
        "        b = await s.fetch(0.5)\n"
        "        n += len(b.messages) if b else 0\n"
        # VmHWM, not ru_maxrss: ru_maxrss survives exec, so a child forked from a large pytest process starts
        # with the parent's peak; VmHWM belongs to the address space exec made.
        "    hwm = next(l for l in open('/proc/self/status') if l.startswith('VmHWM:'))\n"
        "    print(n, int(hwm.split()[1]) // 1024)\n"
        "asyncio.run(main())\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True)
    count, peak_mb = map(int, done.stdout.split())
    assert count == 2
    assert peak_mb < 400, f"peak RSS {peak_mb} MB"


async def test_follow_reads_a_rotated_file_from_its_start(tmp_path: Path) -> None:
    """Rotation (rename, then a new file at the path): the new file is read, the old one not again. (It read
    the old file again and again, never the new one.)"""
    path = tmp_path / "live.ndjson"
    path.write_bytes(_lines(3))
    source = FileSource(str(path), follow=True, poll_s=0.01)
    await source.start()
    first = await source.fetch(0.5)
    assert first is not None and len(first.messages) == 3
    path.rename(tmp_path / "live.ndjson.1")
    path.write_bytes(b'{"n": 100}\n{"n": 101}\n')
    seen: list[int] = []
    for _ in range(400):  # waits on the condition, up to 20 s on a loaded machine
        batch = await source.fetch(0.05)
        if batch is not None:
            seen += [orjson.loads(m)["n"] for m in batch.messages]
        if len(seen) >= 2:
            break
    await asyncio.sleep(0.1)
    late = await source.fetch(0.1)
    await source.close()
    assert seen == [100, 101]
    assert late is None


async def test_a_commit_of_the_content_before_a_truncation_is_not_written(tmp_path: Path) -> None:
    """A position of the old content committed after the file was truncated does not overwrite the new one's."""
    path = tmp_path / "live.ndjson"
    path.write_bytes(_lines(10))
    checkpoint = tmp_path / "offset.json"
    source = FileSource(str(path), follow=True, poll_s=0.01, checkpoint=str(checkpoint))
    await source.start()
    old = await source.fetch(0.5)
    assert old is not None
    path.write_bytes(b'{"n": 100}\n')
    new = None
    for _ in range(400):
        new = await source.fetch(0.05)
        if new is not None:
            break
    assert new is not None
    await source.commit(new.position)
    await source.commit(old.position)  # the late commit of the batch read before the truncation
    await source.close()
    assert orjson.loads(checkpoint.read_bytes())["offset"] == len(b'{"n": 100}\n')


@pytest.mark.parametrize(
    "content",
    [b"null", b"[]", b'{"offset": "12abc"}', b'{"offset": -50}', b'{"encoding": "rot13", "offset": 3}'],
)
async def test_a_checkpoint_of_the_wrong_shape_is_ignored(tmp_path: Path, content: bytes) -> None:
    """A checkpoint that is JSON but not a position is ignored (logged): the replay starts over, no traceback."""
    path = tmp_path / "in.ndjson"
    path.write_bytes(_lines(4))
    checkpoint = tmp_path / "offset.json"
    saved = orjson.loads(content)
    if isinstance(saved, dict):
        saved["path"] = str(path.resolve())
        content = orjson.dumps(saved)
    checkpoint.write_bytes(content)
    assert [orjson.loads(m)["n"] for m in await _messages(path, checkpoint=str(checkpoint))] == [0, 1, 2, 3]
