"""Helpers for the Event Hubs tests: the in-process AMQP test endpoint and the checkpoints in the real Azurite.

The endpoint (``tests/eventhub_endpoint``) runs on a thread of the test process; detectors under test are
subprocesses that connect to it over 127.0.0.1. Checkpoints and ownership are blobs in Azurite, read here
with the same ``BlobCheckpointStore`` the source writes them with. Each test uses its own container, so
tests never see each other's checkpoints (the blob names only hold host, hub and consumer group).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence

from azure.core.exceptions import ResourceNotFoundError
from azure.eventhub.extensions.checkpointstoreblobaio import BlobCheckpointStore

from rmmwatch.sources.eventhub import EventHubSettings
from tests.eventhub_endpoint.server import EventHubEndpoint

GROUP = "$Default"


def container_name() -> str:
    return f"ck-{uuid.uuid4().hex[:12]}"


def namespace(endpoint: EventHubEndpoint) -> str:
    """The namespace the SDK records in blob names for the endpoint (``host:port`` with the emulator string)."""
    return f"127.0.0.1:{endpoint.port}"


def settings(endpoint: EventHubEndpoint, azurite: str | None, container: str, **overrides: object) -> EventHubSettings:
    """Source settings for ``endpoint``, with Azurite checkpoints unless ``azurite`` is None; short load balancing."""
    values: dict[str, object] = {
        "namespace": namespace(endpoint),
        "hub": endpoint.hub,
        "connection_string": endpoint.connection_string,
        "checkpoint_connection_string": azurite,
        "checkpoint_container": container,
        "load_balancing_interval_s": 1.0,
        "ownership_expiry_s": 4.0,
    }
    values.update(overrides)
    return EventHubSettings(**values)  # type: ignore[arg-type]


def append_round_robin(endpoint: EventHubEndpoint, messages: Sequence[bytes]) -> None:
    """Message ``i`` to partition ``i % partitions``, in order."""
    partitions = endpoint.partition_ids
    for index, message in enumerate(messages):
        endpoint.append(partitions[index % len(partitions)], message)


async def checkpoints(azurite: str, container: str, endpoint: EventHubEndpoint) -> dict[str, int]:
    """Partition -> checkpointed sequence number, as stored in the container."""
    async with BlobCheckpointStore.from_connection_string(azurite, container) as store:
        try:
            found = await store.list_checkpoints(namespace(endpoint), endpoint.hub, GROUP)
        except ResourceNotFoundError:  # the detector has not created the container yet
            return {}
    return {c["partition_id"]: int(c["sequence_number"]) for c in found}


async def checkpointed_total(azurite: str, container: str, endpoint: EventHubEndpoint) -> int:
    """How many events the checkpoints cover (sequence numbers start at 0 in every partition)."""
    return sum(sequence + 1 for sequence in (await checkpoints(azurite, container, endpoint)).values())


async def owners(azurite: str, container: str, endpoint: EventHubEndpoint, expiry_s: float) -> dict[str, str]:
    """Partition -> owner id, for ownerships that are claimed and not expired."""
    async with BlobCheckpointStore.from_connection_string(azurite, container) as store:
        try:
            found = await store.list_ownership(namespace(endpoint), endpoint.hub, GROUP)
        except ResourceNotFoundError:
            return {}
    now = time.time()
    return {
        o["partition_id"]: o["owner_id"] for o in found if o["owner_id"] and o["last_modified_time"] + expiry_s > now
    }
