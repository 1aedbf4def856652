"""The partition ledger: what a partitioned source owns, has handed out and has committed, apart from any I/O.

Both Kafka clients and Event Hubs keep this same bookkeeping (the way aiokafka keeps its ``SubscriptionState``
apart from the fetcher and the coordinator); the sources only move bytes and call their client. The reasons
are in docs/architecture.md (the commit order) and the sources' module docstrings; in short:

* **Generations.** Ownership of a partition comes in generations: :meth:`PartitionLedger.assign` starts one
  for the partitions it is given, :meth:`PartitionLedger.forget` ends it (revoke, loss, close). A position
  handed out under a generation that has ended is never committed: the partition's new owner started from the
  last commit and re-reads those messages, and the idempotent store absorbs the duplicates.
* **Marks.** A mark is where a partition stands, in the transport's unit: Kafka's next offset to read,
  Event Hubs' last sequence number read. Commits compare marks, so a commit never moves backwards. A mark can
  carry a ``token``, what the transport needs to commit it (Event Hubs checkpoints an event, not a number).
* **Cumulative positions.** :meth:`PartitionLedger.hand_out` returns, per partition handed out so far in its
  generation, the newest mark: the loop commits only the newest position when several wait (an alert waiting
  for delivery holds commits back), so it must cover the partitions of the batches before it too.
* **Commit plan.** :meth:`PartitionLedger.commit_plan` keeps of a position the partitions still owned in the
  same generation whose mark moves forward; :meth:`PartitionLedger.committed` records what the transport
  confirmed (only for the generation it was planned in).
* **Revoke wait.** :meth:`PartitionLedger.pending` names the partitions with batches handed out but not yet
  committed: a Kafka rebalance waits for them, so a clean rebalance re-delivers nothing.
* **Lag.** The ``rmmwatch_consumer_lag`` gauge per partition: the end of the partition minus the committed
  mark (or a floor the source knows before its first commit); a forgotten partition's series is removed.

:class:`SharingCheck` is the "another replica shares the group" rule: with an unshared store (sqlite), owning
only part of the partitions for longer than a handover takes means a second replica, each alerting on part of
every device's events.

The ledger takes a lock around every method: the librdkafka source calls it from its consumer's thread (fetch,
commit, rebalance callbacks) and from the event loop (commit plan, readiness) at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Hashable, Iterable, Mapping
from contextlib import suppress
from typing import Any, Generic, NamedTuple, TypeVar

from rmmwatch.metrics import Metrics

K = TypeVar("K", bound=Hashable)


class Mark(NamedTuple):
    """Where a partition stands in a position: its mark, the generation it was owned in when the position was
    made, and the mark's token."""

    value: int
    generation: int
    token: Any = None


NO_GENERATION = -1  # in a position made while the partition was not owned (revoked, not yet assigned): never committed


class PartitionLedger(Generic[K]):
    """Owned partitions, their generations, the marks handed out and committed, and the lag gauge.

    ``labels`` names a partition for the lag gauge as (topic, partition); without ``metrics`` no gauge is set.
    """

    def __init__(self, labels: Callable[[K], tuple[str, str]], metrics: Metrics | None = None) -> None:
        self._labels = labels
        self._metrics = metrics
        self._lock = threading.Lock()
        self._generation: dict[K, int] = {}
        self._last_generation = 0
        self._handed_out: dict[K, tuple[int, Any]] = {}  # partition -> (newest mark, its token)
        self._committed: dict[K, int] = {}

    # -- ownership -------------------------------------------------------------------------
    def assign(self, keys: Iterable[K]) -> int:
        """Start a new generation for ``keys``; returns it."""
        with self._lock:
            self._last_generation += 1
            for key in keys:
                self._generation[key] = self._last_generation
            return self._last_generation

    def restore(self, keys: Iterable[K], committed: Mapping[K, int]) -> None:
        """The transport's committed marks of ``keys`` are the truth (another owner may have moved them):
        those in ``committed`` replace what the ledger held, the others are no longer known."""
        with self._lock:
            for key in keys:
                self._committed.pop(key, None)
                if key in committed:
                    self._committed[key] = committed[key]

    def forget(self, keys: Iterable[K], *, keep_committed: bool = False) -> None:
        """End the generation of ``keys``: their handed-out marks, and (unless ``keep_committed``, for a source
        whose commits live only in this process) their committed marks and lag series go."""
        keys = list(keys)
        with self._lock:
            for key in keys:
                self._generation.pop(key, None)
                self._handed_out.pop(key, None)
                if not keep_committed:
                    self._committed.pop(key, None)
        if self._metrics is not None:
            for key in keys:
                with suppress(KeyError):  # never set: no lag measured while it was owned
                    self._metrics.consumer_lag.remove(*self._labels(key))

    def owned(self) -> list[K]:
        """The partitions owned now."""
        with self._lock:
            return list(self._generation)

    def generation(self, key: K) -> int | None:
        """The generation ``key`` is owned in, or None."""
        with self._lock:
            return self._generation.get(key)

    # -- handing out and committing ----------------------------------------------------------
    def hand_out(self, marks: Mapping[K, int | tuple[int, Any]]) -> dict[K, Mark]:
        """Record the newest mark of each partition of a batch (a value, or a value and its token); the
        batch's position: every partition handed out so far, each with its mark and its generation now."""
        with self._lock:
            for key, found in marks.items():
                value, token = found if isinstance(found, tuple) else (found, None)
                held = self._handed_out.get(key)
                if held is None or value > held[0]:
                    self._handed_out[key] = (value, token)
            generation = self._generation
            return {
                key: Mark(value, generation.get(key, NO_GENERATION), token)
                for key, (value, token) in self._handed_out.items()
            }

    def commit_plan(self, position: Mapping[K, Mark]) -> dict[K, Mark]:
        """Of ``position``, the partitions still owned in the same generation whose mark moves forward."""
        with self._lock:
            return {
                key: mark
                for key, mark in position.items()
                if self._generation.get(key) == mark.generation and mark.value > self._committed.get(key, -1)
            }

    def committed(self, done: Mapping[K, Mark]) -> None:
        """Record marks the transport confirmed; one planned under a generation that has ended since is not."""
        with self._lock:
            for key, mark in done.items():
                if self._generation.get(key) == mark.generation:
                    self._committed[key] = max(mark.value, self._committed.get(key, -1))

    def committed_mark(self, key: K) -> int | None:
        """The committed mark of ``key``, if known."""
        with self._lock:
            return self._committed.get(key)

    def pending(self, keys: Collection[K]) -> list[K]:
        """Of ``keys``, those with a batch handed out whose commit has not come yet (the revoke wait's test)."""
        with self._lock:
            return [
                key
                for key in keys
                if (held := self._handed_out.get(key)) is not None and held[0] > self._committed.get(key, 0)
            ]

    # -- lag ---------------------------------------------------------------------------------
    def lag(self, key: K, end: int, floor: int | None = 0) -> int | None:
        """``end`` minus the committed mark (``floor`` before the first commit); None when neither is known."""
        with self._lock:
            done = self._committed.get(key, floor)
        return None if done is None else max(0, end - done)

    def report_lag(self, key: K, end: int, floor: int | None = 0) -> None:
        """Set the lag gauge of ``key`` (see :meth:`lag`) if it is owned (a partition revoked while its end was
        asked for keeps no series) and measurable, and metrics are kept."""
        lag = self.lag(key, end, floor)
        if lag is not None and self._metrics is not None and self.generation(key) is not None:
            topic, partition = self._labels(key)
            self._metrics.consumer_lag.labels(topic=topic, partition=partition).set(lag)


class SharingCheck:
    """Whether another replica shares the group of a process that must own every partition (an unshared store).

    Owning part of the partitions is tolerated for ``grace_s`` (a restarted process's predecessor keeps its
    partitions until its session or ownership expires), then it is a problem, and stays one. ``scope`` and
    ``group`` word the message: "this process owns 1 of 2 partitions {scope}: another replica shares the
    {group}, ...".
    """

    def __init__(self, grace_s: float, scope: str, group: str = "group") -> None:
        self.grace_s = grace_s
        self.scope = scope
        self.group = group
        self.problem: str | None = None
        self._partial_since: float | None = None

    def observe(self, owned: int, total: int, now: float) -> str | None:
        """Note that ``owned`` of ``total`` partitions are owned at ``now`` (monotonic); the problem, if any."""
        if owned >= total:
            self._partial_since = None
            return self.problem
        if self._partial_since is None:
            self._partial_since = now
        if now - self._partial_since > self.grace_s:
            self.problem = (
                f"this process owns {owned} of {total} partitions {self.scope}: another replica shares the "
                f"{self.group}, and the sqlite store is single-process; run one replica, or use --store "
                "redis://... for several"
            )
        return self.problem
