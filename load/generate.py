"""The synthetic Defender stream for load tests: Kafka, a file or stdout, with its expected ``hunt`` answer.

Built on :class:`rmmwatch.synthetic.Generator` (through its public ``GeneratorConfig`` only): a device
population with a realistic mix of process, network and certificate events, compact records of about
1.5 KB, 1 to N records per message, NetSupport launches at a chosen ratio as abuse and benign stories (one
per bundled exclusion), decoys, other RMM tools' stories and near misses in the three tables, duplicates,
late, future-dated and other-table records, and malformed messages. Deterministic from
``--seed``; with ``--clock`` the generator's clock starts at a fixed instant and advances ``--step-ms``
per message, so two runs write the same bytes (without it the clock is the wall clock).

Where it writes:

* ``--kafka TOPIC`` (with ``--bootstrap-servers`` or ``RMMWATCH_TEST_KAFKA_BOOTSTRAP``): the topic is
  created with ``--partitions`` if missing; messages go round-robin over the partitions through a batching
  producer (``linger_ms`` 20, batches up to 1 MB, ``acks=all``, optional ``--compression``), at most
  ``--in-flight`` unacknowledged messages at a time; the run ends when every message is acknowledged;
* ``--output PATH`` (``-`` = stdout): NDJSON, one message per line (what ``rmmwatch hunt`` and
  ``rmmwatch run --source file:PATH`` read).

How much and how fast: ``--count`` messages, ``--records`` records or ``--seconds`` of writing, whichever
comes first (one of them is required); ``--rate`` messages/s (default: as fast as possible). A progress
line on stderr about once a second (messages, records, messages/s, records/s, MB/s, elapsed), none with
``--quiet``.

The expected answer: ``--expect PATH`` writes exactly what ``rmmwatch hunt --rule bundled:netsupport --now
<end> --format json`` prints over the messages written (its code path run in-process on every message as it is
written: ``rmmwatch.events.Detector`` with the bundled NetSupport rule, or the rules of ``--rule``, then
``rmmwatch.window.summarize`` at ``<end>``, the generator's last clock value); the ``--now`` to give ``hunt`` is
printed on stderr. So any run can be checked: ``rmmwatch hunt --rule bundled:netsupport --now <end> --format json
FILE`` over a file written with ``--output``, or the final state of a detector run with the same rules, must
equal it.

    python -m load.generate --count 1000 --output stream.ndjson --expect expected.json --clock 2026-11-27T12:00:00Z
    python -m load.generate --kafka defender --partitions 8 --records 2000000 --rate 2000 --compression gzip
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

from rmmwatch.events import Detector
from rmmwatch.hunt import Hunt, print_rows
from rmmwatch.kql.datetimes import format_datetime, parse_datetime
from rmmwatch.model import BatchResult, wall_clock
from rmmwatch.rules import Rule, load_rules
from rmmwatch.synthetic import Generator, GeneratorConfig, GeneratorStats

COMPRESSIONS = ("none", "gzip", "lz4", "zstd", "snappy")


# -- the expected answer ----------------------------------------------------------------------------


class ExpectedHunt:
    """``rmmwatch hunt``'s code path, fed one message at a time: the answer over what was written.

    Only the matches are kept (a few hundred bytes each); problems and excluded events are counted
    and dropped, so memory stays bounded by the number of NetSupport events, not the stream.
    """

    def __init__(self, rules: list[Rule] | None = None, *, exclusions: bool = True) -> None:
        self.rules = rules if rules is not None else load_rules(["bundled:netsupport"], exclusions=exclusions)
        self.detector = Detector(self.rules)
        self.hunt = Hunt(self.rules)
        self.groups: set[tuple[Any, ...]] = set()
        self.matches = 0
        self.excluded = 0
        self.problems = 0

    def add(self, message: bytes) -> None:
        result = self.detector.process([message], BatchResult())
        self.excluded += len(result.excluded)
        self.problems += len(result.problems)
        self.matches += len(result.matches)
        self.groups.update(match.group for match in result.matches)
        self.hunt.add(result.matches)

    def rows(self, now: int) -> list[dict[str, Any]]:
        """The rows ``hunt --now`` prints (tagged with RuleId when there are several rules)."""
        return self.hunt.rows(now)

    def write(self, path: str, now: int) -> list[dict[str, Any]]:
        """Write the rows exactly as ``rmmwatch hunt --format json`` prints them."""
        rows = self.rows(now)
        with open(path, "w", encoding="utf-8") as out:
            print_rows(rows, self.hunt.columns, "json", out)
        return rows


# -- where messages go ------------------------------------------------------------------------------


class Sink(Protocol):
    """A destination for message bodies."""

    async def start(self) -> None: ...

    async def write(self, message: bytes, index: int) -> None: ...

    async def close(self) -> None: ...


class FileSink:
    """NDJSON to a file or stdout (``-``)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._out: IO[bytes] | None = None

    async def start(self) -> None:
        self._out = sys.stdout.buffer if self.path == "-" else open(self.path, "wb")  # noqa: SIM115

    async def write(self, message: bytes, index: int) -> None:
        assert self._out is not None
        self._out.write(message)
        self._out.write(b"\n")

    async def close(self) -> None:
        if self._out is None:
            return
        self._out.flush()
        if self._out is not sys.stdout.buffer:
            self._out.close()
        self._out = None


class KafkaSink:
    """A batching, ``acks=all`` producer, round-robin over the topic's partitions (created if missing)."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        partitions: int = 4,
        compression: str = "none",
        in_flight: int = 2000,
        linger_ms: int = 20,
    ) -> None:
        from aiokafka import codec

        available = {"none": True, "gzip": True, "lz4": codec.has_lz4(), "zstd": codec.has_zstd(),
                     "snappy": codec.has_snappy()}  # fmt: skip
        if not available.get(compression, False):
            raise SystemExit(
                f"--compression {compression}: aiokafka here cannot ({compression} needs the cramjam package, "
                "which is not installed in this environment); use none or gzip"
            )
        self.bootstrap = bootstrap
        self.topic = topic
        self.partitions = partitions
        self.compression = compression
        self.in_flight = in_flight
        self.linger_ms = linger_ms
        self._producer: Any = None
        self._pending: collections.deque[asyncio.Future[Any]] = collections.deque()

    async def start(self) -> None:
        from aiokafka import AIOKafkaProducer

        self.partitions = await ensure_topic(self.bootstrap, self.topic, self.partitions)
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            acks="all",
            linger_ms=self.linger_ms,
            max_batch_size=1_000_000,
            max_request_size=4_000_000,
            compression_type=None if self.compression == "none" else self.compression,
        )
        await self._producer.start()

    async def write(self, message: bytes, index: int) -> None:
        future = await self._producer.send(self.topic, message, partition=index % self.partitions)
        self._pending.append(future)
        while len(self._pending) > self.in_flight:
            await self._pending.popleft()

    async def close(self) -> None:
        if self._producer is None:
            return
        try:
            while self._pending:
                await self._pending.popleft()
        finally:
            await self._producer.stop()
            self._producer = None


async def ensure_topic(bootstrap: str, topic: str, partitions: int, configs: dict[str, str] | None = None) -> int:
    """Create ``topic`` with ``partitions`` (replication 1, topic ``configs``) unless it exists; return its
    partition count."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics([NewTopic(topic, partitions, 1, topic_configs=configs or {})])
        described = await admin.describe_topics([topic])
        found = len(described[0]["partitions"]) if described and described[0].get("partitions") else partitions
    finally:
        await admin.close()
    if found != partitions:
        print(f"generate: topic {topic} exists with {found} partitions (not {partitions}); using {found}",
              file=sys.stderr)  # fmt: skip
    return found


async def delete_topics(bootstrap: str, topics: list[str]) -> None:
    """Delete topics (best effort: a load run should not leave gigabytes on the broker)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics(topics)
    except Exception as exc:
        print(f"generate: could not delete {', '.join(topics)}: {exc}", file=sys.stderr)
    finally:
        await admin.close()


# -- the run ----------------------------------------------------------------------------------------


@dataclass(slots=True)
class Summary:
    """What a run wrote."""

    messages: int = 0
    records: int = 0
    bytes: int = 0
    seconds: float = 0.0
    end: int = 0  # the generator's last clock value (ticks): ``hunt --now`` for the expected answer
    stats: GeneratorStats = field(default_factory=GeneratorStats)
    expected: ExpectedHunt | None = None


class _Progress:
    """One stderr line about once a second (carriage-return updated on a terminal)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.last = time.perf_counter()

    def show(self, summary: Summary, started: float, final: bool = False) -> None:
        now = time.perf_counter()
        if self.quiet or (not final and now - self.last < 1.0):
            return
        self.last = now
        elapsed = max(now - started, 1e-9)
        line = (f"generate: {elapsed:7.1f} s  {summary.messages:>10,} msgs  {summary.records:>12,} records  "
                f"{summary.messages / elapsed:9,.0f} msgs/s  {summary.records / elapsed:10,.0f} records/s  "
                f"{summary.bytes / elapsed / 1e6:7.1f} MB/s")  # fmt: skip
        if self.tty:
            sys.stderr.write("\r" + line + ("\n" if final else ""))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()


def fixed_clock(start: str, step_ms: float) -> Callable[[], int]:
    """A clock that starts at ``start`` and advances ``step_ms`` per call (the generator calls it once per
    message), as ``rmmwatch generate --clock`` does."""
    step = int(step_ms * 10_000)
    ticks = [parse_datetime(start) - step]

    def clock() -> int:
        ticks[0] += step
        return ticks[0]

    return clock


async def write_stream(
    config: GeneratorConfig,
    sink: Sink,
    *,
    count: int | None = None,
    records: int | None = None,
    seconds: float | None = None,
    rate: float | None = None,
    clock: Callable[[], int] | None = None,
    expect: bool = False,
    rules: list[Rule] | None = None,
    quiet: bool = True,
    stop_when: Callable[[Summary], bool] | None = None,
) -> Summary:
    """Generate and write messages until a bound is hit; return what was written.

    ``rate`` paces messages (a schedule, not sleeps after each send: a slow moment is caught up);
    ``rules`` are those of the expected answer (default: every bundled rule);
    ``stop_when`` is asked after every message (the 100,000-device stream stops on a device count).
    """
    if count is None and records is None and seconds is None and stop_when is None:
        raise ValueError("unbounded: give count, records, seconds or stop_when")
    last = [0]
    base = clock or wall_clock

    def tracking() -> int:
        last[0] = base()
        return last[0]

    generator = Generator(config, tracking)
    summary = Summary(stats=generator.stats, expected=ExpectedHunt(rules) if expect else None)
    progress = _Progress(quiet)
    await sink.start()
    started = time.perf_counter()
    interval = 1.0 / rate if rate else 0.0
    try:
        while True:
            if count is not None and summary.messages >= count:
                break
            if records is not None and summary.records >= records:
                break
            elapsed = time.perf_counter() - started
            if seconds is not None and elapsed >= seconds:
                break
            if interval:
                pause = started + summary.messages * interval - time.perf_counter()
                if pause > 0:
                    await asyncio.sleep(pause)
            message = generator.message()
            await sink.write(message, summary.messages)
            summary.messages = generator.stats.messages
            summary.records = generator.stats.records
            summary.bytes += len(message)
            if summary.expected is not None:
                summary.expected.add(message)
            progress.show(summary, started)
            if stop_when is not None and stop_when(summary):
                break
    finally:
        await sink.close()
    summary.seconds = time.perf_counter() - started
    summary.end = last[0] if clock is not None else wall_clock()
    progress.show(summary, started, final=True)
    return summary


def config_from_args(args: argparse.Namespace) -> GeneratorConfig:
    return GeneratorConfig(
        seed=args.seed,
        devices=args.devices,
        min_records=args.min_records,
        max_records=args.max_records,
        netsupport_ratio=args.netsupport_ratio,
        netsupport_devices=args.netsupport_devices,
        decoy_ratio=args.decoy_ratio,
        network_ratio=args.network_ratio,
        certificate_ratio=args.certificate_ratio,
        rmm_ratio=args.rmm_ratio,
        rmm_devices=args.rmm_devices,
        near_miss_ratio=args.near_miss_ratio,
        duplicate_ratio=args.duplicate_ratio,
        late_ratio=args.late_ratio,
        future_ratio=args.future_ratio,
        other_table_ratio=args.other_table_ratio,
        malformed_ratio=args.malformed_ratio,
        compact=not args.full_records,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m load.generate",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    out = parser.add_argument_group("where")
    where = out.add_mutually_exclusive_group(required=True)
    where.add_argument("--kafka", metavar="TOPIC", help="write to this Kafka topic (created if missing)")
    where.add_argument("--output", metavar="PATH", help="write NDJSON to this file; - for stdout")
    out.add_argument("--bootstrap-servers", default=os.environ.get("RMMWATCH_TEST_KAFKA_BOOTSTRAP"),
                     help="Kafka bootstrap servers (default: $RMMWATCH_TEST_KAFKA_BOOTSTRAP)")  # fmt: skip
    out.add_argument("--partitions", type=int, default=4, help="partitions of a topic that is created")
    out.add_argument("--compression", choices=COMPRESSIONS, default="none",
                     help="producer compression (lz4, zstd, snappy need cramjam in the environment)")  # fmt: skip
    out.add_argument("--in-flight", type=int, default=2000, help="unacknowledged messages at most")
    bound = parser.add_argument_group("how much, how fast (at least one bound)")
    bound.add_argument("--count", type=int, help="messages")
    bound.add_argument("--records", type=int, help="records (the message that reaches it is the last)")
    bound.add_argument("--seconds", type=float, help="seconds of writing")
    bound.add_argument("--rate", type=float, help="messages per second (default: as fast as possible)")
    bound.add_argument("--quiet", action="store_true", help="no progress on stderr")
    what = parser.add_argument_group("what (rmmwatch.synthetic.GeneratorConfig)")
    what.add_argument("--seed", type=int, default=1)
    what.add_argument("--clock", help="a fixed start time (ISO 8601) instead of the wall clock: reproducible bytes")
    what.add_argument("--step-ms", type=float, default=10.0, help="with --clock: clock step per message")
    what.add_argument("--devices", type=int, default=2000, help="device population")
    what.add_argument("--min-records", type=int, default=1, help="records per message, at least")
    what.add_argument("--max-records", type=int, default=50, help="records per message, at most")
    what.add_argument("--netsupport-ratio", type=float, default=0.001, help="NetSupport launches per record")
    what.add_argument("--netsupport-devices", type=int, default=25, help="devices the NetSupport stories fall on")
    what.add_argument("--decoy-ratio", type=float, default=0.0005, help="'NetSupportive'-style decoys per record")
    defaults = GeneratorConfig()
    what.add_argument("--network-ratio", type=float, default=defaults.network_ratio,
                      help="DeviceNetworkEvents records per record")  # fmt: skip
    what.add_argument("--certificate-ratio", type=float, default=defaults.certificate_ratio,
                      help="DeviceFileCertificateInfo records per record")  # fmt: skip
    what.add_argument("--rmm-ratio", type=float, default=defaults.rmm_ratio,
                      help="RMM tool stories (AnyDesk, TeamViewer, ...) per record, in every table")  # fmt: skip
    what.add_argument("--rmm-devices", type=int, default=defaults.rmm_devices, help="devices the RMM stories fall on")
    what.add_argument("--near-miss-ratio", type=float, default=defaults.near_miss_ratio,
                      help="near misses of the RMM tools' names and domains per record")  # fmt: skip
    what.add_argument("--duplicate-ratio", type=float, default=0.0, help="exact re-sends per record")
    what.add_argument("--late-ratio", type=float, default=0.0, help="records older than the 5-day window")
    what.add_argument("--future-ratio", type=float, default=0.0, help="records dated 1 to 10 minutes ahead")
    what.add_argument("--other-table-ratio", type=float, default=0.0, help="records of a table no rule reads")
    what.add_argument("--malformed-ratio", type=float, default=0.0, help="malformed messages, per message")
    what.add_argument("--full-records", action="store_true", help="every column (about 2 KB) instead of compact")
    parser.add_argument("--expect", metavar="PATH", help="write the expected `rmmwatch hunt --format json` rows here")
    parser.add_argument("--rule", action="append", metavar="RULE",
                        help="with --expect: the rules hunt runs (rmmwatch's --rule: file or bundled:<name>; "
                        "repeatable; default: the bundled NetSupport rule)")  # fmt: skip
    return parser


async def _main(args: argparse.Namespace) -> int:
    sink: Sink
    if args.kafka:
        if not args.bootstrap_servers:
            print("generate: --kafka needs --bootstrap-servers (or RMMWATCH_TEST_KAFKA_BOOTSTRAP)", file=sys.stderr)
            return 2
        sink = KafkaSink(args.bootstrap_servers, args.kafka, partitions=args.partitions,
                         compression=args.compression, in_flight=args.in_flight)  # fmt: skip
    else:
        sink = FileSink(args.output)
    clock = fixed_clock(args.clock, args.step_ms) if args.clock else None
    summary = await write_stream(config_from_args(args), sink, count=args.count, records=args.records,
                                 seconds=args.seconds, rate=args.rate, clock=clock, expect=bool(args.expect),
                                 rules=load_rules(args.rule) if args.rule else None, quiet=args.quiet)  # fmt: skip
    stats = summary.stats
    print(
        f"generate: wrote {summary.messages:,} messages, {summary.records:,} records, {summary.bytes / 1e6:,.1f} MB "
        f"in {summary.seconds:.1f} s ({summary.bytes / max(summary.records, 1):.0f} B/record); {stats.netsupport:,} "
        f"NetSupport launches, {stats.decoys:,} decoys, {stats.rmm:,} RMM stories, {stats.near_misses:,} near misses, "
        f"{stats.duplicates:,} duplicates, {stats.late:,} late, "
        f"{stats.future:,} future, {stats.other_table:,} other-table, {stats.malformed:,} malformed; end "
        f"{format_datetime(summary.end)}",
        file=sys.stderr,
    )
    if args.expect and summary.expected is not None:
        rows = summary.expected.write(args.expect, summary.end)
        print(
            f"generate: expected answer ({len(rows)} rows, {summary.expected.matches:,} matched events, "
            f"{summary.expected.excluded:,} excluded) in {args.expect}: "
            f"rmmwatch hunt {' '.join(f'--rule {spec}' for spec in args.rule or ['bundled:netsupport'])} "
            f"--now {format_datetime(summary.end)} --format json ...",
            file=sys.stderr,
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.count is None and args.records is None and args.seconds is None:
        build_parser().error("give a bound: --count, --records or --seconds")
    if args.min_records < 1 or args.max_records < args.min_records:
        build_parser().error("need 1 <= --min-records <= --max-records")
    try:
        return asyncio.run(_main(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # stdout closed by the reader (e.g. `| head`)
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
