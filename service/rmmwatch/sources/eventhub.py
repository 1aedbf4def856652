"""Azure Event Hubs over AMQP as a source: the SDK's event processor, blob checkpoints, the loop's commit order.

Settings, the checkpoint store, the SDK's clients and the start-up checks are ``sources/eventhub_client.py``'s;
the bookkeeping of ownership generations, positions, commits and lag is the partition ledger's
(``sources/partitions.py``, shared with the Kafka sources). What this module owns, and why it is shaped this way:

* **Batches**: ``EventHubConsumerClient.receive_batch`` calls back once per partition with at most
  ``max_messages`` events. The callback puts them on a bounded asyncio queue and :meth:`fetch` hands queued
  partition batches to the loop, combined up to ``max_messages``. A full queue, or :meth:`pause`, blocks the
  callbacks, and a blocked callback stops the SDK's receive loop for that partition (it stops granting link
  credit once its prefetch buffer is full): backpressure reaches the service.
* **Positions and checkpoints**: a batch's position is, per owned partition, the last event handed out so far
  (in this batch or an earlier one; the ledger's mark is its sequence number, its token the event) and the
  ownership generation it was received under. Positions are cumulative because the loop commits batches in
  order and only the newest position when several wait (an alert waiting for delivery holds commits back):
  committing it must cover the partitions of the batches before it too. :meth:`commit` runs only when the loop
  asks (state durable, alerts delivered) and calls ``PartitionContext.update_checkpoint`` for partitions still
  owned in the same generation, and only forward: a checkpoint never moves backwards.
* **Ownership**: ``on_partition_initialize`` starts a generation, ``on_partition_close`` ends it. The SDK closes
  a partition when its load balancer gives it to another replica, when another receiver takes the link over
  (owner level), after receive errors it could not retry, and at shutdown. A batch handed out under an ended
  generation is never checkpointed (its partition now belongs to someone who started from the last checkpoint
  and re-reads it; the idempotent store absorbs the duplicates), and queued batches of ended generations are
  dropped. Unlike the Kafka source there is no revoke wait: when the SDK reports the loss, the new owner has
  already read the checkpoint. Without a checkpoint store, checkpoints live in this process only (they
  survive a partition's close and reopen), and the source says so at start: a restart re-reads from the start
  position.
* **One process, every partition**: with an unshared store (sqlite), owning only some partitions for longer
  than an ownership handover takes means another replica shares the consumer group, and each would alert on
  part of every device's events: :meth:`problem` then reports it and the loop stops (as the Kafka source does).
* **Readiness and lag**: not ready until a partition is owned, nor while the SDK reports errors (``on_error``):
  ready again once events flow, or once a probe of an idle partition gets an answer and no error came for
  two load-balancing intervals plus 10 s (longer than the SDK takes to retry a failing link and report it
  again, so a persistent fault, like a consumer group that does not exist, keeps the source unready).
  Lag per partition is the last enqueued sequence number (delivered with every event:
  ``track_last_enqueued_event_properties``; asked with ``get_partition_properties`` for idle partitions) minus
  the last checkpointed one (before the first checkpoint: minus the one before the first to read).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, cast

from azure.eventhub import CloseReason, EventData
from azure.eventhub.aio import EventHubConsumerClient, PartitionContext
from azure.eventhub.amqp import AmqpMessageBodyType

from rmmwatch.kafka_settings import describe_error
from rmmwatch.metrics import Metrics
from rmmwatch.sources.base import Batch, SourceUnavailable, cancel
from rmmwatch.sources.eventhub_client import (
    EARLIEST,
    LATEST,
    EventHubSettings,
    HubConnection,
    log,
    start_position,
)
from rmmwatch.sources.partitions import Mark, PartitionLedger, SharingCheck

__all__ = ["EventHubSettings", "EventHubSource", "event_body", "start_position"]

Position = dict[str, Mark]  # partition -> (last sequence number, ownership generation, last event)


def event_body(event: EventData) -> bytes:
    """An event's raw bytes: its data sections joined (``body_as_str`` would decode, and mangle, the bytes)."""
    if event.body_type == AmqpMessageBodyType.DATA:
        return b"".join(cast("Iterable[bytes]", event.body))
    value = event.body  # a value or sequence body from some other producer: kept as text, decoding judges it
    return value if isinstance(value, bytes) else str(value).encode()


@dataclass(slots=True)
class _Received:
    partition: str
    generation: int
    events: list[EventData]


class _Inbox:
    """The partition batches the SDK's callbacks received, on their way to :meth:`EventHubSource.fetch`.

    Bounded: a full inbox, or a paused one (``flowing`` clear), blocks the callback that puts, and so the SDK's
    receive loop of that partition.
    """

    def __init__(self, batches: int) -> None:
        self._queue: asyncio.Queue[_Received] = asyncio.Queue(maxsize=batches)
        self._leftover: _Received | None = None
        self.flowing = asyncio.Event()
        self.flowing.set()

    async def put(self, received: _Received) -> None:
        await self.flowing.wait()
        await self._queue.put(received)

    async def take(self, timeout_s: float, max_messages: int) -> list[_Received]:
        """Queued partition batches, whole, up to ``max_messages`` events (at least one batch), waiting up to
        ``timeout_s`` for the first; none while paused."""
        if not self.flowing.is_set():
            await asyncio.sleep(timeout_s)
            return []
        first = self._leftover
        self._leftover = None
        if first is None:
            try:
                first = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                try:
                    first = await asyncio.wait_for(self._queue.get(), timeout=timeout_s)
                except TimeoutError:
                    return []
        received = [first]
        total = len(first.events)
        while total < max_messages:
            try:
                following = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                break
            if total + len(following.events) > max_messages:
                self._leftover = following
                break
            received.append(following)
            total += len(following.events)
        return received


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
        self.probe_interval_s = probe_interval_s
        self._start = start_position(settings.start)
        self._inbox = _Inbox(queue_batches)
        self._hub = HubConnection(settings, start_timeout_s)  # a configuration error raises here, before start
        self._client: EventHubConsumerClient | None = None
        self._receiving: asyncio.Task[None] | None = None
        self._probe: asyncio.Task[None] | None = None
        self.ledger: PartitionLedger[str] = PartitionLedger(lambda pid: (settings.hub, pid), metrics)
        self._contexts: dict[str, PartitionContext] = {}
        self._baseline: dict[str, int] = {}  # partition -> sequence number before the first one to read
        self._last_enqueued: dict[str, int] = {}
        self._heard: dict[str, float] = {}  # partition -> when the service last told us its end
        self._error: str | None = None
        self._error_at = 0.0
        self.exclusive = exclusive
        self._partitions = 0
        self.sharing = SharingCheck(
            max(30.0, settings.ownership_expiry_s + 3 * settings.load_balancing_interval_s),
            f"({settings.where})",
            "consumer group",
        )

    # -- lifecycle -----------------------------------------------------------------------
    @property
    def exhausted(self) -> bool:
        return False

    def ready(self) -> tuple[bool, str]:
        if self._client is None:
            return False, "not started"
        owned = len(self.ledger.owned())
        if not owned:
            return False, f"no partitions owned ({self.settings.where})"
        if self._error is not None:
            return False, f"Event Hubs error: {self._error}"
        return True, f"{owned} partition(s) owned"

    async def start(self) -> None:
        settings, hub = self.settings, self._hub
        try:
            await hub.ensure_container()
            self._partitions = await hub.probe_hub()
        except BaseException:
            await self.close()
            raise
        self._client = hub.consumer(hub.store)
        self._receiving = asyncio.create_task(self._receive(self._client), name="rmmwatch-eventhub-receive")
        self._probe = asyncio.create_task(self._probe_loop(), name="rmmwatch-eventhub-probe")
        if hub.store is None:
            log.warning(
                "eventhub_without_checkpoint_store",
                note="no load balancing, every partition, checkpoints in memory only: "
                "a restart re-reads from the start position",
                start=settings.start,
            )
        log.info(
            "eventhub_started", namespace=settings.namespace, hub=settings.hub,
            consumer_group=settings.consumer_group, start=settings.start, checkpoints=hub.description(),
            load_balancing=settings.load_balancing,
        )  # fmt: skip

    async def close(self) -> None:
        probe, self._probe = self._probe, None
        await cancel(probe)
        client, self._client = self._client, None
        if client is not None:
            with suppress(Exception):
                await client.close()  # stops the processor: every partition closes (on_partition_close)
        receiving, self._receiving = self._receiving, None
        await cancel(receiving)  # it has ended by now, unless closing the client failed
        await self._hub.close()
        self.ledger.forget(self.ledger.owned())
        self._contexts.clear()

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
        generation = self.ledger.assign([pid])
        self._contexts[pid] = context
        self._baseline.pop(pid, None)
        if self._hub.store is not None:  # the store is the truth (another replica may have moved it)
            checkpoint = await self._hub.checkpoint(context)
            self.ledger.restore([pid], {} if checkpoint is None else {pid: checkpoint})
        log.info(
            "eventhub_partition_owned", partition=pid, generation=generation, checkpoint=self.ledger.committed_mark(pid)
        )

    async def _on_partition_close(self, context: PartitionContext, reason: CloseReason) -> None:
        pid = context.partition_id
        generation = self.ledger.generation(pid)
        if generation is None:
            return
        self.ledger.forget([pid], keep_committed=self._hub.store is None)  # without a store, memory is the truth
        self._contexts.pop(pid, None)
        self._baseline.pop(pid, None)
        self._last_enqueued.pop(pid, None)
        self._heard.pop(pid, None)
        log.info("eventhub_partition_closed", partition=pid, generation=generation, reason=reason.name)

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
        generation = self.ledger.generation(pid)
        if generation is None:
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
        await self._inbox.put(_Received(pid, generation, events))

    # -- reading -------------------------------------------------------------------------
    def problem(self) -> str | None:
        return self.sharing.problem

    def pause(self) -> None:
        self._inbox.flowing.clear()

    def resume(self) -> None:
        self._inbox.flowing.set()

    async def fetch(self, timeout_s: float) -> Batch | None:
        received = await self._inbox.take(timeout_s, self.max_messages)
        current = [r for r in received if self.ledger.generation(r.partition) == r.generation]
        if not current:
            return None  # every one of them belongs to a partition lost since: its new owner re-reads them
        events = [(r.partition, event) for r in current for event in r.events]
        messages = [event_body(event) for _, event in events]
        last = {r.partition: r.events[-1] for r in current}
        position = self.ledger.hand_out(
            {pid: (event.sequence_number, event) for pid, event in last.items() if event.sequence_number is not None}
        )

        def locate(index: int) -> dict[str, Any]:
            partition, event = events[index]
            return {
                "source": "eventhub",
                "partition": partition,
                "sequence_number": event.sequence_number,
                "offset": event.offset,
            }

        return Batch(messages, position, locate)

    # -- committing ----------------------------------------------------------------------
    async def commit(self, position: Any) -> None:
        plan: Position = self.ledger.commit_plan(position)
        updates = [(pid, mark, context) for pid, mark in plan.items() if (context := self._contexts.get(pid))]
        if not updates:
            return
        results = await asyncio.gather(
            *(context.update_checkpoint(mark.token) for _, mark, context in updates), return_exceptions=True
        )
        failed: list[str] = []
        problem: BaseException | None = None
        for (pid, mark, _), result in zip(updates, results, strict=True):
            if isinstance(result, BaseException):
                failed.append(pid)
                problem = result
                continue
            self.ledger.committed({pid: mark})  # not if the partition was lost meanwhile
            self._set_lag(pid)
        if problem is not None:
            raise SourceUnavailable(
                f"checkpoint update failed for partition(s) {', '.join(failed)} "
                f"({self._hub.description()}): {describe_error(problem)}"
            )

    # -- lag and reachability ------------------------------------------------------------
    def _set_lag(self, pid: str) -> None:
        last = self._last_enqueued.get(pid)
        if last is not None:
            self.ledger.report_lag(pid, last, floor=self._baseline.get(pid))

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.sleep(self.probe_interval_s)
            client = self._client
            if client is None:
                return
            await self._probe_idle_partitions(client)
            owned = self.ledger.owned()
            for pid in owned:
                self._set_lag(pid)
            if self.exclusive:
                self.sharing.observe(len(owned), self._partitions, time.monotonic())

    async def _probe_idle_partitions(self, client: EventHubConsumerClient) -> None:
        """Ask the service for the end of partitions no event came from lately (and so whether it answers)."""
        now = time.monotonic()
        idle = [pid for pid in self.ledger.owned() if now - self._heard.get(pid, 0.0) >= self.probe_interval_s]
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
            if self.ledger.committed_mark(pid) is None and pid not in self._baseline:
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
