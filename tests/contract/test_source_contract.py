"""The source contract, one suite against every source: file, file --follow, stdin, synthetic (no services), and
Kafka through aiokafka, Kafka through librdkafka, Event Hubs over AMQP (integration: the real broker; the
repository's test AMQP endpoint with checkpoints in the real Azurite).

``SOURCES`` is the table: a source's name, the feed of its transport (where a clause writes messages and reads
what was committed), how to make the source over that feed, and what it can do. Each clause runs against every
source that can do what the clause needs; adding a source is its adapter plus one line in the table (and a
feed, when its transport is new).

Clauses: every message once, in order per partition, in batches no larger than asked; a finite source says
when it is exhausted; ``fetch`` returns None when idle and then delivers what comes; ready only between start
and close; a restart resumes after the committed position, not before; a commit never moves backwards; the
newest position covers the partitions of the batches before it; pause stops delivery and resume delivers
everything. In a group: members share the partitions; a lost partition gets no commit from the batch its
old owner still held; a new reader starts where told (latest, a time); a rebalance waits for the batch in
flight (Kafka); a replica sharing the group of a process that must own every partition is a problem.
Transport-specific behaviour stays beside its transport (tests/integration/test_eventhub_source.py, the
replay and generator details in tests/unit/test_local_sources.py).
"""

from __future__ import annotations

import asyncio
import io
import os
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import orjson
import pytest

from rmmwatch.kafka_settings import KafkaSettings
from rmmwatch.sources.base import Batch, Source
from rmmwatch.sources.eventhub import EventHubSettings, EventHubSource
from rmmwatch.sources.file import FileSource
from rmmwatch.sources.kafka import KafkaSource
from rmmwatch.sources.kafka_confluent import ConfluentKafkaSource
from rmmwatch.sources.synthetic import SyntheticSource
from rmmwatch.synthetic import GeneratorConfig
from tests.helpers import service_env

# -- what a source can do ---------------------------------------------------------------------
VERBATIM = "delivers the bytes that were put"
FINITE = "ends (and says so)"
FOLLOWS = "waits for more when idle"
RESUMES = "resumes after its committed position"
PARTITIONED = "has several partitions"
GROUP = "shares partitions with other members of a group"
KEEPS = "keeps the partitions a rebalance does not move (and their generation)"
STARTS = "starts a new reader at latest or at a time"
REBALANCE_WAIT = "a rebalance waits for the batches in flight"
SHARING = "finds a replica sharing the group of a process that must own every partition"


def _lines(values: Sequence[bytes]) -> bytes:
    return b"".join(value + b"\n" for value in values)


class Feed(Protocol):
    """A transport as a clause sees it: where to put messages and what was committed (per partition, how many
    messages the committed position covers)."""

    partitions: int

    async def put(self, values: Sequence[bytes], partition: int | None = None) -> None:
        """Append ``values`` to one partition, or round-robin over all of them."""

    async def committed(self) -> dict[str, int]: ...

    def origin(self, located: dict[str, Any]) -> tuple[str, int]:
        """Where a located message came from: (partition, index in the partition, from 0)."""

    def holds(self, messages: Sequence[bytes], values: Sequence[bytes]) -> bool:
        """Whether ``messages`` are ``values`` as this transport delivers them, each once."""

    async def close(self) -> None: ...


class _Verbatim:
    """What feeds share whose transport delivers the very bytes that were put."""

    def holds(self, messages: Sequence[bytes], values: Sequence[bytes]) -> bool:
        return sorted(messages) == sorted(values)

    async def close(self) -> None:
        return None


class FileFeed(_Verbatim):
    """An NDJSON file with a checkpoint file beside it (one partition: the file)."""

    partitions = 1

    def __init__(self, tmp_path: Path, partitions: int) -> None:
        self.path = tmp_path / f"feed-{uuid.uuid4().hex[:6]}.ndjson"
        self.path.write_bytes(b"")
        self.checkpoint = tmp_path / "state" / f"{self.path.stem}.json"

    async def put(self, values: Sequence[bytes], partition: int | None = None) -> None:
        with open(self.path, "ab") as handle:
            handle.write(_lines(values))

    async def committed(self) -> dict[str, int]:
        return {"0": orjson.loads(self.checkpoint.read_bytes())["line"]} if self.checkpoint.exists() else {}

    def origin(self, located: dict[str, Any]) -> tuple[str, int]:
        assert located["path"] == str(self.path)
        return "0", located["line"] - 1


class StdinFeed(_Verbatim):
    """What was put, written into a pipe that becomes ``sys.stdin`` when the source is made, then closed."""

    partitions = 1

    def __init__(self, tmp_path: Path, partitions: int) -> None:
        self.values: list[bytes] = []
        self._saved = sys.stdin
        self._pipe: Any = None

    async def put(self, values: Sequence[bytes], partition: int | None = None) -> None:
        assert self._pipe is None, "stdin is written before the source starts"
        self.values += values

    def attach(self) -> str:
        read_fd, write_fd = os.pipe()

        def write() -> None:  # a thread: a pipe holds 64 KB, the source reads while this writes
            with os.fdopen(write_fd, "wb") as pipe:
                pipe.write(_lines(self.values))

        threading.Thread(target=write, daemon=True).start()
        self._pipe = os.fdopen(read_fd, "rb")
        sys.stdin = io.TextIOWrapper(self._pipe)
        return "-"

    async def committed(self) -> dict[str, int]:
        raise AssertionError("stdin keeps no position")

    def origin(self, located: dict[str, Any]) -> tuple[str, int]:
        assert located["path"] == "-"
        return "0", located["line"] - 1

    async def close(self) -> None:
        sys.stdin = self._saved
        if self._pipe is not None:
            self._pipe.close()


class SyntheticFeed:
    """The generator: putting values asks for that many messages; what they hold is the generator's."""

    partitions = 1

    def __init__(self, tmp_path: Path, partitions: int) -> None:
        self.count = 0

    async def put(self, values: Sequence[bytes], partition: int | None = None) -> None:
        self.count += len(values)

    async def committed(self) -> dict[str, int]:
        raise AssertionError("a generated stream keeps no position")

    def origin(self, located: dict[str, Any]) -> tuple[str, int]:
        return "0", located["message"]

    def holds(self, messages: Sequence[bytes], values: Sequence[bytes]) -> bool:
        return len(messages) == len(values) and all(b"records" in message for message in messages)

    async def close(self) -> None:
        return None


class KafkaFeed(_Verbatim):
    """A new topic on the real broker, and one consumer group on it."""

    def __init__(self, tmp_path: Path, partitions: int) -> None:
        self.bootstrap = service_env("RMMWATCH_TEST_KAFKA_BOOTSTRAP")
        self.partitions = partitions
        self.topic = f"t-{uuid.uuid4().hex[:10]}"
        self.group = f"g-{self.topic}"
        self.settings = KafkaSettings(bootstrap_servers=self.bootstrap, session_timeout_ms=6000)

    async def open(self) -> None:
        from tests.integration.kafka_tools import create_topic

        await create_topic(self.bootstrap, self.topic, self.partitions)

    async def put(self, values: Sequence[bytes], partition: int | None = None) -> None:
        from tests.integration.kafka_tools import produce, produce_to

        if partition is None:
            await produce(self.bootstrap, self.topic, values, self.partitions)
        else:
            await produce_to(self.bootstrap, self.topic, partition, values)

    async def committed(self) -> dict[str, int]:
        from tests.integration.kafka_tools import committed_offsets

        offsets = await committed_offsets(self.bootstrap, self.group)
        return {str(partition): offset for (topic, partition), offset in offsets.items() if topic == self.topic}

    def origin(self, located: dict[str, Any]) -> tuple[str, int]:
        assert located["source"] == "kafka" and located["topic"] == self.topic
        return str(located["partition"]), located["offset"]


class EventHubFeed(_Verbatim):
    """The test AMQP endpoint with a hub of its own, checkpoints and ownership in a new Azurite container."""

    def __init__(self, tmp_path: Path, partitions: int) -> None:
        from tests.eventhub_endpoint.server import EventHubEndpoint
        from tests.integration.eventhub_tools import container_name

        self.azurite = service_env("RMMWATCH_TEST_AZURITE_CONNECTION_STRING")
        self.partitions = partitions
        self.endpoint = EventHubEndpoint(hub="defender", partitions=partitions)
        self.container = container_name()

    async def open(self) -> None:
        self.endpoint.start()

    def settings(self, start: str) -> EventHubSettings:
        from tests.integration.eventhub_tools import settings

        return settings(self.endpoint, self.azurite, self.container, start=start)

    async def put(self, values: Sequence[bytes], partition: int | None = None) -> None:
        ids = self.endpoint.partition_ids
        for index, value in enumerate(values):
            self.endpoint.append(ids[index % len(ids)] if partition is None else ids[partition], value)

    async def committed(self) -> dict[str, int]:
        from tests.integration.eventhub_tools import checkpoints

        found = await checkpoints(self.azurite, self.container, self.endpoint)
        return {partition: sequence + 1 for partition, sequence in found.items()}  # sequence numbers from 0

    def origin(self, located: dict[str, Any]) -> tuple[str, int]:
        assert located["source"] == "eventhub" and isinstance(located["offset"], str)
        return located["partition"], located["sequence_number"]

    async def close(self) -> None:
        self.endpoint.stop()


@dataclass(frozen=True)
class Options:
    """What a clause may ask of a source; each source takes the options it has."""

    max_messages: int = 40
    start: str = "earliest"
    rebalance_wait_s: float = 20.0
    probe_interval_s: float = 5.0
    queue_batches: int = 8
    exclusive: bool = False

    def kafka(self) -> dict[str, Any]:
        return {"max_messages": self.max_messages, "start": self.start, "rebalance_wait_s": self.rebalance_wait_s,
                "probe_interval_s": self.probe_interval_s, "exclusive": self.exclusive}  # fmt: skip


@dataclass(frozen=True)
class Kind:
    """One source under the contract."""

    name: str
    feed: Callable[[Path, int], Any]
    make: Callable[[Any, Options], Source]
    can: frozenset[str]
    ready_reason: str  # what ready() says once ready ({} is the number of partitions)
    services: bool = False


LOCAL = frozenset({VERBATIM})
KAFKA = frozenset({VERBATIM, FOLLOWS, RESUMES, PARTITIONED, GROUP, STARTS, REBALANCE_WAIT, SHARING})
EVENTHUB = frozenset({VERBATIM, FOLLOWS, RESUMES, PARTITIONED, GROUP, KEEPS, STARTS, SHARING})

SOURCES = [
    Kind("file", FileFeed, lambda f, o: FileSource(str(f.path), checkpoint=str(f.checkpoint), max_messages=o.max_messages), LOCAL | {FINITE, RESUMES}, "reading"),  # noqa: E501
    Kind("file-follow", FileFeed, lambda f, o: FileSource(str(f.path), follow=True, poll_s=0.01, checkpoint=str(f.checkpoint), max_messages=o.max_messages), LOCAL | {FOLLOWS, RESUMES}, "reading"),  # noqa: E501
    Kind("stdin", StdinFeed, lambda f, o: FileSource(f.attach(), max_messages=o.max_messages), LOCAL | {FINITE}, "reading"),  # noqa: E501
    Kind("synthetic", SyntheticFeed, lambda f, o: SyntheticSource(GeneratorConfig(seed=7, max_records=3), rate=0, count=f.count, max_messages=o.max_messages), frozenset({FINITE}), "generating"),  # noqa: E501
    Kind("kafka-aiokafka", KafkaFeed, lambda f, o: KafkaSource(f.settings, [f.topic], group_id=f.group, **o.kafka()), KAFKA, "{} partition(s) assigned", services=True),  # noqa: E501
    Kind("kafka-confluent", KafkaFeed, lambda f, o: ConfluentKafkaSource(f.settings, [f.topic], group_id=f.group, **o.kafka()), KAFKA, "{} partition(s) assigned", services=True),  # noqa: E501
    Kind("eventhub", EventHubFeed, lambda f, o: EventHubSource(f.settings(o.start), max_messages=o.max_messages, queue_batches=o.queue_batches, probe_interval_s=o.probe_interval_s, exclusive=o.exclusive), EVENTHUB, "{} partition(s) owned", services=True),  # noqa: E501
]  # fmt: skip


def sources(*needs: str) -> pytest.MarkDecorator:
    """Run a clause against every source that can do what it needs (a source that cannot is not asked)."""
    chosen = [k for k in SOURCES if set(needs) <= k.can]
    return pytest.mark.parametrize(
        "kind", [pytest.param(k, id=k.name, marks=[pytest.mark.integration] if k.services else []) for k in chosen]
    )


@dataclass
class Harness:
    """Makes feeds and sources of one kind for a clause, and closes them after it."""

    kind: Kind
    tmp_path: Path
    feeds: list[Any] = field(default_factory=list)
    made: list[Source] = field(default_factory=list)

    def can(self, what: str) -> bool:
        return what in self.kind.can

    async def feed(self, partitions: int = 1) -> Any:
        feed = self.kind.feed(self.tmp_path, partitions if self.can(PARTITIONED) else 1)
        self.feeds.append(feed)
        if hasattr(feed, "open"):
            await feed.open()
        return feed

    def make(self, feed: Any, **options: Any) -> Source:
        source = self.kind.make(feed, replace(Options(), **options))
        self.made.append(source)
        return source

    def ready_reason(self, partitions: int) -> str:
        return self.kind.ready_reason.format(partitions)


@pytest.fixture
async def harness(kind: Kind, tmp_path: Path) -> AsyncIterator[Harness]:
    made = Harness(kind, tmp_path)
    yield made
    for source in made.made:
        await source.close()
    for feed in made.feeds:
        await feed.close()


# -- helpers ----------------------------------------------------------------------------------
def numbered(count: int, first: int = 0) -> list[bytes]:
    return [orjson.dumps({"n": i}) for i in range(first, first + count)]


def numbers(batches: Sequence[Batch]) -> list[int]:
    return [orjson.loads(m)["n"] for b in batches for m in b.messages]


def _count(batch: Batch) -> int:
    return len(batch.messages)


async def drain(
    source: Source, expect: int, timeout_s: float = 90.0, count: Callable[[Batch], int] = _count
) -> list[Batch]:
    """Batches until ``expect`` messages came (as ``count`` counts them; or the source is exhausted), then until
    it stays idle a moment (so a message delivered twice would show)."""
    batches: list[Batch] = []
    deadline = time.monotonic() + timeout_s
    while sum(count(b) for b in batches) < expect and not source.exhausted:
        assert time.monotonic() < deadline, f"{sum(count(b) for b in batches)} of {expect} within {timeout_s} s"
        batch = await source.fetch(0.5)
        if batch is not None:
            batches.append(batch)
    for _ in range(3):
        batch = await source.fetch(0.3)
        if batch is not None:
            batches.append(batch)
    return batches


async def until_ready(source: Source, timeout_s: float = 60.0) -> list[Batch]:
    """Fetch (librdkafka joins its group inside fetch) until the source is ready; the batches fetched meanwhile."""
    fetched: list[Batch] = []
    deadline = time.monotonic() + timeout_s
    while not source.ready()[0]:
        assert time.monotonic() < deadline, f"not ready within {timeout_s} s: {source.ready()[1]}"
        batch = await source.fetch(0.1)
        if batch is not None:
            fetched.append(batch)
    return fetched


async def next_batch(source: Source, timeout_s: float = 30.0) -> Batch:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        batch = await source.fetch(0.5)
        if batch is not None:
            return batch
    raise AssertionError(f"no batch within {timeout_s} s")


async def keep_fetching(source: Source, into: list[Batch], stop: asyncio.Event) -> None:
    """Fetch as the loop does, until ``stop``."""
    while not stop.is_set():
        batch = await source.fetch(0.2)
        if batch is not None:
            into.append(batch)


# -- every source -----------------------------------------------------------------------------
@sources(VERBATIM)
async def test_every_message_once_in_partition_order_in_bounded_batches(kind: Kind, harness: Harness) -> None:
    """Each message once; per partition, in the order put (consecutive indexes from 0); batches <= max."""
    feed = await harness.feed(partitions=3)
    await feed.put(numbered(300))
    source = harness.make(feed, max_messages=40)
    await source.start()
    batches = await drain(source, 300)
    await source.close()
    assert sorted(numbers(batches)) == list(range(300))
    indexes: dict[str, list[int]] = defaultdict(list)
    for batch in batches:
        for i in range(len(batch.messages)):
            partition, index = feed.origin(batch.locate(i))
            indexes[partition].append(index)
    assert sorted(indexes) == [str(p) for p in range(feed.partitions)]
    assert all(v == list(range(len(v))) for v in indexes.values())
    assert max(len(b.messages) for b in batches) <= 40


@sources(FINITE)
async def test_a_finite_source_delivers_everything_then_is_exhausted(kind: Kind, harness: Harness) -> None:
    """23 messages, at most 10 a batch: 10, 10, 3, then exhausted (and fetch returns None)."""
    feed = await harness.feed()
    values = numbered(23)
    await feed.put(values)
    source = harness.make(feed, max_messages=10)
    await source.start()
    batches: list[Batch] = []
    while not source.exhausted:
        batch = await source.fetch(0.05)
        if batch is not None:
            batches.append(batch)
    assert await source.fetch(0.05) is None
    await source.close()
    assert [len(b.messages) for b in batches] == [10, 10, 3]
    assert feed.holds([m for b in batches for m in b.messages], values)


@sources()
async def test_ready_only_between_start_and_close(kind: Kind, harness: Harness) -> None:
    """Not ready before start; ready once started (a group member: once it holds its partitions); not after
    close."""
    feed = await harness.feed(partitions=2)
    source = harness.make(feed)
    assert source.ready() == (False, "not started")
    await source.start()
    assert await until_ready(source) == []
    assert source.ready() == (True, harness.ready_reason(feed.partitions))
    await source.close()
    assert source.ready()[0] is False


@sources(FOLLOWS)
async def test_fetch_returns_none_when_idle_and_then_what_comes(kind: Kind, harness: Harness) -> None:
    """Nothing there: fetch returns None within about its timeout, and the source is not exhausted; a message
    put then is delivered."""
    feed = await harness.feed()
    source = harness.make(feed)
    await source.start()
    assert await until_ready(source) == []
    started = time.monotonic()
    assert await source.fetch(0.2) is None
    assert time.monotonic() - started < 1.0
    assert not source.exhausted
    await feed.put(numbered(1))
    assert numbers([await next_batch(source)]) == [0]


@sources()
async def test_pause_stops_delivery_and_resume_delivers_everything(kind: Kind, harness: Harness) -> None:
    """Paused (backpressure): fetch returns None while messages wait, and a group member stays one; resumed:
    every message is delivered, none lost or repeated."""
    feed = await harness.feed(partitions=2)
    values = numbered(120)
    if harness.can(FINITE):
        await feed.put(values)  # stdin is written before the source starts
    source = harness.make(feed, max_messages=10, queue_batches=2)
    await source.start()
    source.pause()
    assert await until_ready(source) == []
    if not harness.can(FINITE):
        await feed.put(values)
    for _ in range(4):
        assert await source.fetch(0.25) is None
    assert source.ready()[0], "still ready (a member of its group) while paused"
    source.resume()
    batches = await drain(source, len(values))
    await source.close()
    assert feed.holds([m for b in batches for m in b.messages], values)


@sources(RESUMES)
async def test_a_restart_resumes_after_the_committed_position(kind: Kind, harness: Harness) -> None:
    """Commit the first batch, read another without committing, close, start again: from after the first batch,
    nothing before it."""
    feed = await harness.feed()
    await feed.put(numbered(90))
    first = harness.make(feed, max_messages=30)
    await first.start()
    committed = await next_batch(first)
    await first.commit(committed.position)
    await next_batch(first)  # read, never committed: must come again
    await first.close()
    second = harness.make(feed, max_messages=30)
    await second.start()
    rest = numbers(await drain(second, 90 - len(committed.messages)))
    await second.close()
    assert rest == list(range(len(committed.messages), 90))


@sources(RESUMES)
async def test_a_commit_never_moves_backwards(kind: Kind, harness: Harness) -> None:
    """A late commit of an older position leaves the committed position where the newer one put it."""
    feed = await harness.feed()
    await feed.put(numbered(60))
    source = harness.make(feed, max_messages=20)
    await source.start()
    older, newer = await next_batch(source), await next_batch(source)
    await source.commit(newer.position)
    await source.commit(older.position)
    await source.close()
    partition, last = feed.origin(newer.locate(len(newer.messages) - 1))
    assert await feed.committed() == {partition: last + 1}


@sources(RESUMES, PARTITIONED)
async def test_the_newest_position_covers_the_batches_before_it(kind: Kind, harness: Harness) -> None:
    """The loop commits only the newest position when several wait (an alert held back): committing batches of
    partition 1 alone also commits what was read of partition 0."""
    feed = await harness.feed(partitions=2)
    source = harness.make(feed, max_messages=100)
    await source.start()
    assert await until_ready(source) == []
    await feed.put(numbered(15), partition=0)
    first = await drain(source, 15)
    await feed.put(numbered(10), partition=1)
    second = await drain(source, 10)
    assert {feed.origin(b.locate(0))[0] for b in second} == {"1"}, "the newest batches hold partition 1 only"
    await source.commit(second[-1].position)
    await source.close()
    assert first
    assert await feed.committed() == {"0": 15, "1": 10}


# -- group members ----------------------------------------------------------------------------
@sources(GROUP)
async def test_members_of_a_group_share_the_partitions(kind: Kind, harness: Harness) -> None:
    """Two members of one group each hold one of two partitions, and between them read every message once."""
    feed = await harness.feed(partitions=2)
    a, b = harness.make(feed), harness.make(feed)
    got_a: list[Batch] = []
    got_b: list[Batch] = []
    stop = asyncio.Event()
    await asyncio.gather(a.start(), b.start())
    fetching = [asyncio.create_task(keep_fetching(a, got_a, stop)), asyncio.create_task(keep_fetching(b, got_b, stop))]
    try:
        reason = harness.ready_reason(1)
        deadline = time.monotonic() + 90
        while not a.ready() == b.ready() == (True, reason):
            assert time.monotonic() < deadline, f"no split: {a.ready()[1]} / {b.ready()[1]}"
            await asyncio.sleep(0.2)
        await feed.put(numbered(100))
        deadline = time.monotonic() + 60
        while sum(len(x.messages) for x in got_a + got_b) < 100:
            assert time.monotonic() < deadline, "not every message within 60 s"
            await asyncio.sleep(0.2)
    finally:
        stop.set()
        await asyncio.gather(*fetching)
    assert got_a and got_b, "both members read"
    assert sorted(numbers(got_a + got_b)) == list(range(100)), "each message once across the members"


@sources(GROUP)
async def test_a_lost_partition_gets_no_commit_from_the_batch_its_old_owner_held(kind: Kind, harness: Harness) -> None:
    """A holds an uncommitted position covering two partitions; B joins and takes one; A's late commit of that
    position commits nothing of the partition it lost (nor, where a rebalance starts a new generation for every
    partition, of the one it kept)."""
    feed = await harness.feed(partitions=2)
    await feed.put(numbered(80))
    a = harness.make(feed, max_messages=10, rebalance_wait_s=1.0)  # gives up waiting for the held batches
    await a.start()
    handed_out: dict[str, int] = {}
    while len(handed_out) < 2:
        held = await next_batch(a)
        for i in range(len(held.messages)):
            partition, index = feed.origin(held.locate(i))
            handed_out[partition] = index
    assert len(held.position) == 2, "positions are cumulative: the last one covers both partitions"
    b = harness.make(feed, max_messages=10)
    later_a: list[Batch] = []
    later_b: list[Batch] = []
    stop = asyncio.Event()
    await b.start()
    fetching = [
        asyncio.create_task(keep_fetching(a, later_a, stop)),
        asyncio.create_task(keep_fetching(b, later_b, stop)),
    ]
    try:
        reason = harness.ready_reason(1)
        deadline = time.monotonic() + 90
        while not a.ready() == b.ready() == (True, reason):
            assert time.monotonic() < deadline, f"no split: {a.ready()[1]} / {b.ready()[1]}"
            await asyncio.sleep(0.2)
        split_at = len(later_a)
        await feed.put(numbered(2, first=1000))  # one more message in each partition: A reads the one it kept
        while len(later_a) == split_at:
            assert time.monotonic() < deadline, "A read nothing more after the split"
            await asyncio.sleep(0.2)
    finally:
        stop.set()
        await asyncio.gather(*fetching)
    kept = feed.origin(later_a[-1].locate(0))[0]
    await a.commit(held.position)
    expected = {kept: handed_out[kept] + 1} if harness.can(KEEPS) else {}
    assert await feed.committed() == expected


@sources(STARTS)
@pytest.mark.parametrize("start", ["latest", "a time between the records", "a time after every record"])
async def test_a_new_reader_starts_where_told(kind: Kind, harness: Harness, start: str) -> None:
    """``latest`` skips what is there; a time skips what came before it; a time after every record reads none of
    them (not the whole partition from its start), and then does read what comes after it joined."""
    feed = await harness.feed()
    await feed.put(numbered(20))
    await asyncio.sleep(1.1)  # the records' timestamps (ms) fall before the cut
    cut = datetime.now(UTC).isoformat()
    await asyncio.sleep(0.1)
    if start == "a time between the records":
        await feed.put(numbered(10, first=20))
    source = harness.make(feed, start="latest" if start == "latest" else cut)
    await source.start()
    got = await until_ready(source)
    if start != "a time between the records":
        # A reader joins when its position is set, which is not observable from here: put markers until one
        # arrives; what is put after that comes after it joined.
        deadline = time.monotonic() + 60
        while not got:
            assert time.monotonic() < deadline, "no marker delivered within 60 s"
            await feed.put([orjson.dumps({"n": -1})])
            batch = await source.fetch(0.5)
            if batch is not None:
                got.append(batch)
        await feed.put(numbered(10, first=20))

    def records(batch: Batch) -> int:  # not the markers
        return sum(n >= 0 for n in numbers([batch]))

    got += await drain(source, 10 - sum(map(records, got)), count=records)
    await source.close()
    assert [n for n in numbers(got) if n >= 0] == list(range(20, 30))


@sources(REBALANCE_WAIT)
async def test_a_clean_rebalance_waits_for_the_in_flight_batch(kind: Kind, harness: Harness) -> None:
    """A second member joins while the first holds uncommitted batches: the revoke waits for their commit, and
    the new owner starts after it (nothing delivered twice, nothing skipped).

    Both members keep fetching, as the loop does (librdkafka runs the rebalance inside a fetch)."""
    feed = await harness.feed(partitions=2)
    await feed.put(numbered(200))
    a = harness.make(feed, max_messages=40, rebalance_wait_s=15)
    b = harness.make(feed, max_messages=40, rebalance_wait_s=15)
    held: list[Batch] = []
    got_b: list[Batch] = []
    stop = asyncio.Event()

    async def join_b() -> None:
        await b.start()
        await keep_fetching(b, got_b, stop)

    await a.start()
    held.append(await next_batch(a))
    running = [asyncio.create_task(keep_fetching(a, held, stop)), asyncio.create_task(join_b())]
    try:
        await asyncio.sleep(3.0)
        assert not got_b and not b.ready()[0], "the rebalance waits for the revoked batches"
        for batch in list(held):  # the loop finished these batches: state durable, alerts delivered
            await a.commit(batch.position)
        for _ in range(150):
            if b.ready()[0] and got_b:
                break
            await asyncio.sleep(0.1)
        assert b.ready()[0], "the new member got its partitions once the batches were committed"
        for _ in range(40):  # until both have read everything
            await asyncio.sleep(0.25)
            if sum(len(x.messages) for x in held + got_b) >= 200:
                break
    finally:
        stop.set()
        await asyncio.gather(*running)
    for batch in held:
        await a.commit(batch.position)
    for batch in got_b:
        await b.commit(batch.position)
    assert sorted(numbers(held + got_b)) == list(range(200)), "each message exactly once across the rebalance"


@sources(SHARING)
async def test_a_replica_sharing_the_group_is_a_problem(kind: Kind, harness: Harness) -> None:
    """Two processes that must each own every partition (sqlite stores) in one group: once each holds part of
    them for longer than the grace, both report that another replica shares the group. (The grace, 30 s at
    least, is shortened here; the rule itself is tests/unit/test_partitions.py's.)"""
    feed = await harness.feed(partitions=2)
    pair = [harness.make(feed, exclusive=True, probe_interval_s=0.5) for _ in range(2)]
    for source in pair:
        source.sharing.grace_s = 2.0  # type: ignore[attr-defined]  (a group source's check; not the protocol's)
        assert source.problem() is None
    stop = asyncio.Event()
    await asyncio.gather(*(source.start() for source in pair))
    fetching = [asyncio.create_task(keep_fetching(source, [], stop)) for source in pair]
    try:
        deadline = time.monotonic() + 120
        while not all(source.problem() for source in pair):
            assert time.monotonic() < deadline, f"no problem found: {[s.ready()[1] for s in pair]}"
            await asyncio.sleep(0.2)
    finally:
        stop.set()
        await asyncio.gather(*fetching)
    for source in pair:
        assert "owns 1 of 2 partitions" in (source.problem() or "")
        assert "another replica shares the" in (source.problem() or "")
