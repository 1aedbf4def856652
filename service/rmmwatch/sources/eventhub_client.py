"""Where an Event Hubs hub and its checkpoints are, and how the source reaches them.

* **Settings** (:func:`eventhub_settings`): a connection string (namespace-level with ``--eventhub-name``,
  or hub-level with ``EntityPath``; ``UseDevelopmentEmulator=true`` works) or a fully qualified namespace with
  Entra ID (``azure.identity.aio.DefaultAzureCredential``, imported lazily: the ``entra`` extra). Checkpoints and
  partition ownership live in a blob container (``BlobCheckpointStore``) reached by connection string or by
  account URL with the same credential. Without a checkpoint store the source reads every partition with
  checkpoints in memory only.
* **Start position** for partitions without a checkpoint is always explicit (``-1``, ``@latest`` or a time),
  never the SDK's ``@latest`` default: a new consumer group rebuilds the window from retention by default.
* **Connection** (:class:`HubConnection`): the credential and the checkpoint store (built at construction, so
  that a missing extra or a bad store setting is a configuration error before anything runs), the SDK's
  consumer clients, and the start-up checks. The SDK retries forever in the background, so the source first
  asks the service for the hub's properties with one short-retry client and a timeout, and creates the
  checkpoint container; a failure is a :class:`SourceUnavailable` that names the namespace and hub, never
  the key.
"""

from __future__ import annotations

import asyncio
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from azure.core.exceptions import ResourceExistsError
from azure.eventhub.aio import EventHubConsumerClient, PartitionContext
from azure.eventhub.extensions.checkpointstoreblobaio import BlobCheckpointStore

from rmmwatch.config import ConfigError
from rmmwatch.kafka_settings import describe_error
from rmmwatch.kql.datetimes import DatetimeError, parse_datetime, ticks_to_unix_seconds
from rmmwatch.logging import get_logger
from rmmwatch.sources.base import SourceUnavailable

log = get_logger("rmmwatch.sources.eventhub")

EARLIEST = "-1"
LATEST = "@latest"


def start_position(text: str) -> str | datetime:
    """``--eventhub-start`` as the SDK's starting position: ``-1``, ``@latest`` or an aware datetime."""
    if text == "earliest":
        return EARLIEST
    if text == "latest":
        return LATEST
    try:
        ticks = parse_datetime(text)
    except DatetimeError:
        raise ConfigError(f"--eventhub-start: use earliest, latest or an ISO 8601 time, not {text!r}") from None
    return datetime.fromtimestamp(ticks_to_unix_seconds(ticks), UTC)


@dataclass(frozen=True, slots=True)
class EventHubSettings:
    """Where the hub and its checkpoints are, and how to authenticate (secrets never in ``repr``)."""

    namespace: str
    hub: str
    consumer_group: str = "$Default"
    connection_string: str | None = field(default=None, repr=False)
    checkpoint_connection_string: str | None = field(default=None, repr=False)
    checkpoint_account_url: str | None = None
    checkpoint_container: str = "rmmwatch-checkpoints"
    checkpoint_api_version: str | None = None
    start: str = "earliest"
    load_balancing: str = "greedy"
    load_balancing_interval_s: float = 30.0
    ownership_expiry_s: float = 180.0

    @property
    def where(self) -> str:
        """The namespace, hub and consumer group, for messages."""
        return f"namespace {self.namespace}, hub {self.hub}, consumer group {self.consumer_group}"

    @property
    def auth(self) -> str:
        """How the source authenticates to Event Hubs, for messages (never the key)."""
        return "shared access key from the connection string" if self.connection_string else "Entra ID"

    @property
    def needs_credential(self) -> bool:
        return self.connection_string is None or self.checkpoint_account_url is not None


def _entra_credential() -> Any:
    """``DefaultAzureCredential`` (workload identity, managed identity, environment, Azure CLI ...)."""
    try:
        from azure.identity.aio import DefaultAzureCredential  # noqa: PLC0415
    except ImportError:
        raise ConfigError(
            "Entra ID authentication (--eventhub-fully-qualified-namespace, --eventhub-checkpoint-account-url) "
            "needs azure-identity: install rmmwatch with its 'entra' extra (pip install 'rmmwatch[entra]')"
        ) from None
    return DefaultAzureCredential()


class HubConnection:
    """The credential, the checkpoint store and the SDK's consumer clients of one hub."""

    def __init__(self, settings: EventHubSettings, start_timeout_s: float) -> None:
        self.settings = settings
        self.start_timeout_s = start_timeout_s
        self.credential: Any = _entra_credential() if settings.needs_credential else None
        self.store: BlobCheckpointStore | None = self._checkpoint_store()

    def _checkpoint_store(self) -> BlobCheckpointStore | None:
        settings = self.settings
        options: dict[str, Any] = {}
        if settings.checkpoint_api_version:
            options["api_version"] = settings.checkpoint_api_version
        try:
            if settings.checkpoint_connection_string:
                return BlobCheckpointStore.from_connection_string(
                    settings.checkpoint_connection_string, settings.checkpoint_container, **options
                )
            if settings.checkpoint_account_url:
                return BlobCheckpointStore(
                    settings.checkpoint_account_url,
                    settings.checkpoint_container,
                    credential=self.credential,
                    **options,
                )
        except ValueError as exc:  # a malformed connection string, an API version the SDK does not know
            reason = describe_error(exc).split(" Please select from:")[0]
            raise ConfigError(f"cannot use the checkpoint store settings: {reason}") from None
        return None

    def description(self) -> str:
        """Where checkpoints are kept, for messages."""
        store = self.store
        if store is None:
            return "memory"
        # The store keeps its container client private; its host and name carry no secret.
        container = store._container_client
        return f"blob container {container.container_name!r} at {container.primary_hostname}"

    async def ensure_container(self) -> None:
        """Create the checkpoint container if it is missing; fail fast if the account cannot be used."""
        if self.store is None:
            return
        container = self.store._container_client
        try:
            await asyncio.wait_for(container.create_container(), timeout=self.start_timeout_s)
        except ResourceExistsError:
            return
        except Exception as exc:
            detail = "no answer" if isinstance(exc, TimeoutError) else describe_error(exc)
            raise SourceUnavailable(f"cannot use the checkpoint store ({self.description()}): {detail}") from None
        log.info("eventhub_checkpoint_container_created", checkpoints=self.description())

    def consumer(self, store: BlobCheckpointStore | None, **overrides: Any) -> EventHubConsumerClient:
        """An SDK consumer client of the hub, with ``store`` for checkpoints and ownership (None: every
        partition, no load balancing)."""
        settings = self.settings
        options: dict[str, Any] = {
            "checkpoint_store": store,
            "load_balancing_interval": settings.load_balancing_interval_s,
            "partition_ownership_expiration_interval": settings.ownership_expiry_s,
            "load_balancing_strategy": settings.load_balancing,
            **overrides,
        }
        if settings.connection_string:
            return EventHubConsumerClient.from_connection_string(
                settings.connection_string, settings.consumer_group, eventhub_name=settings.hub, **options
            )
        return EventHubConsumerClient(
            settings.namespace, settings.hub, settings.consumer_group, self.credential, **options
        )

    async def probe_hub(self) -> int:
        """Ask for the hub's properties once, with short retries: bad credentials and typos fail here. Returns
        how many partitions the hub has."""
        probe = self.consumer(None, retry_total=1)
        try:
            properties = await asyncio.wait_for(probe.get_eventhub_properties(), timeout=self.start_timeout_s)
        except Exception as exc:
            detail = f"no answer within {self.start_timeout_s:.0f} s" if isinstance(exc, TimeoutError) else None
            raise SourceUnavailable(
                f"cannot reach Event Hubs ({self.settings.where}; {self.settings.auth}): "
                f"{detail or describe_error(exc)}"
            ) from None
        finally:
            with suppress(Exception):
                await probe.close()
        partitions = list(properties.get("partition_ids", []))
        log.info("eventhub_hub_found", hub=self.settings.hub, partitions=partitions)
        return len(partitions)

    async def checkpoint(self, context: PartitionContext) -> int | None:
        """The sequence number checkpointed for ``context``'s partition in the store (None: none, or no store)."""
        if self.store is None:
            return None
        checkpoints = await self.store.list_checkpoints(
            context.fully_qualified_namespace, context.eventhub_name, context.consumer_group
        )
        for checkpoint in checkpoints:
            if checkpoint.get("partition_id") == context.partition_id and checkpoint.get("sequence_number") is not None:
                return int(checkpoint["sequence_number"])
        return None

    async def close(self) -> None:
        """Close the checkpoint store and the credential (idempotent)."""
        store, self.store = self.store, None
        if store is not None:
            with suppress(Exception):
                await store.close()
        credential, self.credential = self.credential, None
        if credential is not None:
            with suppress(Exception):
                await credential.close()
