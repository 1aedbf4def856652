"""What only the Event Hubs (AMQP) source does, with the real SDK against the test AMQP endpoint: event bodies as
the raw bytes a producer sent, and readiness that follows the SDK's receive errors.

The source contract (every message once, readiness, resume, commits, pause, group membership, start positions)
runs against this source with the others in tests/contract/test_source_contract.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from azure.eventhub import EventData
from azure.eventhub.aio import EventHubProducerClient
from azure.eventhub.amqp import AmqpAnnotatedMessage

from rmmwatch.sources.base import Batch
from rmmwatch.sources.eventhub import EventHubSource
from tests.eventhub_endpoint.server import EventHubEndpoint
from tests.integration.eventhub_tools import settings


@pytest.fixture
def endpoint() -> Iterator[EventHubEndpoint]:
    with EventHubEndpoint(hub="defender", partitions=3) as running:
        yield running


async def _drain(source: EventHubSource, idle_rounds: int = 4) -> list[Batch]:
    batches: list[Batch] = []
    idle = 0
    while idle < idle_rounds:
        batch = await source.fetch(0.5)
        if batch is None:
            idle += 1
            continue
        idle = 0
        batches.append(batch)
    return batches


async def test_bodies_are_the_raw_bytes_a_producer_sent(endpoint: EventHubEndpoint) -> None:
    """Sent with the SDK's producer: data sections joined byte for byte (not decoded: invalid UTF-8 stays, for
    the decoder to dead-letter), and a value body as its text."""
    async with EventHubProducerClient.from_connection_string(endpoint.connection_string) as producer:
        batch = await producer.create_batch(partition_id="2")
        batch.add(EventData(b'{"n": 1}'))
        batch.add(AmqpAnnotatedMessage(data_body=[b'{"n": "not utf-8 \xff', b'\xfe"}']))
        batch.add(AmqpAnnotatedMessage(value_body='{"n": "a value body"}'))
        await producer.send_batch(batch)
    source = EventHubSource(settings(endpoint, None, "unused"))
    await source.start()
    try:
        messages = [m for b in await _drain(source) for m in b.messages]
    finally:
        await source.close()
    assert messages == [b'{"n": 1}', b'{"n": "not utf-8 \xff\xfe"}', b'{"n": "a value body"}']


async def test_receive_errors_keep_it_unready_until_events_flow() -> None:
    """A consumer group that does not exist: the SDK's error makes the source unready, and keeps it so while the
    SDK retries; once the group exists (created by an operator) and events flow, it is ready again."""
    with EventHubEndpoint(hub="defender", partitions=2, consumer_groups=["$Default"]) as endpoint:
        source = EventHubSource(settings(endpoint, None, "unused", consumer_group="rmmwatch"), probe_interval_s=1)
        await source.start()
        try:
            for _ in range(40):
                if "could not be found" in source.ready()[1]:
                    break
                assert await source.fetch(0.5) is None
            assert source.ready()[0] is False
            assert "consumer group 'rmmwatch' could not be found" in source.ready()[1]
            for _ in range(12):  # the SDK re-creates the links and fails again: no flapping to ready
                await source.fetch(0.5)
                assert source.ready()[0] is False
            # The operator creates the group (the test endpoint then accepts any group name).
            endpoint._call(lambda: setattr(endpoint._broker, "_consumer_groups", None))
            endpoint.append("1", b'{"n": 1}')
            batch = None
            for _ in range(40):
                batch = await source.fetch(0.5)
                if batch is not None:
                    break
            assert batch is not None and batch.messages == [b'{"n": 1}']
            assert source.ready() == (True, "2 partition(s) owned")
        finally:
            await source.close()
