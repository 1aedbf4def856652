"""Diagnostics behind ``load/bench.py``'s findings: rmmwatch's own options, one change at a time.

Where does rmmwatch's time, latency and memory go beyond the Kafka client? Each part runs ``rmmwatch run``
with the options of a variant (the store, its durability, the batch size) and nothing else changed, using
``load/bench.py``'s helpers, so its figures read like the bench's:

* ``throughput``: a pre-filled topic (``--records``, the bench's stream) consumed once per variant and round
  (records/s from the first message to the last, CPU seconds, peak RSS);
* ``latency``: produce-to-alert p50/p99 at 25% and 50% of ``--max-rate`` messages/s (the bench's latency part,
  one detector per variant);
* ``rss``: steady RSS with ``--rss-devices`` devices in the window (the bench's RSS part) per variant.

Needs the test services and the peers virtualenv (``python -m load.bench`` creates it).

    python -m load.bench_variants [--what throughput,latency,rss] [--records 1000000] [--max-rate 7600]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import uuid
from pathlib import Path

from load.bench import Failed, _cache, _percentile, _stop, _wait_consumed, ensure_peers, prefill, run_latency, run_rss
from load.bench_kafka import _start_detector
from load.bench_redis import _drop
from load.generate import delete_topics

THROUGHPUT = ("--store sqlite", "--store sqlite --sqlite-synchronous normal", "--store memory", "--store REDIS",
              "--store sqlite --batch-max-messages 100")  # fmt: skip
LATENCY = ("--store sqlite", "--store sqlite --kafka-client aiokafka", "--store sqlite --sqlite-synchronous normal",
           "--store memory",
           "--store sqlite --batch-max-messages 100")  # fmt: skip
RSS = ("--batch-max-messages 500", "--batch-max-messages 100")


def _variants(texts: tuple[str, ...], redis_url: str | None, prefix: str = "") -> list[list[str]]:
    out = []
    for text in texts:
        if "REDIS" in text and not redis_url:
            continue
        store = f"{redis_url} --redis-prefix {prefix}-{uuid.uuid4().hex[:6]}"
        out.append(text.replace("REDIS", store).split())
    return out


def throughput(bootstrap: str, records: int, rounds: int, redis_url: str | None, workdir: Path) -> None:
    topic = prefill(bootstrap, records, 4, workdir)
    print(f"throughput: {topic.messages:,} messages, {topic.records:,} records, {rounds} rounds", flush=True)
    prefix = f"bench-variants-{uuid.uuid4().hex[:6]}"
    try:
        for index in range(rounds):
            for extra in _variants(THROUGHPUT, redis_url, prefix):
                run = uuid.uuid4().hex[:6]
                options = ["--kafka-group-id", f"var-{run}", "--data-dir", str(workdir / run),
                           "--sink", f"jsonl:{workdir / f'alerts-{run}.jsonl'}", *extra]  # fmt: skip
                process, port = _start_detector(bootstrap, topic.name, workdir, options)
                try:
                    result = _wait_consumed(process, port, topic.messages, workdir / f"{topic.name}.log")
                except Failed as exc:
                    print(f"  {' '.join(extra):58} failed: {exc}", flush=True)
                    continue
                finally:
                    _stop(process)
                print(f"  round {index + 1}: {' '.join(extra):58} {topic.records / result.seconds:9,.0f} records/s "
                      f"({result.seconds:.2f} s), CPU {result.cpu:.1f} s, peak RSS {result.rss / 1e6:.0f} MB",
                      flush=True)  # fmt: skip
    finally:
        asyncio.run(delete_topics(bootstrap, [topic.name]))
        if redis_url:
            asyncio.run(_drop(redis_url, prefix))


def latency(bootstrap: str, max_rate: float, seconds: float, workdir: Path) -> None:
    python, _ = ensure_peers()
    python = python or _cache() / "peers-venv" / "bin" / "python"
    print(f"latency: 25% and 50% of {max_rate:,.0f} messages/s, {seconds:.0f} s each", flush=True)
    for extra in _variants(LATENCY, None):
        marks: list[str] = []
        try:
            phases = run_latency(python, bootstrap, max_rate, seconds, workdir, marks, (0.25, 0.5), extra)
        except Failed as exc:
            print(f"  {' '.join(extra):45} failed: {exc}", flush=True)
            continue
        finally:
            asyncio.run(delete_topics(bootstrap, [t for m in marks for t in (m, f"{m}-alerts")]))
        for phase in phases:
            if phase.values:
                print(f"  {' '.join(extra):45} {phase.fraction:4.0%}: sent {phase.achieved:,.0f} msgs/s, "
                      f"{len(phase.values):,} alerts, p50 {_percentile(phase.values, 0.5) * 1000:,.0f} ms, "
                      f"p99 {_percentile(phase.values, 0.99) * 1000:,.0f} ms", flush=True)  # fmt: skip


def rss(bootstrap: str, devices: int, workdir: Path) -> None:
    print(f"rss: {devices:,} devices in the window, sqlite store", flush=True)
    for extra in _variants(RSS, None):
        try:
            result, name = run_rss(bootstrap, workdir, devices, extra)
        except Failed as exc:
            print(f"  {' '.join(extra):30} failed: {exc}", flush=True)
            continue
        asyncio.run(delete_topics(bootstrap, [name]))
        print(f"  {' '.join(extra):30} steady {result.steady / 1e6:.0f} MB, peak {result.peak / 1e6:.0f} MB, "
              f"consumed and alerted in {result.seconds:.1f} s", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--what", default="throughput,latency,rss")
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-rate", type=float, default=7600.0, help="messages/s that latency's 100%% stands for")
    parser.add_argument("--latency-seconds", type=float, default=20.0)
    parser.add_argument("--rss-devices", type=int, default=100_000)
    args = parser.parse_args()
    bootstrap = os.environ.get("RMMWATCH_TEST_KAFKA_BOOTSTRAP")
    if not bootstrap:
        sys.exit("RMMWATCH_TEST_KAFKA_BOOTSTRAP is not set: start the test services (scripts/services/all.sh start)")
    what = set(args.what.split(","))
    with tempfile.TemporaryDirectory(prefix="rmmwatch-variants-") as tmp:
        workdir = Path(tmp)
        if "throughput" in what:
            throughput(bootstrap, args.records, args.rounds, os.environ.get("RMMWATCH_TEST_REDIS_URL"), workdir)
        if "latency" in what:
            latency(bootstrap, args.max_rate, args.latency_seconds, workdir)
        if "rss" in what:
            rss(bootstrap, args.rss_devices, workdir)


if __name__ == "__main__":
    main()
