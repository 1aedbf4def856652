"""The source contract, against every source available without services (file, stdin, synthetic).

Clauses: every message is delivered once, in order, in batches no larger than asked;
``fetch`` returns None (not an exception) when nothing is there within its timeout; a
finite source says when it is exhausted; a resumable source restarted after ``commit``
continues after the committed position and not before. (Kafka and Event Hubs run the
same clauses in their integration suites.)
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import orjson
import pytest

from rmmwatch.sources.base import Batch, Source
from rmmwatch.sources.file import FileSource
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


async def test_file_resumes_after_the_committed_position(tmp_path: Path) -> None:
    """Commit after the second batch, restart: the rest is delivered, nothing before it."""
    path = tmp_path / "in.ndjson"
    path.write_bytes(_lines(20))
    checkpoint = tmp_path / "state" / "offset.json"
    first = FileSource(str(path), checkpoint=str(checkpoint), max_messages=5)
    await first.start()
    one = await first.fetch(0.1)
    two = await first.fetch(0.1)
    assert one is not None and two is not None
    await first.commit(two.position)
    await first.fetch(0.1)  # read but never committed: must come again
    await first.close()
    second = FileSource(str(path), checkpoint=str(checkpoint), max_messages=5)
    await second.start()
    rest = [orjson.loads(m)["n"] for b in await drain(second) for m in b.messages]
    await second.close()
    assert rest == list(range(10, 20))


async def test_file_commit_never_moves_backwards(tmp_path: Path) -> None:
    """An older position committed late does not rewind the checkpoint."""
    path = tmp_path / "in.ndjson"
    path.write_bytes(_lines(10))
    checkpoint = tmp_path / "offset.json"
    source = FileSource(str(path), checkpoint=str(checkpoint), max_messages=3)
    await source.start()
    one = await source.fetch(0.1)
    two = await source.fetch(0.1)
    assert one is not None and two is not None
    await source.commit(two.position)
    await source.commit(one.position)
    await source.close()
    assert orjson.loads(checkpoint.read_bytes())["offset"] == two.position[0]


async def test_follow_returns_none_when_idle_and_then_new_lines(tmp_path: Path) -> None:
    """Following a file: None within the timeout while idle, then appended lines."""
    path = tmp_path / "live.ndjson"
    path.write_bytes(_lines(2))
    source = FileSource(str(path), follow=True, poll_s=0.01)
    await source.start()
    first = await source.fetch(0.2)
    assert first is not None and len(first.messages) == 2
    assert await source.fetch(0.05) is None
    assert not source.exhausted
    with open(path, "ab") as handle:
        handle.write(b'{"n": 2}\n')
    later = await source.fetch(1.0)
    await source.close()
    assert later is not None and [orjson.loads(m)["n"] for m in later.messages] == [2]


async def test_follow_restarts_a_truncated_file(tmp_path: Path) -> None:
    """A followed file that shrinks (rotation, truncation) is read again from the start."""
    path = tmp_path / "live.ndjson"
    path.write_bytes(_lines(5))
    source = FileSource(str(path), follow=True, poll_s=0.01)
    await source.start()
    await source.fetch(0.2)
    path.write_bytes(b'{"n": 100}\n')
    batch = None
    for _ in range(20):
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


async def test_stdin_is_read_to_its_end(tmp_path: Path) -> None:
    """stdin (a pipe here) delivers every line and is exhausted at EOF."""
    read_fd, write_fd = os.pipe()
    os.write(write_fd, _lines(4))
    os.close(write_fd)
    saved = sys.stdin
    with os.fdopen(read_fd, "rb") as pipe:
        sys.stdin = type("Stdin", (), {"buffer": pipe})()  # type: ignore[assignment]
        try:
            source = FileSource("-")
            await source.start()
            batches = await drain(source)
            await source.close()
        finally:
            sys.stdin = saved
    assert [orjson.loads(m)["n"] for b in batches for m in b.messages] == [0, 1, 2, 3]


async def test_synthetic_delivers_its_count_and_stops() -> None:
    """A counted synthetic stream delivers exactly that many messages, then is exhausted."""
    source = SyntheticSource(GeneratorConfig(seed=7, max_records=3), rate=0, count=23, max_messages=10)
    await source.start()
    batches = await drain(source)
    await source.close()
    assert [len(b.messages) for b in batches] == [10, 10, 3]
    assert source.exhausted
    assert all(b"records" in m for b in batches for m in b.messages)


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


@pytest.mark.parametrize("kind", ["file", "synthetic"])
async def test_ready_after_start(kind: str, tmp_path: Path) -> None:
    """A started source reports ready; a closed one does not."""
    path = tmp_path / "x.ndjson"
    path.write_bytes(_lines(1))
    source: Source = FileSource(str(path)) if kind == "file" else SyntheticSource(GeneratorConfig(), rate=1)
    assert source.ready()[0] is False
    await source.start()
    assert source.ready()[0] is True
    await source.close()
    assert source.ready()[0] is False
