"""Several replicas, one truth: detectors in one Kafka consumer group sharing a real Redis.

The generated stream is spread over 6 partitions, so every NetSupport device appears on
several partitions and every replica sees part of each device's events. The final Redis
state must equal ``hunt`` over the same messages, and each episode must get exactly one
``new`` alert (one ``alert_id``) however the work was split, killed or interrupted.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
import redis as redis_py

from rmmwatch.kql.datetimes import format_datetime
from tests.integration.conftest import RMMWATCH, Detector, DetectorFactory, free_port, rmmwatch, wait_until
from tests.integration.kafka_tools import committed_total, create_topic, produce

PARTITIONS = 6


@dataclass
class Redis:
    """A redis-server with append-only persistence, so a restart keeps the state (as in production)."""

    port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--dir",
                str(self.directory),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self._answers, 20, "redis-server to answer")

    def _answers(self) -> bool:
        result = subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True, check=False)
        return result.stdout.strip() == b"PONG"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=30)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Redis]:
    """A private, persistent redis-server (the binary `scripts/services/redis.sh` installed)."""
    if subprocess.run(["sh", "-c", "command -v redis-server"], capture_output=True, check=False).returncode != 0:
        pytest.fail("redis-server is not installed: run scripts/services/all.sh start (or make test)", pytrace=False)
    directory = tmp_path / "redis"
    directory.mkdir()
    server = Redis(free_port(), directory)
    server.start()
    yield server
    server.stop()


def _stream(tmp_path: Path, count: int, seed: int) -> tuple[Path, list[bytes]]:
    path = tmp_path / "stream.ndjson"
    result = rmmwatch(
        "generate",
        "--count",
        str(count),
        "--seed",
        str(seed),
        "--clock",
        format_datetime(time.time_ns() // 100),
        "--step-ms",
        "1",
        "--max-records",
        "6",
        "--devices",
        "300",
        "--netsupport-devices",
        "30",
        "--netsupport-ratio",
        "0.02",
        "--duplicate-ratio",
        "0.01",
        "--output",
        str(path),
    )
    assert result.returncode == 0, result.stderr
    return path, path.read_bytes().splitlines()


def _replica_args(bootstrap: str, topic: str, redis: Redis, prefix: str, alerts: Path) -> list[str]:
    return [
        "--rule",
        "bundled:netsupport",
        "--source",
        "kafka",
        "--kafka-bootstrap-servers",
        bootstrap,
        "--kafka-topics",
        topic,
        "--kafka-group-id",
        f"g-{topic}",
        "--kafka-session-timeout-ms",
        "6000",
        "--store",
        redis.url,
        "--redis-prefix",
        prefix,
        "--sink",
        f"jsonl:{alerts}",
        "--tick-interval",
        "0.2",
        "--redis-orphan-age",
        "2",
        "--batch-max-messages",
        "20",
        "--log-level",
        "warning",
    ]


def _all_committed(bootstrap: str, topic: str, total: int) -> bool:
    return asyncio.run(committed_total(bootstrap, f"g-{topic}", topic, PARTITIONS)) >= total


def _undelivered(redis: Redis, prefix: str) -> int:
    """Alerts still in any group's outbox in Redis: a dead replica's stay there until handed out."""
    client = redis_py.Redis(host="127.0.0.1", port=redis.port)
    try:
        return sum(int(client.zcard(key)) for key in client.scan_iter(match=f"{{{prefix}:*:unsent", count=1000))
    finally:
        client.close()


def _compare(stream: Path, redis: Redis, prefix: str, alert_files: list[Path]) -> list[dict[str, object]]:
    """State equals hunt; returns the 'new' alerts of every replica."""
    at = format_datetime(time.time_ns() // 100)
    hunted = rmmwatch("hunt", "--rule", "bundled:netsupport", "--now", at, "--format", "json", "--quiet", str(stream))
    state = subprocess.run(
        [*RMMWATCH, "state", "--rule", "bundled:netsupport", "--store", redis.url, "--now", at, "--format", "json"],
        capture_output=True,
        timeout=120,
        check=False,
        env={**os.environ, "RMMWATCH_REDIS_PREFIX": prefix},
    )
    assert hunted.returncode == 0 and state.returncode == 0, state.stderr
    expected = orjson.loads(hunted.stdout)
    assert expected, "the stream has NetSupport episodes"
    assert orjson.loads(state.stdout) == expected
    news = [
        document
        for path in alert_files
        if path.exists()
        for document in map(orjson.loads, path.read_bytes().splitlines())
        if document["kind"] == "new"
    ]
    assert {d["group"]["DeviceId"] for d in news} >= {r["DeviceId"] for r in expected}, "every episode alerted"
    ids: dict[str, set[str]] = {}
    for document in news:
        ids.setdefault(document["group"]["DeviceId"], set()).add(document["alert_id"])
    assert all(len(v) == 1 for v in ids.values()), "one alert_id per episode"
    return news


def _start_replicas(
    detectors: DetectorFactory, count: int, *, bootstrap: str, topic: str, redis: Redis, prefix: str, tmp_path: Path
) -> tuple[list[Detector], list[Path]]:
    files = [tmp_path / f"alerts-{i}.jsonl" for i in range(count)]
    replicas = [detectors(*_replica_args(bootstrap, topic, redis, prefix, path)) for path in files]
    return replicas, files


def test_three_replicas_one_alert_per_episode(
    kafka_bootstrap: str, topic_name: str, tmp_path: Path, detectors: DetectorFactory, redis_server: Redis
) -> None:
    """Three replicas split 6 partitions: exactly one 'new' per episode, state == hunt."""
    stream, messages = _stream(tmp_path, 3000, seed=91)
    asyncio.run(create_topic(kafka_bootstrap, topic_name, PARTITIONS))
    prefix = uuid.uuid4().hex[:8]
    replicas, files = _start_replicas(
        detectors, 3, bootstrap=kafka_bootstrap, topic=topic_name, redis=redis_server, prefix=prefix, tmp_path=tmp_path
    )
    wait_until(lambda: all(r.ready() for r in replicas), 90, "all three replicas to be assigned")
    asyncio.run(produce(kafka_bootstrap, topic_name, messages, PARTITIONS))
    wait_until(lambda: _all_committed(kafka_bootstrap, topic_name, len(messages)), 180, "every offset committed")
    wait_until(lambda: _undelivered(redis_server, prefix) == 0, 60, "every alert delivered")
    assert all(r.metric("rmmwatch_messages_total") > 0 for r in replicas), "the work was shared"
    for replica in replicas:
        assert replica.stop() == 0, replica.logs()[-2000:]
    news = _compare(stream, redis_server, prefix, files)
    assert len(news) == len({d["alert_id"] for d in news}), "exactly one 'new' per episode, across replicas"


def test_a_killed_replica_hands_over_without_loss(
    kafka_bootstrap: str, topic_name: str, tmp_path: Path, detectors: DetectorFactory, redis_server: Redis
) -> None:
    """kill -9 one of three replicas mid-run: the others take its partitions; nothing lost."""
    stream, messages = _stream(tmp_path, 4000, seed=92)
    asyncio.run(create_topic(kafka_bootstrap, topic_name, PARTITIONS))
    asyncio.run(produce(kafka_bootstrap, topic_name, messages, PARTITIONS))
    prefix = uuid.uuid4().hex[:8]
    replicas, files = _start_replicas(
        detectors, 3, bootstrap=kafka_bootstrap, topic=topic_name, redis=redis_server, prefix=prefix, tmp_path=tmp_path
    )
    wait_until(lambda: _all_committed(kafka_bootstrap, topic_name, len(messages) // 4), 120, "a quarter committed")
    replicas[0].kill()
    wait_until(lambda: _all_committed(kafka_bootstrap, topic_name, len(messages)), 240, "the rest after the kill")
    # the killed replica's undelivered alerts are orphans: a survivor's tick hands them out
    wait_until(lambda: _undelivered(redis_server, prefix) == 0, 60, "every alert delivered, orphans too")
    for replica in replicas[1:]:
        assert replica.stop() == 0, replica.logs()[-2000:]
    _compare(stream, redis_server, prefix, files)


def test_redis_restart_is_survived(
    kafka_bootstrap: str, topic_name: str, tmp_path: Path, detectors: DetectorFactory, redis_server: Redis
) -> None:
    """Redis stops mid-run: readiness false, nothing committed; it returns: work resumes, state == hunt."""
    stream, messages = _stream(tmp_path, 3000, seed=93)
    asyncio.run(create_topic(kafka_bootstrap, topic_name, PARTITIONS))
    prefix = uuid.uuid4().hex[:8]
    replicas, files = _start_replicas(
        detectors, 2, bootstrap=kafka_bootstrap, topic=topic_name, redis=redis_server, prefix=prefix, tmp_path=tmp_path
    )
    wait_until(lambda: all(r.ready() for r in replicas), 90, "both replicas to be assigned")
    half = len(messages) // 2
    asyncio.run(produce(kafka_bootstrap, topic_name, messages[:half], PARTITIONS))
    wait_until(lambda: _all_committed(kafka_bootstrap, topic_name, half), 120, "the first half committed")
    redis_server.stop()
    try:
        asyncio.run(produce(kafka_bootstrap, topic_name, messages[half:], PARTITIONS))
        wait_until(lambda: not any(r.ready() for r in replicas), 60, "readiness to go false without Redis")
        stalled = asyncio.run(committed_total(kafka_bootstrap, f"g-{topic_name}", topic_name, PARTITIONS))
        time.sleep(2)
        assert asyncio.run(committed_total(kafka_bootstrap, f"g-{topic_name}", topic_name, PARTITIONS)) == stalled
        assert all(r.process.poll() is None for r in replicas), "the replicas wait, they do not crash"
    finally:
        redis_server.start()
    wait_until(lambda: _all_committed(kafka_bootstrap, topic_name, len(messages)), 240, "the second half committed")
    wait_until(lambda: all(r.ready() for r in replicas), 60, "readiness back")
    wait_until(lambda: _undelivered(redis_server, prefix) == 0, 60, "every alert delivered")
    for replica in replicas:
        assert replica.stop() == 0, replica.logs()[-2000:]
    _compare(stream, redis_server, prefix, files)


def test_sqlite_refuses_a_second_replica_in_the_group(
    kafka_bootstrap: str, topic_name: str, tmp_path: Path, detectors: DetectorFactory
) -> None:
    """Two sqlite replicas in one group: once the split persists, the replicas stop with an explanation."""
    asyncio.run(create_topic(kafka_bootstrap, topic_name, 2))
    args = [
        "--source",
        "kafka",
        "--kafka-bootstrap-servers",
        kafka_bootstrap,
        "--kafka-topics",
        topic_name,
        "--kafka-group-id",
        f"g-{topic_name}",
        "--kafka-session-timeout-ms",
        "6000",
    ]
    first = detectors(*args, "--data-dir", str(tmp_path / "one"))
    second = detectors(*args, "--data-dir", str(tmp_path / "two"))
    wait_until(
        lambda: first.process.poll() is not None or second.process.poll() is not None,
        120,
        "a replica to refuse the shared group",
    )
    stopped = first if first.process.poll() is not None else second
    assert stopped.process.returncode == 1
    assert "the sqlite store is single-process" in stopped.logs()
