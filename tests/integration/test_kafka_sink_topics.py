"""The Kafka alert and dead-letter producers check their topic when they open, on the real broker.

A topic the brokers neither have nor create (auto-creation off, as on Event Hubs and most managed
clusters; here: a name the broker refuses) must stop the detector at start with a message naming
the topic, not stall the first batch that has an alert or a dead letter.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from rmmwatch.kafka_settings import KafkaSettings
from rmmwatch.model import DeadLetter
from rmmwatch.sinks.base import SinkError
from rmmwatch.sinks.kafka import DEAD_LETTER_PAYLOAD_BYTES, KafkaDeadLetters, KafkaSink
from tests.integration.conftest import service_env
from tests.integration.kafka_tools import create_topic, read_all

Opener = Callable[[KafkaSettings, str], KafkaSink | KafkaDeadLetters]
both = pytest.mark.parametrize("make", [KafkaSink, KafkaDeadLetters], ids=["alerts", "dead letters"])


@both
async def test_an_existing_topic_opens(make: Opener) -> None:
    bootstrap = service_env("RMMWATCH_TEST_KAFKA_BOOTSTRAP")
    topic = f"sink-ok-{uuid.uuid4().hex[:10]}"
    await create_topic(bootstrap, topic, 2)
    sink = make(KafkaSettings(bootstrap_servers=bootstrap, request_timeout_ms=5000), topic)
    await sink.open()
    await sink.close()


@both
async def test_a_topic_the_brokers_refuse_fails_at_open_naming_it(make: Opener) -> None:
    bootstrap = service_env("RMMWATCH_TEST_KAFKA_BOOTSTRAP")
    topic = "no such topic!"  # spaces and '!' are not legal in a topic name: never auto-created
    sink = make(KafkaSettings(bootstrap_servers=bootstrap, request_timeout_ms=3000), topic)
    with pytest.raises(SinkError) as caught:
        await sink.open()
    message = str(caught.value)
    assert repr(topic) in message
    assert "does not exist" in message
    await sink.close()  # nothing left open: closing is a no-op


def _letter(size: int) -> DeadLetter:
    origin = {"source": "kafka", "topic": "in", "partition": 0, "offset": 7}
    return DeadLetter("oversized", "too big", origin, None, b"x" * size)


async def test_a_dead_letter_larger_than_a_record_may_be_is_cut_and_says_its_size() -> None:
    """A 3 MiB poison message's dead letter: the producer refuses records over 1 MiB, so it used to fail
    forever and hold its partition. Now the payload is cut and ``rmmwatch-payload-truncated`` keeps the size."""
    bootstrap = service_env("RMMWATCH_TEST_KAFKA_BOOTSTRAP")
    topic = f"dl-cut-{uuid.uuid4().hex[:10]}"
    await create_topic(bootstrap, topic, 1)
    sink = KafkaDeadLetters(KafkaSettings(bootstrap_servers=bootstrap, request_timeout_ms=10000), topic)
    await sink.open()
    try:
        await sink.send([_letter(3 * 1024 * 1024), _letter(10)])
    finally:
        await sink.close()
    records = await read_all(bootstrap, topic, expect_at_least=2)
    assert [len(r.value) for r in records] == [DEAD_LETTER_PAYLOAD_BYTES, 10]
    assert dict(records[0].headers)["rmmwatch-payload-truncated"] == str(3 * 1024 * 1024).encode()
    assert "rmmwatch-payload-truncated" not in dict(records[1].headers)
    assert dict(records[1].headers)["rmmwatch-source-offset"] == b"7"


async def test_a_topic_that_takes_less_gets_a_shorter_cut_on_the_retry() -> None:
    """The topic's max.message.bytes is 100000: the first try is refused by the broker (a SinkError: the
    delivery retries), each refusal halves the cut, and a retry goes through (bounded: at most 10 halvings)."""
    bootstrap = service_env("RMMWATCH_TEST_KAFKA_BOOTSTRAP")
    topic = f"dl-small-{uuid.uuid4().hex[:10]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1, topic_configs={"max.message.bytes": "100000"})])
    finally:
        await admin.close()
    await create_topic(bootstrap, topic, 1)  # waits until it is served
    sink = KafkaDeadLetters(KafkaSettings(bootstrap_servers=bootstrap, request_timeout_ms=10000), topic)
    await sink.open()
    refusals = 0
    try:
        for _ in range(10):
            try:
                await sink.send([_letter(800_000)])
                break
            except SinkError:
                refusals += 1
        else:
            raise AssertionError("never produced")
    finally:
        await sink.close()
    assert refusals >= 1, "the broker's smaller limit was met first"
    [record] = await read_all(bootstrap, topic, expect_at_least=1)
    assert len(record.value) == sink.payload_limit < 100_000
    assert dict(record.headers)["rmmwatch-payload-truncated"] == b"800000"
