"""Azure Event Hubs over AMQP as a source: the SDK's event processor, blob checkpoints, the loop's commit order.

What this module owns, and why it is shaped this way:

* **Settings** (:func:`eventhub_settings`): a connection string (namespace-level with ``--eventhub-name``,
  or hub-level with ``EntityPath``; ``UseDevelopmentEmulator=true`` works) or a fully qualified namespace with
  Entra ID (``azure.identity.aio.DefaultAzureCredential``, imported lazily: the ``entra`` extra). Checkpoints and
  partition ownership live in a blob container (``BlobCheckpointStore``) reached by connection string or by
  account URL with the same credential. Without a checkpoint store the source reads every partition with
  checkpoints in memory only, and says so at start: a restart re-reads from the start position.
* **Batches**: ``EventHubConsumerClient.receive_batch`` calls back once per partition with at most
  ``max_messages`` events. The callback puts them on a bounded asyncio queue and :meth:`fetch` hands queued
  partition batches to the loop, combined up to ``max_messages``. A full queue, or :meth:`pause`, blocks the
  callbacks, and a blocked callback stops the SDK's receive loop for that partition (it stops granting link
  credit once its prefetch buffer is full): backpressure reaches the service.
* **Positions and checkpoints**: a batch's position is, per owned partition, the last event handed out so far
  (in this batch or an earlier one) and the ownership generation it was received under. Positions are
  cumulative because the loop commits batches in order and only the newest position when several wait (an
  alert waiting for delivery holds commits back): committing it must cover the partitions of the batches
  before it too. :meth:`commit` runs only when the loop asks (state durable, alerts delivered) and calls
  ``PartitionContext.update_checkpoint`` for partitions still owned in the same generation, and only forward:
  a checkpoint never moves backwards.
* **Ownership**: ``on_partition_initialize`` starts a generation, ``on_partition_close`` ends it. The SDK closes
  a partition when its load balancer gives it to another replica, when another receiver takes the link over
  (owner level), after receive errors it could not retry, and at shutdown. A batch handed out under an ended
  generation is never checkpointed (its partition now belongs to someone who started from the last checkpoint
  and re-reads it; the idempotent store absorbs the duplicates), and queued batches of ended generations are
  dropped. Unlike the Kafka source there is no revoke wait: when the SDK reports the loss, the new owner has
  already read the checkpoint.
* **Start position** for partitions without a checkpoint is always explicit (``-1``, ``@latest`` or a time),
  never the SDK's ``@latest`` default: a new consumer group rebuilds the window from retention by default.
* **Failing fast**: the SDK retries forever in the background, so :meth:`start` first asks the service for the
  hub's properties with one short-retry client and a timeout, and creates the checkpoint container; a failure
  is a :class:`SourceUnavailable` that names the namespace and hub, never the key.
* **One process, every partition**: with an unshared store (sqlite), owning only some partitions for longer
  than an ownership handover takes means another replica shares the consumer group, and each would alert on
  part of every device's events: :meth:`problem` then reports it and the loop stops (as the Kafka source does).
* **Readiness and lag**: not ready until a partition is owned, nor while the SDK reports errors (``on_error``):
  ready again once events flow, or once a probe of an idle partition gets an answer and no error came for
  two load-balancing intervals plus 10 s (longer than the SDK takes to retry a failing link and report it
  again, so a persistent fault, like a consumer group that does not exist, keeps the source unready).
  Lag per partition is the last enqueued sequence number (delivered with every event:
  ``track_last_enqueued_event_properties``; asked with ``get_partition_properties`` for idle partitions) minus
  the last checkpointed one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from azure.core.exceptions import ResourceExistsError
from azure.eventhub import CloseReason, EventData
from azure.eventhub.aio import EventHubConsumerClient, PartitionContext
from azure.eventhub.amqp import AmqpMessageBodyType
from azure.eventhub.extensions.checkpointstoreblobaio import BlobCheckpointStore

from rmmwatch.config import ConfigError, RunConfig
from rmmwatch.kafka_client import EventHubsConnectionString
from rmmwatch.kql.datetimes import DatetimeError, parse_datetime, ticks_to_unix_seconds
from rmmwatch.logging import get_logger, redactor
from rmmwatch.metrics import Metrics
from rmmwatch.sources.base import Batch, SourceUnavailable

log = get_logger("rmmwatch.sources.eventhub")

EARLIEST = "-1"
LATEST = "@latest"

Position = dict[str, tuple[int, EventData]]  # partition -> (ownership generation, last event)


def describe_error(exc: BaseException) -> str:
    """An SDK error as one line with secrets redacted (SDK messages span lines and may echo addresses)."""
    text = " ".join(str(exc).split()) or "no detail"
    return redactor.redact(f"{type(exc).__name__}: {text}")


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


def event_body(event: EventData) -> bytes:
    """An event's raw bytes: its data sections joined (``body_as_str`` would decode, and mangle, the bytes)."""
    if event.body_type == AmqpMessageBodyType.DATA:
        return b"".join(cast("Iterable[bytes]", event.body))
    value = event.body  # a value or sequence body from some other producer: kept as text, decoding judges it
    return value if isinstance(value, bytes) else str(value).encode()


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


def eventhub_settings(config: RunConfig) -> EventHubSettings:
    """The source's settings from ``run``'s options, validated (ConfigError names the option)."""
    text = config.eventhub_connection_string
    fqns = config.eventhub_fully_qualified_namespace
    if text and fqns:
        raise ConfigError("give either --eventhub-connection-string or --eventhub-fully-qualified-namespace, not both")
    entity: str | None = None
    if text:
        connection = EventHubsConnectionString(text)
        namespace, entity = connection.host, connection.entity_path
    elif fqns:
        namespace = fqns.strip().removeprefix("sb://").rstrip("/")
    else:
        raise ConfigError(
            "the eventhub source needs --eventhub-connection-string or --eventhub-fully-qualified-namespace (Entra ID)"
        )
    hub = config.eventhub_name or entity
    if not hub:
        raise ConfigError("the eventhub source needs --eventhub-name (or an EntityPath in the connection string)")
    if entity and config.eventhub_name and entity != config.eventhub_name:
        raise ConfigError(f"--eventhub-name {config.eventhub_name!r} differs from the connection string's EntityPath")
    if config.eventhub_checkpoint_connection_string and config.eventhub_checkpoint_account_url:
        raise ConfigError(
            "give either --eventhub-checkpoint-connection-string or --eventhub-checkpoint-account-url, not both"
        )
    if config.eventhub_checkpoint_connection_string:
        for piece in config.eventhub_checkpoint_connection_string.split(";"):
            key, _, value = piece.partition("=")
            if key.strip().lower() in ("accountkey", "sharedaccesssignature"):
                redactor.register(value.strip())
    start_position(config.eventhub_start)
    if config.eventhub_load_balancing_interval <= 0:
        raise ConfigError("--eventhub-load-balancing-interval must be positive")
    if config.eventhub_ownership_expiry <= config.eventhub_load_balancing_interval:
        raise ConfigError("--eventhub-ownership-expiry must be longer than --eventhub-load-balancing-interval")
    return EventHubSettings(
        namespace=namespace,
        hub=hub,
        consumer_group=config.eventhub_consumer_group,
        connection_string=text or None,
        checkpoint_connection_string=config.eventhub_checkpoint_connection_string or None,
        checkpoint_account_url=config.eventhub_checkpoint_account_url or None,
        checkpoint_container=config.eventhub_checkpoint_container,
        checkpoint_api_version=config.eventhub_checkpoint_api_version or None,
        start=config.eventhub_start,
        load_balancing=config.eventhub_load_balancing,
        load_balancing_interval_s=config.eventhub_load_balancing_interval,
        ownership_expiry_s=config.eventhub_ownership_expiry,
    )


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


@dataclass(slots=True)
class _Owned:
    context: PartitionContext
    generation: int


@dataclass(slots=True)
class _Received:
    partition: str
    generation: int
    events: list[EventData]


class EventHubSource:
    """A member of an Event Hubs consumer group reading raw event bodies."""

    name = "eventhub"

    def __init__(
        self,
        settings: EventHubSettings,
        *,
        max_messages: int = 500,
        metrics: Metrics | None = None,
        queue_batches: int = 8,
        probe_interval_s: float = 10.0,
        start_timeout_s: float = 30.0,
        exclusive: bool = False,
    ) -> None:
        """``exclusive``: this process must own every partition (its store is not shared)."""
        self.settings = settings
        self.max_messages = max_messages
        self.metrics = metrics
        self.probe_interval_s = probe_interval_s
        self.start_timeout_s = start_timeout_s
        self._start = start_position(settings.start)
        self._queue: asyncio.Queue[_Received] = asyncio.Queue(maxsize=queue_batches)
        self._leftover: _Received | None = None
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._client: EventHubConsumerClient | None = None
        # Built here, so that a missing extra or a bad store setting is a configuration error before anything runs.
        self._credential: Any = _entra_credential() if settings.needs_credential else None
        self._store: BlobCheckpointStore | None = self._checkpoint_store()
        self._receiving: asyncio.Task[None] | None = None
        self._probe: asyncio.Task[None] | None = None
        self._owned: dict[str, _Owned] = {}
        self._next_generation = 0
        self._committed: dict[str, int] = {}  # partition -> last checkpointed sequence number
        self._baseline: dict[str, int] = {}  # partition -> sequence number before the first one to read
        self._last_enqueued: dict[str, int] = {}
        self._heard: dict[str, float] = {}  # partition -> when the service last told us its end
        self._handed_out: dict[str, tuple[int, EventData]] = {}  # partition -> (generation, last event fetched)
        self._error: str | None = None
        self._error_at = 0.0
        self.exclusive = exclusive
        self._partitions = 0
        self._partial_since: float | None = None
        self._problem: str | None = None

    # -- lifecycle -----------------------------------------------------------------------
    @property
    def exhausted(self) -> bool:
        return False

    def ready(self) -> tuple[bool, str]:
        if self._client is None:
            return False, "not started"
        if not self._owned:
            return False, f"no partitions owned ({self.settings.where})"
        if self._error is not None:
            return False, f"Event Hubs error: {self._error}"
        return True, f"{len(self._owned)} partition(s) owned"

    async def start(self) -> None:
        settings = self.settings
        try:
            if self._store is not None:
                await self._ensure_container(self._store)
            await self._probe_hub()
        except BaseException:
            await self.close()
            raise
        self._client = self._consumer(self._store)
        self._receiving = asyncio.create_task(self._receive(self._client), name="rmmwatch-eventhub-receive")
        self._probe = asyncio.create_task(self._probe_loop(), name="rmmwatch-eventhub-probe")
        if self._store is None:
            log.warning(
                "eventhub_without_checkpoint_store",
                note="no load balancing, every partition, checkpoints in memory only: "
                "a restart re-reads from the start position",
                start=settings.start,
            )
        log.info(
            "eventhub_started",
            namespace=settings.namespace,
            hub=settings.hub,
            consumer_group=settings.consumer_group,
            start=settings.start,
            checkpoints=self._store_description(),
            load_balancing=settings.load_balancing,
        )

    async def close(self) -> None:
        probe, self._probe = self._probe, None
        if probe is not None:
            probe.cancel()
            with suppress(asyncio.CancelledError, Exception):
                await probe
        client, self._client = self._client, None
        if client is not None:
            with suppress(Exception):
                await client.close()  # stops the processor: every partition closes (on_partition_close)
        receiving, self._receiving = self._receiving, None
        if receiving is not None:
            if not receiving.done():
                receiving.cancel()
            with suppress(asyncio.CancelledError, Exception):
                await receiving
        store, self._store = self._store, None
        if store is not None:
            with suppress(Exception):
                await store.close()
        credential, self._credential = self._credential, None
        if credential is not None:
            with suppress(Exception):
                await credential.close()
        self._owned.clear()

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
                    credential=self._credential,
                    **options,
                )
        except ValueError as exc:  # a malformed connection string, an API version the SDK does not know
            reason = describe_error(exc).split(" Please select from:")[0]
            raise ConfigError(f"cannot use the checkpoint store settings: {reason}") from None
        return None

    def _store_description(self) -> str:
        store = self._store
        if store is None:
            return "memory"
        # The store keeps its container client private; its host and name carry no secret.
        container = store._container_client
        return f"blob container {container.container_name!r} at {container.primary_hostname}"

    async def _ensure_container(self, store: BlobCheckpointStore) -> None:
        """Create the checkpoint container if it is missing; fail fast if the account cannot be used."""
        container = store._container_client
        try:
            await asyncio.wait_for(container.create_container(), timeout=self.start_timeout_s)
        except ResourceExistsError:
            return
        except Exception as exc:
            detail = "no answer" if isinstance(exc, TimeoutError) else describe_error(exc)
            raise SourceUnavailable(
                f"cannot use the checkpoint store ({self._store_description()}): {detail}"
            ) from None
        log.info("eventhub_checkpoint_container_created", checkpoints=self._store_description())

    def _consumer(self, store: BlobCheckpointStore | None, **overrides: Any) -> EventHubConsumerClient:
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
            settings.namespace, settings.hub, settings.consumer_group, self._credential, **options
        )

    async def _probe_hub(self) -> None:
        """Ask for the hub's properties once, with short retries: bad credentials and typos fail here."""
        probe = self._consumer(None, retry_total=1)
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
        self._partitions = len(partitions)
        log.info("eventhub_hub_found", hub=self.settings.hub, partitions=partitions)

    async def _receive(self, client: EventHubConsumerClient) -> None:
        try:
            await client.receive_batch(
                self._on_batch,
                max_batch_size=self.max_messages,
                prefetch=max(300, self.max_messages),
                track_last_enqueued_event_properties=True,
                starting_position=self._start,
                starting_position_inclusive=False,
                on_error=self._on_error,
                on_partition_initialize=self._on_partition_initialize,
                on_partition_close=self._on_partition_close,
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the processor itself stopped: nothing reads any more
            self._set_error(exc)
            log.error("eventhub_receive_stopped", error=describe_error(exc))

    # -- the SDK's callbacks -------------------------------------------------------------
    async def _on_partition_initialize(self, context: PartitionContext) -> None:
        pid = context.partition_id
        self._next_generation += 1
        generation = self._next_generation
        self._owned[pid] = _Owned(context, generation)
        self._baseline.pop(pid, None)
        if self._store is not None:
            # The store is the truth (another replica may have moved it); without one, memory is.
            self._committed.pop(pid, None)
            checkpoints = await self._store.list_checkpoints(
                context.fully_qualified_namespace, context.eventhub_name, context.consumer_group
            )
            for checkpoint in checkpoints:
                if checkpoint.get("partition_id") == pid and checkpoint.get("sequence_number") is not None:
                    self._committed[pid] = int(checkpoint["sequence_number"])
        log.info(
            "eventhub_partition_owned",
            partition=pid,
            generation=generation,
            checkpoint=self._committed.get(pid),
        )

    async def _on_partition_close(self, context: PartitionContext, reason: CloseReason) -> None:
        pid = context.partition_id
        owned = self._owned.pop(pid, None)
        if owned is None:
            return
        self._handed_out.pop(pid, None)
        if self._store is not None:
            self._committed.pop(pid, None)
        self._baseline.pop(pid, None)
        self._last_enqueued.pop(pid, None)
        self._heard.pop(pid, None)
        if self.metrics is not None:
            with suppress(KeyError):
                self.metrics.consumer_lag.remove(self.settings.hub, pid)
        log.info("eventhub_partition_closed", partition=pid, generation=owned.generation, reason=reason.name)

    async def _on_error(self, context: PartitionContext | None, error: Exception) -> None:
        partition = context.partition_id if context is not None else None
        if "link:stolen" in str(error):
            # Another receiver with the same or a higher owner level took the partition: a handover, not a fault.
            log.info("eventhub_partition_taken_over", partition=partition, error=describe_error(error))
            return
        self._set_error(error)
        log.warning("eventhub_error", partition=partition, error=self._error)

    def _set_error(self, error: BaseException) -> None:
        self._error = describe_error(error)
        self._error_at = time.monotonic()

    async def _on_batch(self, context: PartitionContext, events: list[EventData]) -> None:
        if not events:
            return
        pid = context.partition_id
        owned = self._owned.get(pid)
        if owned is None:
            return
        properties = context.last_enqueued_event_properties
        if properties and properties.get("sequence_number") is not None:
            self._last_enqueued[pid] = int(properties["sequence_number"])
            self._heard[pid] = time.monotonic()
        first = events[0].sequence_number
        if pid not in self._baseline and first is not None:
            self._baseline[pid] = first - 1
        if self._error is not None:
            log.info("eventhub_events_flowing", partition=pid)
            self._error = None
        await self._flowing.wait()
        await self._queue.put(_Received(pid, owned.generation, events))

    # -- reading -------------------------------------------------------------------------
    def problem(self) -> str | None:
        return self._problem

    def pause(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    async def fetch(self, timeout_s: float) -> Batch | None:
        if not self._flowing.is_set():
            await asyncio.sleep(timeout_s)
            return None
        first = self._leftover
        self._leftover = None
        if first is None:
            try:
                first = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                try:
                    first = await asyncio.wait_for(self._queue.get(), timeout=timeout_s)
                except TimeoutError:
                    return None
        received = [first]
        total = len(first.events)
        while total < self.max_messages:
            try:
                following = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                break
            if total + len(following.events) > self.max_messages:
                self._leftover = following
                break
            received.append(following)
            total += len(following.events)
        current = [r for r in received if self._generation(r.partition) == r.generation]
        if not current:
            return None  # every one of them belongs to a partition lost since: its new owner re-reads them
        events = [(r.partition, event) for r in current for event in r.events]
        messages = [event_body(event) for _, event in events]
        for r in current:
            self._handed_out[r.partition] = (r.generation, r.events[-1])
        position: Position = dict(self._handed_out)

        def locate(index: int) -> dict[str, Any]:
            partition, event = events[index]
            return {
                "source": "eventhub",
                "partition": partition,
                "sequence_number": event.sequence_number,
                "offset": event.offset,
            }

        return Batch(messages, position, locate)

    def _generation(self, pid: str) -> int | None:
        owned = self._owned.get(pid)
        return owned.generation if owned is not None else None

    # -- committing ----------------------------------------------------------------------
    async def commit(self, position: Any) -> None:
        updates: list[tuple[str, _Owned, EventData, int]] = []
        for pid, (generation, event) in dict(position).items():
            owned = self._owned.get(pid)
            if owned is None or owned.generation != generation:
                continue  # lost since: the new owner re-reads from the last checkpoint, the store absorbs it
            sequence = event.sequence_number
            if sequence is None or sequence <= self._committed.get(pid, -1):
                continue
            updates.append((pid, owned, event, sequence))
        if not updates:
            return
        results = await asyncio.gather(
            *(owned.context.update_checkpoint(event) for _, owned, event, _ in updates), return_exceptions=True
        )
        failed: list[str] = []
        problem: BaseException | None = None
        for (pid, owned, _, sequence), result in zip(updates, results, strict=True):
            if isinstance(result, BaseException):
                failed.append(pid)
                problem = result
                continue
            if self._owned.get(pid) is owned:
                self._committed[pid] = max(sequence, self._committed.get(pid, -1))
                self._set_lag(pid)
        if problem is not None:
            raise SourceUnavailable(
                f"checkpoint update failed for partition(s) {', '.join(failed)} "
                f"({self._store_description()}): {describe_error(problem)}"
            )

    # -- lag and reachability ------------------------------------------------------------
    def _set_lag(self, pid: str) -> None:
        if self.metrics is None:
            return
        last = self._last_enqueued.get(pid)
        done = self._committed.get(pid, self._baseline.get(pid))
        if last is None or done is None:
            return
        self.metrics.consumer_lag.labels(topic=self.settings.hub, partition=pid).set(max(0, last - done))

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.sleep(self.probe_interval_s)
            client = self._client
            if client is None:
                return
            await self._probe_idle_partitions(client)
            for pid in list(self._owned):
                self._set_lag(pid)
            if self.exclusive:
                self._check_exclusive()

    def _check_exclusive(self) -> None:
        """With an unshared store (sqlite), owning part of the hub for longer than a handover takes (a restarted
        process waits for its predecessor's ownership to expire) means a second replica: fatal."""
        if len(self._owned) >= self._partitions:
            self._partial_since = None
            return
        now = time.monotonic()
        if self._partial_since is None:
            self._partial_since = now
        settings = self.settings
        grace = max(30.0, settings.ownership_expiry_s + 3 * settings.load_balancing_interval_s)
        if now - self._partial_since > grace:
            self._problem = (
                f"this process owns {len(self._owned)} of {self._partitions} partitions ({settings.where}): another "
                "replica shares the consumer group, and the sqlite store is single-process; run one replica, or "
                "use --store redis://... for several"
            )

    async def _probe_idle_partitions(self, client: EventHubConsumerClient) -> None:
        """Ask the service for the end of partitions no event came from lately (and so whether it answers)."""
        now = time.monotonic()
        idle = [pid for pid in self._owned if now - self._heard.get(pid, 0.0) >= self.probe_interval_s]
        for pid in idle:
            try:
                properties = await asyncio.wait_for(client.get_partition_properties(pid), timeout=15)
            except Exception as exc:
                self._set_error(exc)
                log.warning("eventhub_unreachable", partition=pid, error=self._error)
                return
            last = int(properties["last_enqueued_sequence_number"])
            self._last_enqueued[pid] = last
            self._heard[pid] = time.monotonic()
            if pid not in self._committed and pid not in self._baseline:
                if self._start == EARLIEST:
                    self._baseline[pid] = int(properties["beginning_sequence_number"]) - 1
                elif self._start == LATEST:
                    self._baseline[pid] = last
        if idle and self._error is not None and time.monotonic() - self._error_at > self._quiet_s:
            log.info("eventhub_errors_over", quiet_s=self._quiet_s)
            self._error = None

    @property
    def _quiet_s(self) -> float:
        """How long without an error before an idle source counts as healthy again."""
        return 2 * self.settings.load_balancing_interval_s + 10.0
