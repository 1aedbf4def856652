"""The Kafka path on a real Apache Kafka broker: end to end, crashes, broker restart, poison, SASL_SSL.

Every test produces a generated Defender stream (with known NetSupport episodes) to a fresh
multi-partition topic, runs ``rmmwatch run`` as a subprocess, and compares the final SQLite
state with ``rmmwatch hunt`` over the very same messages.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from rmmwatch.kql.datetimes import format_datetime
from tests.integration.conftest import (
    DetectorFactory,
    kafka_script,
    service_env,
    wait_until,
)
from tests.integration.kafka_tools import committed_total, create_topic, produce, read_all
from tests.integration.streams import consumed_everything, generate_stream, hunt_and_state

PARTITIONS = 4
# Every test runs with both Kafka clients of the source (the alert and dead-letter producers are aiokafka's).
pytestmark = pytest.mark.parametrize("kafka_client", ["confluent", "aiokafka"])


def _detector_args(client: str, bootstrap: str, topic: str, data_dir: Path, *extra: str) -> list[str]:
    return ["--rule", "bundled:netsupport", "--source", "kafka", "--kafka-client", client,
            "--kafka-bootstrap-servers", bootstrap, "--kafka-topics", topic,
            "--kafka-group-id", f"g-{topic}", "--data-dir", str(data_dir), "--tick-interval", "0.2",
            "--kafka-session-timeout-ms", "6000", *extra]  # fmt: skip


def test_end_to_end_alerts_and_state_equal_hunt(
    kafka_client: str, kafka_bootstrap: str, topic_name: str, tmp_path: Path, detectors: DetectorFactory
) -> None:
    """Alerts on the alerts topic and the final state equal hunt on the same events."""
    stream = tmp_path / "stream.ndjson"
    messages = generate_stream(stream, 1500, seed=31, duplicate=0.01)
    alerts_topic = f"{topic_name}-alerts"
    asyncio.run(create_topic(kafka_bootstrap, topic_name, PARTITIONS))
    asyncio.run(produce(kafka_bootstrap, topic_name, messages, PARTITIONS))
    data = tmp_path / "state"
    detector = detectors(
        *_detector_args(kafka_client, kafka_bootstrap, topic_name, data, "--sink", f"kafka:{alerts_topic}")
    )
    wait_until(lambda: consumed_everything(detector, len(messages)), 120, "the detector to consume the topic")
    assert detector.ready()
    assert detector.stop() == 0, detector.logs()[-3000:]
    expected, state = hunt_and_state(stream, data)
    assert expected and state == expected
    records = asyncio.run(read_all(kafka_bootstrap, alerts_topic, expect_at_least=len(expected)))
    news = [r for r in records if dict(r.headers)["rmmwatch-alert-kind"] == b"new"]
    assert {(orjson.loads(r.value)["group"]["DeviceId"]) for r in news} == {row["DeviceId"] for row in expected}
    for record in news:
        document = orjson.loads(record.value)
        assert record.key == document["group"]["DeviceId"].encode()
        headers = dict(record.headers)
        assert headers["rmmwatch-alert-id"] == document["alert_id"].encode()
        assert headers["rmmwatch-rule-id"] == document["rule"]["id"].encode()
    assert len({orjson.loads(r.value)["alert_id"] for r in news}) == len(news)


class _PacedTopic:
    """A stream produced as a test's pacing needs it: :meth:`produce_to` appends records up to a count, so a
    reader can never be further on than that however fast it reads; :meth:`finish` appends the rest."""

    def __init__(self, bootstrap: str, topic: str, messages: list[bytes]) -> None:
        self.bootstrap, self.topic, self.messages = bootstrap, topic, messages
        self.produced = 0

    async def produce_to(self, count: int) -> None:
        count = min(count, len(self.messages))
        if count > self.produced:
            await produce(self.bootstrap, self.topic, self.messages[self.produced : count], PARTITIONS)
            self.produced = count

    async def finish(self) -> None:
        await self.produce_to(len(self.messages))

    async def progress(self, group: str, target: int, running: Callable[[], bool], timeout_s: float = 120) -> None:
        """Until the group's committed offsets reach ``target`` (or the reader stops)."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)  # one client: polls cost milliseconds
        await admin.start()
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                found = await admin.list_consumer_group_offsets(group)
                committed = sum(meta.offset for tp, meta in found.items() if tp.topic == self.topic and meta.offset > 0)
                if committed >= target or not running():
                    return
                assert time.monotonic() < deadline, f"timed out after {timeout_s:.0f}s waiting for progress"
                await asyncio.sleep(0.02)
        finally:
            await admin.close()


def test_kill_nine_at_random_points_loses_nothing(
    kafka_client: str, kafka_bootstrap: str, topic_name: str, tmp_path: Path, detectors: DetectorFactory
) -> None:
    """At least ten kill -9s while consuming, restarted each time: state == hunt, every alert delivered once+.

    The pacing follows observed progress, not the machine's speed: each kill waits for the committed offsets to
    move 1-2 % of the stream on. The topic holds all but what the rounds still to come need at the least (two
    steps each) and a last 5 %: however fast the detector reads, every round can make its step and the kills
    land before the end of the topic; the rest is produced after them."""
    stream = tmp_path / "stream.ndjson"
    messages = generate_stream(stream, 8000, seed=41, duplicate=0.01)
    asyncio.run(create_topic(kafka_bootstrap, topic_name, PARTITIONS))
    topic = _PacedTopic(kafka_bootstrap, topic_name, messages)
    data = tmp_path / "state"
    alerts = tmp_path / "alerts.jsonl"
    args = _detector_args(kafka_client, kafka_bootstrap, topic_name, data, "--sink", f"jsonl:{alerts}",
                          "--batch-max-messages", "10", "--log-level", "info")  # fmt: skip
    group = f"g-{topic_name}"
    rng = random.Random(7)
    rounds, step = 10, (len(messages) // 100, len(messages) // 50)
    kills = 0
    committed: list[int] = []
    while kills < rounds:
        before = asyncio.run(committed_total(kafka_bootstrap, group, topic_name, PARTITIONS))
        target = before + rng.randint(*step)
        asyncio.run(topic.produce_to(len(messages) * 95 // 100 - (rounds - kills - 1) * 2 * step[1]))
        detector = detectors(*args)
        asyncio.run(topic.progress(group, target, lambda detector=detector: detector.process.poll() is None))
        assert detector.process.poll() is None, detector.logs()[-3000:]
        time.sleep(rng.uniform(0, 0.1))
        detector.kill()
        kills += 1
        committed.append(asyncio.run(committed_total(kafka_bootstrap, group, topic_name, PARTITIONS)))
    assert committed == sorted(committed), "committed offsets never move backwards"
    assert committed[-1] < len(messages), "the kills landed before the end of the topic"
    asyncio.run(topic.finish())
    final = detectors(*args)
    wait_until(lambda: consumed_everything(final, 1), 180, "the final detector to catch up")
    wait_until(
        lambda: asyncio.run(committed_total(kafka_bootstrap, group, topic_name, PARTITIONS)) == len(messages),
        120,
        "every offset committed",
    )
    assert final.stop() == 0, final.logs()[-3000:]
    expected, state = hunt_and_state(stream, data)
    assert expected and state == expected
    documents = [orjson.loads(line) for line in alerts.read_bytes().splitlines()]
    news = [d for d in documents if d["kind"] == "new"]
    assert {d["group"]["DeviceId"] for d in news} >= {r["DeviceId"] for r in expected}
    ids: dict[str, set[str]] = {}
    for d in news:
        ids.setdefault(d["group"]["DeviceId"], set()).add(d["alert_id"])
    assert all(len(v) == 1 for v in ids.values()), "one alert_id per episode"


def test_broker_restart_is_survived(
    kafka_client: str, kafka_bootstrap: str, topic_name: str, tmp_path: Path, detectors: DetectorFactory
) -> None:
    """Kafka stops mid-stream: readiness goes false; it comes back: the detector resumes, nothing lost."""
    stream = tmp_path / "stream.ndjson"
    messages = generate_stream(stream, 1200, seed=51)
    first, second = messages[:600], messages[600:]
    asyncio.run(create_topic(kafka_bootstrap, topic_name, PARTITIONS))
    asyncio.run(produce(kafka_bootstrap, topic_name, first, PARTITIONS))
    data = tmp_path / "state"
    detector = detectors(
        *_detector_args(kafka_client, kafka_bootstrap, topic_name, data, "--sink", f"jsonl:{tmp_path / 'a.jsonl'}")
    )
    wait_until(lambda: consumed_everything(detector, len(first)), 120, "the first half")
    try:
        kafka_script("stop")
        wait_until(lambda: not detector.ready(), 60, "readiness to go false while Kafka is down")
        assert detector.process.poll() is None, "the detector survives the outage"
    finally:
        kafka_script("start")
    asyncio.run(produce(kafka_bootstrap, topic_name, second, PARTITIONS))
    wait_until(detector.ready, 120, "readiness to come back")
    wait_until(lambda: consumed_everything(detector, len(messages)), 180, "the second half")
    assert detector.stop() == 0, detector.logs()[-3000:]
    expected, state = hunt_and_state(stream, data)
    assert expected and state == expected


def test_poison_messages_are_dead_lettered_and_skipped(
    kafka_client: str, kafka_bootstrap: str, topic_name: str, tmp_path: Path, detectors: DetectorFactory
) -> None:
    """Malformed messages between good ones go to the dead-letter topic with their origin; progress continues."""
    stream = tmp_path / "stream.ndjson"
    good = generate_stream(stream, 400, seed=61)
    poison = [
        b'{"records": [{"properties": {"ProcessVersionInfoCompanyName": "NetSupport',
        b'{"c": "NetSupport \xff\xfe"}',
        b'{"records": {"ProcessVersionInfoCompanyName": "NetSupport Ltd"}}',
        b'"NetSupport"',
    ]
    values = list(good)
    for i, bad in enumerate(poison):
        values.insert(50 + i * 90, bad)
    dead_topic = f"{topic_name}-dead"
    asyncio.run(create_topic(kafka_bootstrap, topic_name, PARTITIONS))
    asyncio.run(produce(kafka_bootstrap, topic_name, values, PARTITIONS))
    data = tmp_path / "state"
    detector = detectors(*_detector_args(kafka_client, kafka_bootstrap, topic_name, data,
                                         "--sink", f"jsonl:{tmp_path / 'a.jsonl'}",
                                         "--dead-letter-topic", dead_topic))  # fmt: skip
    wait_until(lambda: consumed_everything(detector, len(values)), 120, "the topic to be consumed")
    errors = {
        reason: detector.metric("rmmwatch_decode_errors_total", f'reason="{reason}"')
        for reason in ("malformed_json", "invalid_utf8", "records_not_list", "not_object_or_array")
    }
    assert errors == {"malformed_json": 1, "invalid_utf8": 1, "records_not_list": 1, "not_object_or_array": 1}
    assert detector.metric("rmmwatch_dead_letters_total", 'destination="kafka"') == 4
    assert detector.stop() == 0
    letters = asyncio.run(read_all(kafka_bootstrap, dead_topic, expect_at_least=4))
    assert sorted(r.value for r in letters) == sorted(poison)
    for letter in letters:
        headers = dict(letter.headers)
        assert headers["rmmwatch-source-topic"] == topic_name.encode()
        assert int(headers["rmmwatch-source-offset"]) >= 0
        assert headers["rmmwatch-reason"] in (b"malformed_json", b"invalid_utf8", b"records_not_list",
                                              b"not_object_or_array")  # fmt: skip
    expected, state = hunt_and_state(stream, data)
    assert state == expected


def test_eventhubs_preset_over_sasl_ssl(
    kafka_client: str, kafka_bootstrap: str, topic_name: str, tmp_path: Path, detectors: DetectorFactory
) -> None:
    """The Event Hubs preset (SASL_SSL, PLAIN, $ConnectionString) connects to the SASL listener and consumes."""
    sasl = service_env("RMMWATCH_TEST_KAFKA_SASL_BOOTSTRAP")
    connection = service_env("RMMWATCH_TEST_EVENTHUBS_CONNECTION_STRING")
    ca = service_env("RMMWATCH_TEST_KAFKA_SASL_CA")
    stream = tmp_path / "stream.ndjson"
    messages = generate_stream(stream, 300, seed=71)
    asyncio.run(create_topic(kafka_bootstrap, topic_name, 2))
    asyncio.run(produce(kafka_bootstrap, topic_name, messages, 2))
    data = tmp_path / "state"
    detector = detectors(
        "--rule", "bundled:netsupport", "--source", "kafka", "--kafka-client", kafka_client,
        "--kafka-bootstrap-servers", sasl, "--kafka-topics", topic_name, "--kafka-ssl-ca-file", ca,
        "--data-dir", str(data),
        "--sink", f"jsonl:{tmp_path / 'a.jsonl'}",
        env={"RMMWATCH_EVENTHUBS_CONNECTION_STRING": connection},
    )  # fmt: skip
    wait_until(lambda: consumed_everything(detector, len(messages)), 120, "consumption over SASL_SSL")
    assert detector.stop() == 0
    logs = detector.logs()
    assert connection not in logs
    assert connection.split("SharedAccessKey=")[1] not in logs
    expected, state = hunt_and_state(stream, data)
    assert expected and state == expected


def test_wrong_password_fails_fast_without_printing_it(kafka_client: str, topic_name: str, tmp_path: Path) -> None:
    """A bad connection string is refused within seconds, exit 1, and the secret never appears."""
    sasl = service_env("RMMWATCH_TEST_KAFKA_SASL_BOOTSTRAP")
    ca = service_env("RMMWATCH_TEST_KAFKA_SASL_CA")
    wrong = ("Endpoint=sb://rmmwatch-test.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;"
             "SharedAccessKey=ThisIsNotTheRightKeyAtAll0123456789abcdefXYZ=")  # fmt: skip
    started = time.monotonic()
    result = rmmwatch_env(
        ["run", "--source", "kafka", "--kafka-client", kafka_client, "--kafka-bootstrap-servers", sasl,
         "--kafka-topics", topic_name,
         "--kafka-ssl-ca-file", ca, "--data-dir", str(tmp_path), "--metrics-port", "-1"],
        {"RMMWATCH_EVENTHUBS_CONNECTION_STRING": wrong},
    )  # fmt: skip
    elapsed = time.monotonic() - started
    output = (result.stdout + result.stderr).decode()
    assert result.returncode == 1, output[-2000:]
    assert elapsed < 60
    assert "cannot connect to Kafka" in output and "$ConnectionString" in output
    assert "ThisIsNotTheRightKey" not in output


def rmmwatch_env(args: list[str], env: dict[str, str]) -> object:
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "rmmwatch.cli", *args], capture_output=True, timeout=180,
                          env={**os.environ, **env}, check=False)  # fmt: skip


@pytest.mark.parametrize("start", ["latest", "time"])
def test_new_group_starting_position(
    kafka_client: str, kafka_bootstrap: str, topic_name: str, tmp_path: Path, *, detectors: DetectorFactory, start: str
) -> None:
    """--kafka-start latest skips what is there; a time skips what came before it."""
    stream = tmp_path / "stream.ndjson"
    messages = generate_stream(stream, 200, seed=81, netsupport=0.05)
    asyncio.run(create_topic(kafka_bootstrap, topic_name, 1))
    asyncio.run(produce(kafka_bootstrap, topic_name, messages[:100], 1))
    time.sleep(1.5)
    cut = format_datetime(time.time_ns() // 100)
    time.sleep(0.5)
    if start == "time":
        asyncio.run(produce(kafka_bootstrap, topic_name, messages[100:], 1))
    value = "latest" if start == "latest" else cut
    detector = detectors(*_detector_args(kafka_client, kafka_bootstrap, topic_name, tmp_path / "state",
                                         "--kafka-start", value,
                                         "--sink", f"jsonl:{tmp_path / 'a.jsonl'}"))  # fmt: skip
    wait_until(detector.ready, 60, "the detector to be assigned")
    if start == "latest":
        time.sleep(1)
        asyncio.run(produce(kafka_bootstrap, topic_name, messages[100:], 1))
    wait_until(lambda: detector.metric("rmmwatch_messages_total") >= 100, 60, "the second half")
    time.sleep(1)
    assert detector.metric("rmmwatch_messages_total") == 100
    assert detector.stop() == 0
