"""End-to-end tests: the real ``azure-eventhub`` SDK (aio clients above all) against the endpoint.

Every test starts its own endpoint on a free port and bounds each wait with a timeout, so the
file needs no external service and cannot hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("proton", reason="python-qpid-proton is needed for the Event Hubs test endpoint")
pytest.importorskip("azure.eventhub", reason="azure-eventhub is the client under test")

from azure.eventhub import EventData
from azure.eventhub import EventHubConsumerClient as SyncConsumerClient
from azure.eventhub import EventHubProducerClient as SyncProducerClient
from azure.eventhub._buffered_producer._partition_resolver import generate_hash_code
from azure.eventhub.aio import EventHubConsumerClient, EventHubProducerClient, PartitionContext
from azure.eventhub.exceptions import AuthenticationError
from proton import Message
from proton.reactor import Selector
from proton.utils import BlockingConnection, LinkDetached, SendException

from .server import EventHubEndpoint
from .store import StoredEvent, partition_for_key, partition_key_hash

HUB = "defender"
STEP_TIMEOUT = 8.0  # seconds any single wait may take
FROM_START = "amqp.annotation.x-opt-offset > '-1'"  # the selector the SDK sends for "-1"
BOGUS_SELECTOR = "amqp.annotation.x-opt-bogus > '1'"


@pytest.fixture
def endpoint() -> Iterator[EventHubEndpoint]:
    """A fresh endpoint with 2 partitions on a free port."""
    with EventHubEndpoint(hub=HUB, partitions=2) as running:
        yield running


def consumer(endpoint: EventHubEndpoint, connection_string: str | None = None, **kwargs: Any) -> EventHubConsumerClient:
    """An aio consumer client for ``$Default`` (fast retries so fault tests stay short)."""
    kwargs.setdefault("retry_backoff_factor", 0.1)
    return EventHubConsumerClient.from_connection_string(
        connection_string or endpoint.connection_string, consumer_group="$Default", **kwargs
    )


def producer(endpoint: EventHubEndpoint, **kwargs: Any) -> EventHubProducerClient:
    """An aio producer client."""
    kwargs.setdefault("retry_backoff_factor", 0.1)
    return EventHubProducerClient.from_connection_string(endpoint.connection_string, **kwargs)


async def eventually(condition: Callable[[], bool]) -> None:
    """Wait until ``condition()`` holds (checked every 20 ms), failing after :data:`STEP_TIMEOUT`."""
    deadline = time.monotonic() + STEP_TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {STEP_TIMEOUT}s")
        await asyncio.sleep(0.02)


class Receiving:
    """``EventHubConsumerClient.receive_batch`` (or ``receive`` with ``batch=False``) running in the
    background, recording every event and error."""

    def __init__(self, client: EventHubConsumerClient, *, batch: bool = True, **receive_kwargs: Any) -> None:
        self.client = client
        self.events: list[tuple[str, EventData]] = []
        self.errors: list[Exception] = []
        self.contexts: dict[str, PartitionContext] = {}
        receive = (
            client.receive_batch(self._on_batch, on_error=self._on_error, **receive_kwargs)
            if batch
            else client.receive(self._on_event, on_error=self._on_error, **receive_kwargs)
        )
        self._task = asyncio.create_task(receive)

    async def _on_batch(self, context: PartitionContext, events: list[EventData]) -> None:
        self.contexts[context.partition_id] = context
        self.events.extend((context.partition_id, event) for event in events)

    async def _on_event(self, context: PartitionContext, event: EventData | None) -> None:
        if event is not None:
            await self._on_batch(context, [event])

    async def _on_error(self, context: PartitionContext | None, error: Exception) -> None:
        self.errors.append(error)

    def bodies(self, partition_id: str | None = None) -> list[str]:
        """Bodies received (from one partition or all), in arrival order."""
        return [e.body_as_str() for pid, e in self.events if partition_id in (None, pid)]

    async def wait_for(self, count: int) -> None:
        """Wait until at least ``count`` events arrived."""
        await eventually(lambda: len(self.events) >= count)

    async def close(self) -> None:
        """Close the client and end the receive task (the processor otherwise sleeps out its
        load-balancing interval before returning)."""
        await asyncio.wait_for(self.client.close(), STEP_TIMEOUT)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


@contextlib.asynccontextmanager
async def receiving(client: EventHubConsumerClient, **receive_kwargs: Any) -> AsyncIterator[Receiving]:
    """``async with receiving(client, ...) as r:`` — a :class:`Receiving` closed on exit."""
    receiver = Receiving(client, **receive_kwargs)
    try:
        yield receiver
    finally:
        await receiver.close()


async def bounded(awaitable: Awaitable[Any]) -> Any:
    """Await with the per-step timeout."""
    return await asyncio.wait_for(awaitable, STEP_TIMEOUT)


def seed(endpoint: EventHubEndpoint, partition_id: str, count: int, start: datetime) -> list[StoredEvent]:
    """Append ``count`` events one second apart (bodies ``p<pid>-<n>``)."""
    return [
        endpoint.append(partition_id, f"p{partition_id}-{n}".encode(), enqueued_time=start + timedelta(seconds=n))
        for n in range(count)
    ]


@pytest.mark.asyncio
async def test_hub_and_partition_properties(endpoint: EventHubEndpoint) -> None:
    start = datetime(2030, 1, 1, tzinfo=UTC)
    stored = seed(endpoint, "1", 3, start)
    async with consumer(endpoint) as client:
        hub = await bounded(client.get_eventhub_properties())
        empty = await bounded(client.get_partition_properties("0"))
        filled = await bounded(client.get_partition_properties("1"))
        assert await bounded(client.get_partition_ids()) == ["0", "1"]
    assert hub["eventhub_name"] == HUB
    assert hub["partition_ids"] == ["0", "1"]
    assert abs(hub["created_at"] - datetime.now(UTC)) < timedelta(minutes=1)
    assert empty["is_empty"] is True
    assert empty["last_enqueued_sequence_number"] == -1
    assert empty["last_enqueued_offset"] == "-1"
    assert filled == {
        "eventhub_name": HUB,
        "id": "1",
        "beginning_sequence_number": 0,
        "last_enqueued_sequence_number": 2,
        "last_enqueued_offset": str(stored[-1].offset),
        "is_empty": False,
        "last_enqueued_time_utc": start + timedelta(seconds=2),
    }


@pytest.mark.asyncio
async def test_producer_batches_reach_partitions_and_consumer_reads_all_partitions(
    endpoint: EventHubEndpoint,
) -> None:
    async with producer(endpoint) as client:
        for pid in ("0", "1"):
            batch = await bounded(client.create_batch(partition_id=pid))
            for n in range(5):
                event = EventData(f"p{pid}-{n}")
                event.properties = {"n": n, "kind": "batch"}
                batch.add(event)
            await bounded(client.send_batch(batch))
        await bounded(client.send_event(EventData("p1-single"), partition_id="1"))

    stored = {pid: endpoint.partition_events(pid) for pid in ("0", "1")}
    assert [e.body for e in stored["0"]] == [f"p0-{n}".encode() for n in range(5)]
    assert [e.body for e in stored["1"]] == [f"p1-{n}".encode() for n in range(5)] + [b"p1-single"]
    assert [e.sequence_number for e in stored["1"]] == list(range(6))
    assert stored["0"][3].properties == {"n": 3, "kind": "batch"}
    offsets = [e.offset for e in stored["1"]]
    assert offsets[0] == 0
    assert offsets == sorted(set(offsets))

    async with receiving(consumer(endpoint), starting_position="-1") as received:  # all partitions
        await received.wait_for(11)
    assert received.bodies("0") == [f"p0-{n}" for n in range(5)]
    assert received.bodies("1") == [f"p1-{n}" for n in range(5)] + ["p1-single"]
    for pid, event in received.events:
        assert event.sequence_number is not None
        original = stored[pid][event.sequence_number]
        assert event.offset == str(original.offset)
        assert event.enqueued_time == original.enqueued_time
        assert event.partition_key is None
    first = next(event for pid, event in received.events if pid == "0")
    assert first.properties == {b"n": 0, b"kind": b"batch"}


@pytest.mark.asyncio
async def test_partition_key_routing_matches_the_service_hash(endpoint: EventHubEndpoint) -> None:
    for key in ("device-42", "host-a", "x", "a-much-longer-partition-key-value-0123456789"):
        assert partition_key_hash(key) == generate_hash_code(key)  # type: ignore[no-untyped-call]
    async with producer(endpoint) as client:
        batch = await bounded(client.create_batch(partition_key="device-42"))
        for n in range(3):
            batch.add(EventData(f"keyed-{n}"))
        await bounded(client.send_batch(batch))
        for n in range(4):
            await bounded(client.send_event(EventData(f"unkeyed-{n}")))
    keyed = [e for pid in ("0", "1") for e in endpoint.partition_events(pid) if e.body.startswith(b"keyed")]
    assert {e.partition_id for e in keyed} == {str(partition_for_key("device-42", 2))}
    assert {e.partition_key for e in keyed} == {"device-42"}
    unkeyed = [e for pid in ("0", "1") for e in endpoint.partition_events(pid) if e.body.startswith(b"unkeyed")]
    assert sorted(e.partition_id for e in unkeyed) == ["0", "0", "1", "1"]  # round robin
    async with receiving(consumer(endpoint), starting_position="-1") as received:
        await received.wait_for(7)
    assert {e.partition_key for _, e in received.events if e.body_as_str().startswith("keyed")} == {b"device-42"}


@pytest.mark.asyncio
async def test_buffered_producer(endpoint: EventHubEndpoint) -> None:
    failures: list[Exception] = []

    async def on_success(events: list[EventData], partition_id: str | None) -> None:
        pass

    async def on_error(events: list[EventData], partition_id: str | None, error: Exception) -> None:
        failures.append(error)

    client = producer(endpoint, buffered_mode=True, on_success=on_success, on_error=on_error, max_wait_time=0.1)
    async with client:
        for n in range(6):
            await bounded(client.send_event(EventData(f"buffered-{n}"), partition_key=f"key-{n % 2}"))
        await bounded(client.flush())
    assert failures == []
    stored = [e for pid in ("0", "1") for e in endpoint.partition_events(pid)]
    assert sorted(e.body for e in stored) == sorted(f"buffered-{n}".encode() for n in range(6))
    partitions_by_key: dict[str | None, set[str]] = {}
    for event in stored:
        partitions_by_key.setdefault(event.partition_key, set()).add(event.partition_id)
    assert set(partitions_by_key) == {"key-0", "key-1"}
    assert all(len(pids) == 1 for pids in partitions_by_key.values())  # the SDK keeps a key on one partition


@pytest.mark.asyncio
async def test_starting_positions(endpoint: EventHubEndpoint) -> None:
    stored = seed(endpoint, "0", 5, datetime(2030, 1, 1, tzinfo=UTC))
    third = stored[2]
    cases: dict[str, tuple[dict[str, Any], list[int]]] = {
        "earliest": ({"starting_position": "-1"}, [0, 1, 2, 3, 4]),
        "sequence exclusive": ({"starting_position": third.sequence_number}, [3, 4]),
        "sequence inclusive": (
            {"starting_position": third.sequence_number, "starting_position_inclusive": True},
            [2, 3, 4],
        ),
        "offset exclusive": ({"starting_position": str(third.offset)}, [3, 4]),
        "offset inclusive": ({"starting_position": str(third.offset), "starting_position_inclusive": True}, [2, 3, 4]),
        "time exclusive": ({"starting_position": third.enqueued_time}, [3, 4]),
        "time inclusive": ({"starting_position": third.enqueued_time, "starting_position_inclusive": True}, [2, 3, 4]),
        "per-partition dict": ({"starting_position": {"0": 3}}, [4]),
    }

    async def run(kwargs: dict[str, Any], expected: list[int]) -> list[int | None]:
        async with receiving(consumer(endpoint), partition_id="0", **kwargs) as received:
            await received.wait_for(len(expected))
            await asyncio.sleep(0.2)  # nothing beyond the expected events may follow
        return [event.sequence_number for _, event in received.events]

    results = await asyncio.gather(*(run(kwargs, expected) for kwargs, expected in cases.values()))
    assert dict(zip(cases, results, strict=True)) == {name: expected for name, (_, expected) in cases.items()}


@pytest.mark.asyncio
async def test_latest_only_delivers_events_enqueued_after_attach(endpoint: EventHubEndpoint) -> None:
    seed(endpoint, "0", 3, datetime(2030, 1, 1, tzinfo=UTC))
    async with receiving(consumer(endpoint), batch=False, partition_id="0", starting_position="@latest") as received:
        await eventually(lambda: len(endpoint.receivers("0")) == 1)
        endpoint.append("0", b"fresh")
        await received.wait_for(1)
        await asyncio.sleep(0.2)
    assert received.bodies() == ["fresh"]
    assert received.events[0][1].sequence_number == 3


@pytest.mark.asyncio
async def test_credit_is_honoured_across_many_events_and_large_batches(endpoint: EventHubEndpoint) -> None:
    payload = "x" * 10_000
    async with producer(endpoint) as client:
        batch = await bounded(client.create_batch(partition_id="0"))
        assert batch.max_size_in_bytes == 1024 * 1024  # the link's max-message-size
        added = 0
        with contextlib.suppress(ValueError):
            while True:
                batch.add(EventData(f"{added:04d}{payload}"))
                added += 1
        await bounded(client.send_batch(batch))
    assert added > 90
    assert len(endpoint.partition_events("0")) == added
    async with receiving(consumer(endpoint, prefetch=10), partition_id="0", starting_position="-1") as received:
        await received.wait_for(added)
    assert [e.sequence_number for _, e in received.events] == list(range(added))
    assert all(body == f"{n:04d}{payload}" for n, body in enumerate(received.bodies()))


@pytest.mark.asyncio
async def test_track_last_enqueued_event_properties(endpoint: EventHubEndpoint) -> None:
    stored = seed(endpoint, "0", 4, datetime(2030, 1, 1, tzinfo=UTC))
    async with receiving(
        consumer(endpoint), partition_id="0", starting_position="-1", track_last_enqueued_event_properties=True
    ) as received:
        await received.wait_for(4)
        assert [r.runtime_metrics for r in endpoint.receivers("0")] == [True]
    last = received.contexts["0"].last_enqueued_event_properties
    assert last is not None
    assert last["sequence_number"] == 3
    assert last["offset"] == str(stored[-1].offset)
    assert last["enqueued_time"] == stored[-1].enqueued_time
    assert abs(last["retrieval_time"] - datetime.now(UTC)) < timedelta(minutes=1)


@pytest.mark.asyncio
async def test_higher_owner_level_takes_over_the_partition(endpoint: EventHubEndpoint) -> None:
    seed(endpoint, "0", 2, datetime(2030, 1, 1, tzinfo=UTC))
    async with receiving(consumer(endpoint), partition_id="0", starting_position="-1", owner_level=1) as first:
        await first.wait_for(2)
        async with receiving(consumer(endpoint), partition_id="0", starting_position="-1", owner_level=2) as second:
            await second.wait_for(2)
            await eventually(lambda: len(first.errors) >= 1)
            assert "amqp:link:stolen" in str(first.errors[0])
            assert "higher epoch of '2'" in str(first.errors[0])
            assert [r.epoch for r in endpoint.receivers("0")] == [2]
            endpoint.append("0", b"after-takeover")
            await second.wait_for(3)
            async with receiving(consumer(endpoint), partition_id="0", starting_position="-1") as plain:
                await eventually(lambda: len(plain.errors) >= 1)  # non-epoch receivers are refused
            assert "non-epoch receiver is not allowed" in str(plain.errors[0])
            await asyncio.sleep(0.2)
    assert second.bodies()[-1] == "after-takeover"
    assert "after-takeover" not in first.bodies()
    assert plain.events == []


@pytest.mark.asyncio
async def test_clients_recover_after_connections_drop(endpoint: EventHubEndpoint) -> None:
    seed(endpoint, "0", 3, datetime(2030, 1, 1, tzinfo=UTC))
    async with (
        producer(endpoint) as client,
        receiving(consumer(endpoint), partition_id="0", starting_position="-1") as received,
    ):
        await received.wait_for(3)
        await bounded(client.send_event(EventData("before-drop"), partition_id="0"))
        await received.wait_for(4)
        assert endpoint.drop_connections() >= 2
        await bounded(client.send_event(EventData("after-drop"), partition_id="0"))  # the producer reconnects
        await received.wait_for(5)  # the consumer reconnects and resumes after its last event
        await asyncio.sleep(0.2)
    assert received.bodies() == ["p0-0", "p0-1", "p0-2", "before-drop", "after-drop"]
    assert endpoint.receivers("0") == []


@pytest.mark.asyncio
async def test_wrong_sas_key_is_rejected(endpoint: EventHubEndpoint) -> None:
    wrong = endpoint.connection_string.replace(f"SharedAccessKey={endpoint.key}", "SharedAccessKey=not-the-key")
    async with consumer(endpoint, wrong, retry_total=0) as client:
        with pytest.raises(AuthenticationError, match="401"):
            await bounded(client.get_eventhub_properties())
    async with EventHubProducerClient.from_connection_string(wrong, retry_total=0) as client:
        with pytest.raises(AuthenticationError, match="InvalidSignature"):
            await bounded(client.send_event(EventData("nope"), partition_id="0"))
    async with receiving(consumer(endpoint, wrong, retry_total=0), partition_id="0") as received:
        await eventually(lambda: len(received.errors) >= 1)
    assert isinstance(received.errors[0], AuthenticationError)
    assert endpoint.partition_events("0") == []


@pytest.mark.parametrize(
    ("verify_tokens", "address", "selector", "condition"),
    [
        (True, f"{HUB}/ConsumerGroups/$Default/Partitions/0", FROM_START, "amqp:unauthorized-access"),
        (False, f"{HUB}/ConsumerGroups/$Default/Partitions/9", FROM_START, "amqp:not-found"),
        (False, f"{HUB}/ConsumerGroups/other/Partitions/0", FROM_START, "amqp:not-found"),
        (False, "unknown-hub/ConsumerGroups/$Default/Partitions/0", FROM_START, "amqp:not-found"),
        (
            False,
            f"{HUB}/ConsumerGroups/$Default/Partitions/0",
            "amqp.annotation.x-opt-bogus > '1'",
            "amqp:invalid-field",
        ),
    ],
)
def test_refused_receive_links_carry_the_service_error(
    verify_tokens: bool, address: str, selector: str, condition: str
) -> None:
    """A plain AMQP client (proton, no CBS token) sees links refused the way the service refuses them."""
    with (
        EventHubEndpoint(hub=HUB, partitions=2, consumer_groups=["$Default"], verify_tokens=verify_tokens) as server,
        contextlib.closing(
            BlockingConnection(f"amqp://127.0.0.1:{server.port}", timeout=STEP_TIMEOUT, allowed_mechs="ANONYMOUS")
        ) as connection,
    ):
        with pytest.raises(LinkDetached) as refused:
            connection.create_receiver(address, options=Selector(selector))
        assert refused.value.condition == condition


def test_messages_over_the_link_limit_are_rejected() -> None:
    """The SDK never sends more than the advertised 1 MB; a plain AMQP client that does is refused."""
    with (
        EventHubEndpoint(hub=HUB, partitions=1, verify_tokens=False) as server,
        contextlib.closing(
            BlockingConnection(f"amqp://127.0.0.1:{server.port}", timeout=STEP_TIMEOUT, allowed_mechs="ANONYMOUS")
        ) as connection,
    ):
        sender = connection.create_sender(f"{HUB}/Partitions/0")
        assert sender.link.remote_max_message_size == 1024 * 1024
        with pytest.raises(SendException):
            sender.send(Message(body=b"x" * (1024 * 1024 + 1), inferred=True))
        sender.send(Message(body=b"small", inferred=True))
        assert [e.body for e in server.partition_events("0")] == [b"small"]


def test_sync_clients_work_too(endpoint: EventHubEndpoint) -> None:
    with SyncProducerClient.from_connection_string(endpoint.connection_string) as client:
        batch = client.create_batch(partition_id="1")
        batch.add(EventData("sync"))
        client.send_batch(batch)
    with SyncConsumerClient.from_connection_string(endpoint.connection_string, consumer_group="$Default") as client:
        assert client.get_partition_properties("1")["last_enqueued_sequence_number"] == 0
    assert [e.body for e in endpoint.partition_events("1")] == [b"sync"]


def test_command_line_runs_until_sigterm() -> None:
    repo_root = Path(__file__).resolve().parents[2]
    command = [sys.executable, "-m", "tests.eventhub_endpoint", "--port", "0", "--hub", "cli", "--partitions", "3"]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    with subprocess.Popen(
        command, cwd=repo_root, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=environment
    ) as process:
        try:
            assert process.stdout is not None
            readable, _, _ = select.select([process.stdout], [], [], STEP_TIMEOUT)
            assert readable, "the endpoint did not print its connection string"
            connection_string = process.stdout.readline().strip()
            assert connection_string.endswith("UseDevelopmentEmulator=true;EntityPath=cli")
            with SyncConsumerClient.from_connection_string(connection_string, consumer_group="$Default") as client:
                assert client.get_partition_ids() == ["0", "1", "2"]
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=STEP_TIMEOUT) == 0
        finally:
            if process.poll() is None:
                process.kill()
