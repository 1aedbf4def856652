"""The Event Hubs (AMQP) path end to end: ``rmmwatch run --source eventhub`` subprocesses, the real SDK, the test
AMQP endpoint (``tests/eventhub_endpoint``, in this process) and checkpoints in the real Azurite.

Every test appends a generated Defender stream (with known NetSupport episodes) round-robin to a 4-partition
hub and, where one detector owns the state, compares the final SQLite state with ``rmmwatch hunt`` over the
very same messages: end to end, ten kill -9s at random points of progress, dropped connections, a wrong SAS
key, and two replicas sharing the partitions through blob ownership (one killed, the other takes over).
Load balancing runs with short intervals (1-2 s, ownership expiry 4-6 s) so that takeovers fit a test.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.eventhub_endpoint.server import EventHubEndpoint
from tests.helpers import service_env
from tests.integration.conftest import Detector, DetectorFactory, wait_until
from tests.integration.eventhub_tools import append_round_robin, checkpointed_total, container_name, owners
from tests.integration.streams import consumed_everything, generate_stream, hunt_and_state

PARTITIONS = 4


@pytest.fixture
def azurite() -> str:
    return service_env("RMMWATCH_TEST_AZURITE_CONNECTION_STRING")


@pytest.fixture
def endpoint() -> Iterator[EventHubEndpoint]:
    with EventHubEndpoint(hub="defender", partitions=PARTITIONS) as running:
        yield running


def _env(endpoint: EventHubEndpoint, azurite: str) -> dict[str, str]:
    """Secrets go through the environment, as in the Helm chart."""
    return {
        "RMMWATCH_EVENTHUB_CONNECTION_STRING": endpoint.connection_string,
        "RMMWATCH_EVENTHUB_CHECKPOINT_CONNECTION_STRING": azurite,
    }


def _args(container: str, data_dir: Path, *extra: str, interval: str = "1", expiry: str = "4") -> list[str]:
    return ["--rule", "bundled:netsupport", "--source", "eventhub", "--eventhub-checkpoint-container", container,
            "--data-dir", str(data_dir),
            "--tick-interval", "0.2", "--eventhub-load-balancing-interval", interval,
            "--eventhub-ownership-expiry", expiry, *extra]  # fmt: skip


def _checkpointed(azurite: str, container: str, endpoint: EventHubEndpoint) -> int:
    return asyncio.run(checkpointed_total(azurite, container, endpoint))


def _alert_ids_per_device(alerts: Path) -> dict[str, set[str]]:
    ids: dict[str, set[str]] = {}
    for line in alerts.read_bytes().splitlines():
        document = orjson.loads(line)
        if document["kind"] == "new":
            ids.setdefault(document["group"]["DeviceId"], set()).add(document["alert_id"])
    return ids


def test_end_to_end_alerts_and_state_equal_hunt(
    endpoint: EventHubEndpoint, azurite: str, tmp_path: Path, detectors: DetectorFactory
) -> None:
    """Every message consumed and checkpointed; alerts and the final state equal hunt; no secret in the logs."""
    stream = tmp_path / "stream.ndjson"
    messages = generate_stream(stream, 1500, seed=131, duplicate=0.01)
    append_round_robin(endpoint, messages)
    container, data, alerts = container_name(), tmp_path / "state", tmp_path / "alerts.jsonl"
    detector = detectors(*_args(container, data, "--sink", f"jsonl:{alerts}"), env=_env(endpoint, azurite))
    wait_until(lambda: consumed_everything(detector, len(messages)), 120, "the detector to consume the hub")
    wait_until(lambda: _checkpointed(azurite, container, endpoint) == len(messages), 30, "every event checkpointed")
    assert detector.ready()
    assert detector.metric("rmmwatch_messages_total", 'source="eventhub"') == len(messages)
    assert detector.stop() == 0, detector.logs()[-3000:]
    expected, state = hunt_and_state(stream, data)
    assert expected and state == expected
    ids = _alert_ids_per_device(alerts)
    assert set(ids) == {row["DeviceId"] for row in expected}
    assert all(len(v) == 1 for v in ids.values()), "one alert_id per episode"
    logs = detector.logs()
    assert endpoint.key not in logs
    assert re.search(r"AccountKey=([^;]+)", azurite).group(1) not in logs  # type: ignore[union-attr]


def test_kill_nine_at_random_points_loses_nothing(
    endpoint: EventHubEndpoint, azurite: str, tmp_path: Path, detectors: DetectorFactory
) -> None:
    """Ten kill -9s while consuming, restarted each time: checkpoints never go back, state == hunt, alerts once+."""
    stream = tmp_path / "stream.ndjson"
    # Enough events that ten kills land mid-stream on a fast machine too (each kill overshoots its target by what
    # the detector reads in the moment between the check and the kill).
    messages = generate_stream(stream, 8000, seed=141, duplicate=0.01)
    append_round_robin(endpoint, messages)
    container, data, alerts = container_name(), tmp_path / "state", tmp_path / "alerts.jsonl"
    args = _args(container, data, "--sink", f"jsonl:{alerts}", "--batch-max-messages", "10", "--log-level", "warning")
    env = _env(endpoint, azurite)
    rng = random.Random(17)
    committed: list[int] = []
    for _ in range(10):
        detector = detectors(*args, env=env)
        before = _checkpointed(azurite, container, endpoint)
        target = before + rng.randint(len(messages) // 100, len(messages) // 40)
        wait_until(
            lambda target=target, detector=detector: (
                _checkpointed(azurite, container, endpoint) >= target or detector.process.poll() is not None
            ),
            120,
            "progress before the next kill",
            interval_s=0.05,
        )
        assert detector.process.poll() is None, detector.logs()[-3000:]
        time.sleep(rng.uniform(0, 0.1))
        detector.kill()
        committed.append(_checkpointed(azurite, container, endpoint))
    assert committed == sorted(committed), "checkpoints never move backwards"
    assert sum(c < len(messages) for c in committed) >= 5, "most kills landed before the end of the hub"
    final = detectors(*args, env=env)
    wait_until(lambda: _checkpointed(azurite, container, endpoint) == len(messages), 180, "every event checkpointed")
    wait_until(lambda: consumed_everything(final, 1), 60, "the final detector to settle")
    assert final.stop() == 0, final.logs()[-3000:]
    expected, state = hunt_and_state(stream, data)
    assert expected and state == expected
    ids = _alert_ids_per_device(alerts)
    assert set(ids) >= {row["DeviceId"] for row in expected}
    assert all(len(v) == 1 for v in ids.values()), "one alert_id per episode"


def test_dropped_connections_are_survived(
    endpoint: EventHubEndpoint, azurite: str, tmp_path: Path, detectors: DetectorFactory
) -> None:
    """Every client connection is cut mid-stream (no AMQP close): the detector reconnects by itself, loses nothing.
    (Connected with a namespace-level connection string and --eventhub-name.)"""
    stream = tmp_path / "stream.ndjson"
    messages = generate_stream(stream, 1200, seed=151)
    first, second = messages[:600], messages[600:]
    append_round_robin(endpoint, first)
    container, data = container_name(), tmp_path / "state"
    args = _args(container, data, "--sink", f"jsonl:{tmp_path / 'a.jsonl'}")
    namespace_level = {  # this test connects with the namespace's connection string and the hub's name
        **_env(endpoint, azurite),
        "RMMWATCH_EVENTHUB_CONNECTION_STRING": endpoint.namespace_connection_string,
        "RMMWATCH_EVENTHUB_NAME": endpoint.hub,
    }
    detector = detectors(*args, env=namespace_level)
    wait_until(lambda: consumed_everything(detector, len(first)), 120, "the first half")
    assert endpoint.drop_connections() > 0
    append_round_robin(endpoint, second)
    wait_until(lambda: consumed_everything(detector, len(messages)), 120, "the second half after the drop")
    wait_until(lambda: _checkpointed(azurite, container, endpoint) == len(messages), 30, "every event checkpointed")
    wait_until(detector.ready, 60, "readiness after the drop")
    assert detector.process.poll() is None
    assert detector.stop() == 0, detector.logs()[-3000:]
    expected, state = hunt_and_state(stream, data)
    assert expected and state == expected


def test_wrong_sas_key_fails_fast_without_printing_it(endpoint: EventHubEndpoint, tmp_path: Path) -> None:
    """A bad key is refused within seconds, exit 1, naming the namespace and hub; the key never appears."""
    wrong = endpoint.connection_string.replace(endpoint.key, "ThisIsNotTheRightKeyAtAll0123456789abcdefXYZ=")
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "rmmwatch.cli", "run", "--source", "eventhub", "--data-dir", str(tmp_path),
         "--metrics-port", "-1"],
        capture_output=True, timeout=120, check=False,
        env={**os.environ, "RMMWATCH_EVENTHUB_CONNECTION_STRING": wrong},
    )  # fmt: skip
    elapsed = time.monotonic() - started
    output = (result.stdout + result.stderr).decode()
    assert result.returncode == 1, output[-2000:]
    assert elapsed < 30
    assert "cannot reach Event Hubs" in output
    assert f"namespace 127.0.0.1:{endpoint.port}, hub defender" in output
    assert "ThisIsNotTheRightKey" not in output


def _lagged_partitions(detector: Detector) -> set[str]:
    """The partitions a detector reports lag for, i.e. the ones it owns."""
    status, text = detector.get("/metrics")
    assert status == 200
    lines = [line for line in text.splitlines() if line.startswith("rmmwatch_consumer_lag{")]
    return {match.group(1) for line in lines if (match := re.search(r'partition="(\d+)"', line))}


def test_two_replicas_share_the_partitions_and_one_takes_over(
    endpoint: EventHubEndpoint, azurite: str, tmp_path: Path, detectors: DetectorFactory
) -> None:
    """Two replicas (memory stores): 2 + 2 partitions, each message consumed once across both; one is killed,
    the other takes its partitions after the ownership expiry and consumes the rest, nothing twice."""
    container = container_name()
    env = _env(endpoint, azurite)

    def replica(name: str) -> Detector:
        sink = f"jsonl:{tmp_path / name}.jsonl"
        args = _args(container, tmp_path / name, "--store", "memory", "--sink", sink, interval="2", expiry="6")
        return detectors(*args, env=env)

    a, b = replica("a"), replica("b")
    seen: list[dict[str, str]] = []

    def split() -> bool:
        owned = asyncio.run(owners(azurite, container, endpoint, 6))
        stable = seen == [owned]
        seen[:] = [owned]
        counts = sorted(list(owned.values()).count(o) for o in set(owned.values()))
        return stable and counts == [2, 2] and a.ready() and b.ready()

    wait_until(split, 90, "the replicas to own 2 + 2 partitions", interval_s=2.5)
    stream = tmp_path / "stream.ndjson"
    messages = generate_stream(stream, 2000, seed=161)
    first, second = messages[:1000], messages[1000:]
    append_round_robin(endpoint, first)
    wait_until(lambda: _checkpointed(azurite, container, endpoint) == len(first), 90, "the first half checkpointed")
    wait_until(lambda: consumed_everything(a, 1) and consumed_everything(b, 1), 30, "both replicas to settle")
    consumed_a, consumed_b = a.metric("rmmwatch_messages_total"), b.metric("rmmwatch_messages_total")
    assert consumed_a + consumed_b == len(first), "each message once across the replicas"
    assert consumed_a > 0 and consumed_b > 0
    assert len(_lagged_partitions(a)) == len(_lagged_partitions(b)) == 2
    assert _lagged_partitions(a) | _lagged_partitions(b) == {"0", "1", "2", "3"}
    a.kill()
    append_round_robin(endpoint, second)

    def taken_over() -> bool:
        owned = asyncio.run(owners(azurite, container, endpoint, 6))
        return len(owned) == PARTITIONS and len(set(owned.values())) == 1

    wait_until(taken_over, 60, "the survivor to own every partition", interval_s=0.5)
    wait_until(lambda: _checkpointed(azurite, container, endpoint) == len(messages), 60, "the rest checkpointed")
    wait_until(lambda: consumed_everything(b, 1), 30, "the survivor to settle")
    assert b.metric("rmmwatch_messages_total") - consumed_b == len(second), "the rest once, nothing re-read"
    assert _lagged_partitions(b) == {"0", "1", "2", "3"}
    assert b.stop() == 0, b.logs()[-3000:]


def test_a_second_replica_on_a_sqlite_store_is_refused(
    endpoint: EventHubEndpoint, azurite: str, tmp_path: Path, detectors: DetectorFactory
) -> None:
    """Two replicas, each with its own sqlite store, in one consumer group: each owns part of the hub for longer
    than a handover takes (30 s at least), which means partial state: both stop with exit 1 and say why."""
    container, env = container_name(), _env(endpoint, azurite)
    pair = [detectors(*_args(container, tmp_path / name), env=env) for name in ("a", "b")]
    wait_until(lambda: all(d.process.poll() is not None for d in pair), 90, "both replicas to stop")
    for detector in pair:
        assert detector.process.returncode == 1, detector.logs()[-2000:]
        assert "another replica shares the consumer group" in detector.logs()
