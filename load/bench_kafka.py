"""Benchmark the Kafka path on the real broker: rmmwatch vs a bare aiokafka consumer, and latency.

1. Pre-fill a topic (4 partitions) with generated Defender envelopes (compact records,
   1 to 50 per message, NetSupport in 0.1% of records).
2. The client's ceiling: a bare aiokafka consumer that reads every message and does nothing
   with it (``getmany``, 500 records per call), in this process.
3. rmmwatch: ``rmmwatch run --source kafka`` (sqlite store, alerts to a jsonl file) in a
   subprocess, measured from its first consumed message to its last (metrics polled every
   50 ms), with its CPU seconds and peak RSS from /proc.
4. Produce-to-alert latency: a second topic fed at half of rmmwatch's measured rate for
   ``--latency-seconds``, NetSupport in 2% of records, a rule that alerts on every change;
   latency = the alert record's timestamp on the alerts topic minus the send time of the
   message that carried the triggering event.

Needs the test services: ``make bench-kafka`` starts and stops them.

    python -m load.bench_kafka [--messages 8000] [--latency-seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from rmmwatch.synthetic import Generator, GeneratorConfig

PARTITIONS = 4
RULE_EVERY = """
alerting:
  update: every
"""


def _bootstrap() -> str:
    value = os.environ.get("RMMWATCH_TEST_KAFKA_BOOTSTRAP")
    if not value:
        sys.exit("RMMWATCH_TEST_KAFKA_BOOTSTRAP is not set: run `make bench-kafka` (it starts the services)")
    return value


async def _topic(bootstrap: str, name: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, PARTITIONS, 1)])
    finally:
        await admin.close()


async def _fill(bootstrap: str, topic: str, messages: list[bytes]) -> float:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20, max_request_size=4_000_000,
                                max_batch_size=1_000_000)  # fmt: skip
    await producer.start()
    started = time.perf_counter()
    try:
        futures = [await producer.send(topic, m, partition=i % PARTITIONS) for i, m in enumerate(messages)]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return time.perf_counter() - started


async def _bare(bootstrap: str, topic: str, total: int) -> tuple[float, float]:
    # The same fetch settings as rmmwatch's Kafka source, so the ceiling is the client's, not the config's.
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"bare-{uuid.uuid4().hex[:6]}",
                                auto_offset_reset="earliest", enable_auto_commit=False, max_poll_records=500,
                                max_partition_fetch_bytes=4 * 1024 * 1024)  # fmt: skip
    await consumer.start()
    seen = 0
    first = 0.0
    cpu_before = time.process_time()
    try:
        while seen < total:
            batch = await consumer.getmany(timeout_ms=1000, max_records=500)
            count = sum(len(v) for v in batch.values())
            if count and not first:
                first = time.perf_counter()
            seen += count
        elapsed = time.perf_counter() - first
    finally:
        await consumer.stop()
    return elapsed, time.process_time() - cpu_before


def _metric(port: int, name: str) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return -1.0
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith((name + "{", name + " ")))  # fmt: skip


def _proc_stats(pid: int) -> tuple[float, int]:
    """(CPU seconds, peak RSS bytes) of a live process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    peak = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            peak = int(line.split()[1]) * 1024
    return cpu, peak


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_detector(bootstrap: str, topic: str, workdir: Path, extra: list[str]) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    if "--rule" not in extra:
        extra = ["--rule", "bundled:netsupport", *extra]  # the rule the figures (and expected answers) are for
    process = subprocess.Popen(
        [sys.executable, "-m", "rmmwatch.cli", "run", "--source", "kafka", "--kafka-bootstrap-servers", bootstrap,
         "--kafka-topics", topic, "--kafka-group-id", f"rmm-{topic}", "--data-dir", str(workdir / topic),
         "--metrics-port", str(port), "--metrics-host", "127.0.0.1", "--log-level", "warning", *extra],
        stdout=subprocess.DEVNULL, stderr=open(workdir / f"{topic}.log", "wb"),  # noqa: SIM115
    )  # fmt: skip
    return process, port


def _rmmwatch(bootstrap: str, topic: str, total: int, workdir: Path) -> tuple[float, float, int]:
    run = uuid.uuid4().hex[:6]
    process, port = _start_detector(bootstrap, topic, workdir, ["--sink", f"jsonl:{workdir / 'alerts.jsonl'}",
                                                                "--kafka-group-id", f"rmm-{run}",
                                                                "--data-dir", str(workdir / run)])  # fmt: skip
    first = 0.0
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            value = _metric(port, "rmmwatch_messages_total")
            now = time.perf_counter()
            if value > 0 and not first:
                first = now
            if value >= total:
                cpu, peak = _proc_stats(process.pid)
                return now - first, cpu, peak
            time.sleep(0.05)
        raise SystemExit("rmmwatch did not consume the topic within 10 minutes")
    finally:
        process.terminate()
        process.wait(timeout=60)


async def _latency(bootstrap: str, rate: float, seconds: float, workdir: Path) -> list[float]:
    topic = f"bench-lat-{uuid.uuid4().hex[:6]}"
    alerts = f"{topic}-alerts"
    await _topic(bootstrap, topic)
    await _topic(bootstrap, alerts)
    rule = workdir / "every.yaml"
    bundled = Path(__file__).resolve().parents[1] / "service/rmmwatch/rules/netsupport.yaml"
    text = bundled.read_text().split("\nalerting:")[0] + RULE_EVERY
    rule.write_text(text)
    process, port = _start_detector(bootstrap, topic, workdir, ["--sink", f"kafka:{alerts}", "--rule", str(rule),
                                                                "--store", "memory"])  # fmt: skip
    generator = Generator(GeneratorConfig(seed=9, netsupport_ratio=0.02, compact=True))
    sent: dict[int, float] = {}
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=0, max_request_size=4_000_000)
    await producer.start()
    try:
        deadline = time.monotonic() + 120
        while _metric(port, "rmmwatch_ready") < 2:
            if time.monotonic() > deadline or process.poll() is not None:
                raise SystemExit(f"the latency detector never became ready (see {workdir / topic}.log)")
            await asyncio.sleep(0.2)
        interval = 1.0 / rate
        start = time.perf_counter()
        count = 0
        while time.perf_counter() - start < seconds:
            message = generator.message()
            stamp = time.time()
            await producer.send(topic, message, partition=count % PARTITIONS)
            for record in orjson.loads(message)["records"]:
                row = record["properties"]
                if "netsupport" in (row.get("ProcessVersionInfoCompanyName") or "").lower():
                    sent[row["ReportId"]] = stamp
            count += 1
            pause = start + count * interval - time.perf_counter()
            if pause > 0:
                await asyncio.sleep(pause)
        await producer.flush()
        await asyncio.sleep(3)
    finally:
        await producer.stop()
        process.terminate()
        process.wait(timeout=60)
    consumer = AIOKafkaConsumer(alerts, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    latencies: list[float] = []
    try:
        idle = 0
        while idle < 3:
            batch = await consumer.getmany(timeout_ms=500)
            records = [r for rs in batch.values() for r in rs]
            idle = 0 if records else idle + 1
            for record in records:
                trigger = orjson.loads(record.value).get("trigger") or {}
                if trigger.get("ReportId") in sent:
                    latencies.append(record.timestamp / 1000 - sent[trigger["ReportId"]])
    finally:
        await consumer.stop()
    return latencies


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=8000)
    parser.add_argument("--latency-seconds", type=float, default=20)
    parser.add_argument("--rounds", type=int, default=3, help="runs of each consumer (alternating); medians shown")
    args = parser.parse_args()
    bootstrap = _bootstrap()
    generator = Generator(GeneratorConfig(seed=3, netsupport_ratio=0.001, compact=True))
    messages = list(generator.messages(args.messages))
    records = generator.stats.records
    size = sum(map(len, messages))
    topic = f"bench-{uuid.uuid4().hex[:6]}"
    await _topic(bootstrap, topic)
    fill = await _fill(bootstrap, topic, messages)
    print(f"rmmwatch bench-kafka: {len(messages)} messages, {records} records, {size / 1e6:.0f} MB, "
          f"{PARTITIONS} partitions (pre-filled in {fill:.1f} s)")  # fmt: skip
    bare_runs: list[tuple[float, float]] = []
    rmm_runs: list[tuple[float, float, int]] = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for _ in range(args.rounds):
            bare_runs.append(await _bare(bootstrap, topic, len(messages)))
            rmm_runs.append(_rmmwatch(bootstrap, topic, len(messages), workdir))
        bare_s, bare_cpu = sorted(bare_runs)[len(bare_runs) // 2]
        rmm_s, rmm_cpu, rmm_rss = sorted(rmm_runs)[len(rmm_runs) // 2]
        print(
            f"rounds: bare {', '.join(f'{s:.2f}s' for s, _ in bare_runs)}; "
            f"rmmwatch {', '.join(f'{s:.2f}s' for s, _, _ in rmm_runs)}"
        )
        rows = [
            ("bare aiokafka consumer", bare_s, bare_cpu, None),
            ("rmmwatch (sqlite store)", rmm_s, rmm_cpu, rmm_rss),
        ]
        print(
            f"{'consumer':26} {'records/s':>11} {'MB/s':>7} {'msgs/s':>8} {'CPU s':>6} {'peak RSS':>9} {'vs bare':>8}"
        )
        for name, seconds, cpu, rss in rows:
            print(f"{name:26} {records / seconds:11,.0f} {size / seconds / 1e6:7.1f} {len(messages) / seconds:8,.0f} "
                  f"{cpu:6.1f} {(f'{rss / 1e6:.0f} MB' if rss else '-'):>9} {bare_s / seconds:8.0%}")  # fmt: skip
        rate = len(messages) / rmm_s / 2
        latencies = await _latency(bootstrap, rate, args.latency_seconds, workdir)
    if latencies:
        print(f"produce-to-alert at {rate:,.0f} msgs/s (half of the measured maximum), {len(latencies)} alerts: "
              f"p50 {_percentile(latencies, 0.5) * 1000:.0f} ms, p99 {_percentile(latencies, 0.99) * 1000:.0f} ms, "
              f"max {max(latencies) * 1000:.0f} ms, mean {statistics.mean(latencies) * 1000:.0f} ms")  # fmt: skip
    else:
        print("produce-to-alert: no alert matched a sent event (check the detector log)")


if __name__ == "__main__":
    asyncio.run(main())
