"""Benchmark the Event Hubs (AMQP) source against the Kafka source on the same messages.

1. Generate Defender envelopes (compact records, 1 to 50 per message, NetSupport in 0.1% of records).
2. Event Hubs: start the test AMQP endpoint (``tests/eventhub_endpoint``, on a thread of this process) with
   4 partitions and append the messages round-robin; then, alternating for ``--rounds`` rounds:
   * the client's ceiling: a bare ``azure-eventhub`` consumer (``receive_batch``, 500 events per call, the
     event bodies joined to bytes as rmmwatch does, nothing else) in a subprocess;
   * rmmwatch: ``rmmwatch run --source eventhub`` (sqlite store, blob checkpoints in Azurite, alerts to a
     jsonl file) in a subprocess.
3. Kafka: the same messages in a 4-partition topic on the real broker, the bare aiokafka consumer and
   ``rmmwatch run --source kafka`` (the helpers of ``load/bench_kafka.py``).

Each figure runs from the first consumed message to the last (rmmwatch: its metrics polled every 50 ms);
medians of the rounds are shown. **The test endpoint's own speed is part of the Event Hubs figures**: it is a
small Python AMQP server (python-qpid-proton) sharing this machine's two cores with the consumer, not the
Azure service, which serves from many machines (and adds a network round trip and TLS, which the endpoint
does not). The figures say how fast the SDK and rmmwatch go against that endpoint; they are not a forecast for
Azure. The Kafka figures likewise share the machine with the broker.

Needs the test services (Kafka and Azurite): ``scripts/services/all.sh start; set -a; source .services/env``.

    python -m load.bench_eventhub [--messages 8000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson
from azure.eventhub import EventData
from azure.eventhub.aio import EventHubConsumerClient, PartitionContext
from tests.eventhub_endpoint.server import EventHubEndpoint

from load.bench_kafka import _bare, _bootstrap, _fill, _free_port, _metric, _proc_stats, _rmmwatch, _topic
from rmmwatch.synthetic import Generator, GeneratorConfig

PARTITIONS = 4
BATCH = 500


async def _bare_consumer(connection_string: str, total: int) -> None:
    """The subprocess side of the bare consumer: print {"seconds", "cpu"} once ``total`` events arrived."""
    client = EventHubConsumerClient.from_connection_string(connection_string, "$Default")
    done = asyncio.Event()
    seen = 0
    first = 0.0
    cpu_first = 0.0

    async def on_batch(context: PartitionContext, events: list[EventData]) -> None:
        nonlocal seen, first, cpu_first
        if events and not first:
            first, cpu_first = time.perf_counter(), time.process_time()
        for event in events:
            b"".join(event.body)
        seen += len(events)
        if seen >= total:
            done.set()

    receiving = asyncio.create_task(
        client.receive_batch(on_batch, max_batch_size=BATCH, prefetch=BATCH, starting_position="-1")
    )
    await asyncio.wait_for(done.wait(), timeout=600)
    elapsed, cpu = time.perf_counter() - first, time.process_time() - cpu_first
    print(orjson.dumps({"seconds": elapsed, "cpu": cpu}).decode(), flush=True)
    await client.close()
    receiving.cancel()


def _bare_eventhub(endpoint: EventHubEndpoint, total: int) -> tuple[float, float]:
    result = subprocess.run(
        [sys.executable, "-m", "load.bench_eventhub", "--bare-consumer", endpoint.connection_string, "--messages",
         str(total)],
        capture_output=True, timeout=900, check=True,
    )  # fmt: skip
    figures = orjson.loads(result.stdout.splitlines()[-1])
    return float(figures["seconds"]), float(figures["cpu"])


def _rmmwatch_eventhub(endpoint: EventHubEndpoint, azurite: str, total: int, workdir: Path) -> tuple[float, float, int]:
    run = uuid.uuid4().hex[:6]
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "rmmwatch.cli", "run", "--rule", "bundled:netsupport", "--source", "eventhub",
         "--eventhub-checkpoint-container", f"bench-{run}", "--data-dir", str(workdir / run),
         "--sink", f"jsonl:{workdir / 'alerts.jsonl'}",
         "--batch-max-messages", str(BATCH), "--metrics-port", str(port), "--metrics-host", "127.0.0.1",
         "--log-level", "warning"],
        stdout=subprocess.DEVNULL, stderr=open(workdir / f"eventhub-{run}.log", "wb"),  # noqa: SIM115
        env={**os.environ, "RMMWATCH_EVENTHUB_CONNECTION_STRING": endpoint.connection_string,
             "RMMWATCH_EVENTHUB_CHECKPOINT_CONNECTION_STRING": azurite},
    )  # fmt: skip
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
            if process.poll() is not None:
                raise SystemExit(f"rmmwatch --source eventhub exited: see {workdir / f'eventhub-{run}.log'}")
            time.sleep(0.05)
        raise SystemExit("rmmwatch did not consume the hub within 10 minutes")
    finally:
        process.terminate()
        process.wait(timeout=60)


def _median(runs: list[tuple[float, ...]]) -> tuple[float, ...]:
    return sorted(runs)[len(runs) // 2]


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--messages", type=int, default=8000)
    parser.add_argument("--rounds", type=int, default=3, help="runs of each consumer (alternating); medians shown")
    parser.add_argument("--bare-consumer", metavar="CONNECTION_STRING", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_consumer:
        await _bare_consumer(args.bare_consumer, args.messages)
        return
    bootstrap = _bootstrap()
    azurite = os.environ.get("RMMWATCH_TEST_AZURITE_CONNECTION_STRING")
    if not azurite:
        sys.exit("RMMWATCH_TEST_AZURITE_CONNECTION_STRING is not set: start the test services (scripts/services)")
    generator = Generator(GeneratorConfig(seed=3, netsupport_ratio=0.001, compact=True))
    messages = list(generator.messages(args.messages))
    records = generator.stats.records
    size = sum(map(len, messages))
    topic = f"bench-eh-{uuid.uuid4().hex[:6]}"
    await _topic(bootstrap, topic)
    fill_kafka = await _fill(bootstrap, topic, messages)
    with EventHubEndpoint(hub="defender", partitions=PARTITIONS) as endpoint, tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        for index, message in enumerate(messages):
            endpoint.append(str(index % PARTITIONS), message)
        fill_eventhub = time.perf_counter() - started
        print(f"rmmwatch bench-eventhub: {len(messages)} messages, {records} records, {size / 1e6:.0f} MB, "
              f"{PARTITIONS} partitions (filled: Kafka {fill_kafka:.1f} s, test endpoint {fill_eventhub:.1f} s); "
              f"{args.rounds} rounds, medians")  # fmt: skip
        workdir = Path(tmp)
        runs: dict[str, list[tuple[float, ...]]] = {key: [] for key in ("eh-bare", "eh-rmm", "k-bare", "k-rmm")}
        for _ in range(args.rounds):
            runs["eh-bare"].append(_bare_eventhub(endpoint, len(messages)))
            runs["eh-rmm"].append(_rmmwatch_eventhub(endpoint, azurite, len(messages), workdir))
            runs["k-bare"].append(await _bare(bootstrap, topic, len(messages)))
            runs["k-rmm"].append(_rmmwatch(bootstrap, topic, len(messages), workdir))
    rounds = "; ".join(f"{key} " + ", ".join(f"{r[0]:.2f}" for r in values) for key, values in runs.items())
    print(f"rounds (seconds): {rounds}")
    rows = [
        ("bare aiokafka consumer", _median(runs["k-bare"])),
        ("rmmwatch --source kafka", _median(runs["k-rmm"])),
        ("bare azure-eventhub consumer", _median(runs["eh-bare"])),
        ("rmmwatch --source eventhub", _median(runs["eh-rmm"])),
    ]
    kafka_rmm = rows[1][1][0]
    print(f"{'consumer':30} {'records/s':>11} {'MB/s':>7} {'msgs/s':>8} {'CPU s':>6} {'peak RSS':>9} {'vs kafka':>9}")
    for name, figures in rows:
        seconds, cpu = figures[0], figures[1]
        rss = f"{figures[2] / 1e6:.0f} MB" if len(figures) > 2 else "-"
        print(f"{name:30} {records / seconds:11,.0f} {size / seconds / 1e6:7.1f} {len(messages) / seconds:8,.0f} "
              f"{cpu:6.1f} {rss:>9} {kafka_rmm / seconds:9.0%}")  # fmt: skip
    print("'vs kafka': speed relative to rmmwatch --source kafka. Event Hubs rows run against the test endpoint "
          "(a Python AMQP server on this machine), so its speed is part of them.")  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
