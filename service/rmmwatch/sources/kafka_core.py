"""The Kafka source's semantics, written once for both clients (aiokafka in ``sources/kafka.py``, librdkafka in
``sources/kafka_confluent.py``); the clients are adapters that only do I/O.

* Batches come from the client (at most ``max_messages``); a batch's position is, per partition handed out so
  far, the offset after its last record, tagged with the assignment generation (cumulative, so committing the
  newest batch covers every earlier one). The bookkeeping is the partition ledger's (``sources/partitions.py``).
* ``commit`` commits only partitions still assigned in the same generation, and never moves a partition's
  offset backwards; a commit that a rebalance makes stale is dropped (the new owner re-reads those records,
  which the idempotent store absorbs).
* On revoke, the rebalance waits (up to ``rebalance_wait_s``) for the batches already handed out to be
  committed, so a clean rebalance re-delivers nothing; past that it abandons them.
* A new group starts at ``earliest`` (rebuilding the 5-day state from the retained stream), ``latest``, or a
  time (the first offset at or after it; the end of a partition with no record that late); committed offsets
  always win.
* A background task measures lag (end offset minus committed offset, per partition) and broker reachability
  every few seconds: readiness is false while unassigned or while the brokers do not answer. With an unshared
  store (``exclusive``), owning part of the topics for longer than a session takes to expire means another
  replica shares the group: :meth:`KafkaCore.problem` says so and the loop stops.
* ``pause()`` stops fetching (backpressure) while keeping the group membership alive.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Required, TypedDict

from rmmwatch.kafka_settings import KafkaSettings, connect_failure, describe_error
from rmmwatch.kql.datetimes import DatetimeError, parse_datetime
from rmmwatch.logging import get_logger
from rmmwatch.metrics import Metrics
from rmmwatch.sources.base import Batch, SourceUnavailable, cancel
from rmmwatch.sources.partitions import Mark, PartitionLedger, SharingCheck

log = get_logger("rmmwatch.sources.kafka")

Key = tuple[str, int]  # (topic, partition)
Position = dict[Key, Mark]  # partition -> (next offset, generation)
Origin = tuple[str, int, int]  # (topic, partition, offset) of one record


class KafkaOptions(TypedDict, total=False):
    """The keyword options of both Kafka sources (see :class:`KafkaCore`)."""

    group_id: Required[str]
    start: str
    max_messages: int
    rebalance_wait_s: float
    metrics: Metrics | None
    probe_interval_s: float
    exclusive: bool


def names(keys: Collection[Key]) -> list[str]:
    """Partitions as ``topic-partition``, sorted, for logs."""
    return sorted(f"{topic}-{partition}" for topic, partition in keys)


def _labels(key: Key) -> tuple[str, str]:
    return key[0], str(key[1])


class KafkaCore:
    """A consumer-group member reading raw message values; subclasses bring the client.

    A subclass sets ``client`` and ``client_errors`` (what its client raises when it cannot connect) and
    implements the ``_connect`` ... ``_commit`` hooks; it calls the ``_assigned``, ``_settled``, ``_forget``,
    ``_commit_*`` and ``_reachable`` steps from its client's callbacks.
    """

    name = "kafka"
    client = ""
    client_errors: tuple[type[BaseException], ...] = ()

    def __init__(
        self,
        settings: KafkaSettings,
        topics: Sequence[str],
        *,
        group_id: str,
        start: str = "earliest",
        max_messages: int = 500,
        rebalance_wait_s: float = 20.0,
        metrics: Metrics | None = None,
        probe_interval_s: float = 5.0,
        exclusive: bool = False,
    ) -> None:
        """``exclusive``: this process must own every partition (its store is not shared)."""
        if not topics:
            raise ValueError("the kafka source needs --kafka-topics (or an EntityPath in the connection string)")
        self.settings = settings
        self.topics = list(topics)
        self.group_id = group_id
        self.start_at = start
        self._start_ms: int | None = None
        if start not in ("earliest", "latest"):
            try:
                self._start_ms = parse_datetime(start) // 10_000
            except DatetimeError:
                raise ValueError(f"--kafka-start: use earliest, latest or an ISO 8601 time, not {start!r}") from None
        self.max_messages = max_messages
        self.rebalance_wait_s = rebalance_wait_s
        self.metrics = metrics
        self.probe_interval_s = probe_interval_s
        self.exclusive = exclusive
        self.ledger: PartitionLedger[Key] = PartitionLedger(_labels, metrics)
        self.sharing = SharingCheck(
            # A restarted pod's old member lingers until its session expires.
            max(30.0, 3 * settings.session_timeout_ms / 1000),
            f"of {', '.join(self.topics)} in group {group_id!r}",
        )
        self._brokers_ok = False
        self._paused = False
        self._probe: asyncio.Task[None] | None = None

    # -- the client's part -----------------------------------------------------------------
    def _connected(self) -> bool:
        raise NotImplementedError

    async def _connect(self) -> None:
        """Create the client and join the group (cleaning up after itself if it fails)."""
        raise NotImplementedError

    async def _disconnect(self) -> None:
        """Leave the group and close the client (idempotent)."""
        raise NotImplementedError

    async def _commit(self, plan: Position) -> None:
        """Commit ``plan`` (already planned by the ledger) and report with ``_commit_*``."""
        raise NotImplementedError

    async def _end_offsets(self, owned: list[Key]) -> dict[Key, int] | None:
        """The end offset of each owned partition, or None when unknown this round (reported with ``_reachable``)."""
        raise NotImplementedError

    def _partition_count(self, topic: str) -> int:
        """How many partitions ``topic`` has, as last seen in the metadata (0 if unknown)."""
        raise NotImplementedError

    def _apply_pause(self) -> None:
        """Tell the client about ``_paused`` now (a client that applies it on its own thread does nothing)."""

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def exhausted(self) -> bool:
        return False

    def ready(self) -> tuple[bool, str]:
        if not self._connected():
            return False, "not started"
        owned = len(self.ledger.owned())
        if not owned:
            return False, f"no partitions assigned in group {self.group_id!r}"
        if not self._brokers_ok:
            return False, "brokers unreachable"
        return True, f"{owned} partition(s) assigned"

    def problem(self) -> str | None:
        return self.sharing.problem

    async def start(self) -> None:
        try:
            await self._connect()
        except self.client_errors as exc:
            # The clients say little ("Unable to bootstrap"): connect_failure dials the brokers itself with the
            # same settings and names the step that failed (client certificate, CA, host name, password).
            raise SourceUnavailable(await connect_failure(self.settings, describe_error(exc))) from None
        self._brokers_ok = True
        self._probe = asyncio.create_task(self._probe_loop(), name="rmmwatch-kafka-probe")
        log.info(
            "kafka_started", topics=self.topics, group=self.group_id, bootstrap=self.settings.bootstrap_servers,
            client=self.client,
        )  # fmt: skip

    async def close(self) -> None:
        probe, self._probe = self._probe, None
        await cancel(probe)
        await self._disconnect()

    def pause(self) -> None:
        self._paused = True
        self._apply_pause()

    def resume(self) -> None:
        self._paused = False
        self._apply_pause()

    # -- the steps the clients share -------------------------------------------------------
    def _batch(self, messages: list[bytes], last: Mapping[Key, int], origin: Callable[[int], Origin]) -> Batch:
        """A batch of ``messages`` whose partitions end at ``last`` (next offsets); ``origin(i)`` is message i's
        (topic, partition, offset)."""
        position = self.ledger.hand_out(last)

        def locate(index: int) -> dict[str, Any]:
            topic, partition, offset = origin(index)
            return {"source": "kafka", "topic": topic, "partition": partition, "offset": offset}

        return Batch(messages, position, locate)

    async def commit(self, position: Any) -> None:
        if not self._connected():
            return
        plan = self.ledger.commit_plan(position)
        if plan:
            await self._commit(plan)

    def _commit_done(self, done: Position) -> None:
        self.ledger.committed(done)
        self._brokers_ok = True

    def _commit_superseded(self, error: BaseException) -> None:
        log.info("kafka_commit_superseded_by_rebalance", error=describe_error(error))

    def _commit_failed(self, error: BaseException) -> SourceUnavailable:
        self._brokers_ok = False
        return SourceUnavailable(f"kafka commit failed: {describe_error(error)}")

    def _assigned(self, keys: Collection[Key], committed: Mapping[Key, int]) -> None:
        """``keys`` (whose generation began with ``ledger.assign``) resume at their ``committed`` offsets."""
        self.ledger.restore(keys, committed)
        log.info("kafka_partitions_assigned", partitions=names(keys))

    def _settled(self, revoked: Collection[Key], deadline: float) -> bool:
        """Whether a revoke may go on: every batch of ``revoked`` committed, or ``deadline`` (monotonic) passed."""
        if not self.ledger.pending(revoked):
            return True
        if time.monotonic() < deadline:
            return False
        log.warning("kafka_revoked_with_uncommitted_batches", partitions=names(revoked))
        return True

    def _forget(self, keys: Collection[Key], *, lost: bool = False) -> None:
        self.ledger.forget(keys)
        if lost:
            log.warning("kafka_partitions_lost", partitions=names(keys))
        else:
            log.info("kafka_partitions_revoked", partitions=names(keys))

    def _reachable(self, error: BaseException | None) -> None:
        """The brokers answered (``error`` None) or not; logs the changes."""
        if error is not None:
            if self._brokers_ok:
                log.warning("kafka_brokers_unreachable", error=describe_error(error))
            self._brokers_ok = False
            return
        if not self._brokers_ok:
            log.info("kafka_brokers_reachable")
        self._brokers_ok = True

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.sleep(self.probe_interval_s)
            if not self._connected():
                return
            owned = self.ledger.owned()
            if not owned:
                continue
            try:
                ends = await self._end_offsets(owned)
            except (RuntimeError, SourceUnavailable):  # closed meanwhile
                return
            if ends is None:
                continue
            if self.exclusive:
                total = sum(self._partition_count(topic) for topic in self.topics)
                self.sharing.observe(len(owned), total, time.monotonic())
            for key, end in ends.items():
                self.ledger.report_lag(key, end)
