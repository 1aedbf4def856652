"""The Kafka alert and dead-letter producers check their topic when they open, on the real broker.

A topic the brokers neither have nor create (auto-creation off, as on Event Hubs and most managed
clusters; here: a name the broker refuses) must stop the detector at start with a message naming
the topic, not stall the first batch that has an alert or a dead letter.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from rmmwatch.kafka_settings import KafkaSettings
from rmmwatch.sinks.base import SinkError
from rmmwatch.sinks.kafka import KafkaDeadLetters, KafkaSink
from tests.integration.conftest import service_env
from tests.integration.kafka_tools import create_topic

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
