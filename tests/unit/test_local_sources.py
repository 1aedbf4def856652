"""What the local sources do beyond the source contract (tests/contract/test_source_contract.py runs the contract
against them): the replay's line handling, truncation and whole documents, the generator's determinism and rate.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson

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
