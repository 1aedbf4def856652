"""The store seam: the rolling per-group state, its episodes and the alert outbox.

Every implementation passes one contract suite (tests/contract/test_store_contract.py).
The contract, in terms of the parity contract (docs/architecture.md §3): after any sequence of ``apply`` and
``tick`` calls with non-decreasing ``now``, ``summaries(rule, now)`` equals the KQL query's
output at ``now`` over the distinct events applied so far; ``apply`` is atomic and
idempotent (re-applying an event changes nothing and raises no alert), and every alert
it creates is in the outbox, durable, when it returns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from rmmwatch.alerts import Alert
from rmmwatch.model import Match
from rmmwatch.rules import Rule


class StoreUnavailable(Exception):
    """The store cannot be reached or written now; the caller retries, commits nothing."""


class StoreRefused(Exception):
    """The store cannot be used as it is, and retrying would not change that: it refuses our
    credentials or TLS, its file is corrupt, or another process owns it. The detector stops
    at once with this message (exit 1), which says what is wrong and what to do; secrets are
    never in it. (A store that was reachable and then drops raises StoreUnavailable: retried.)"""


class StoreLocked(StoreRefused):
    """Another process owns this store (the sqlite store is single-process)."""


@dataclass(slots=True)
class ApplyResult:
    """What one ``apply`` or ``tick`` did."""

    inserted: int = 0
    duplicates: int = 0
    out_of_window: int = 0
    future: int = 0
    activated: int = 0
    expired: int = 0
    alerts: list[Alert] = field(default_factory=list)
    #: (rule id, kind) -> alerts created, always counted (also when ``alerts`` is not kept)
    alert_counts: dict[tuple[str, str], int] = field(default_factory=dict)
    #: False: created alerts are only counted (they are in the outbox); bounds what a large call holds
    keep_alerts: bool = True
    # rule id -> count, for the per-rule metrics
    inserted_by_rule: dict[str, int] = field(default_factory=dict)
    duplicates_by_rule: dict[str, int] = field(default_factory=dict)
    out_of_window_by_rule: dict[str, int] = field(default_factory=dict)
    future_by_rule: dict[str, int] = field(default_factory=dict)

    def record(self, alert: Alert) -> None:
        """Count a created alert, and keep it when this result keeps alerts."""
        key = (alert.rule_id, alert.kind)
        self.alert_counts[key] = self.alert_counts.get(key, 0) + 1
        if self.keep_alerts:
            self.alerts.append(alert)

    @property
    def created(self) -> int:
        """How many alerts the call created."""
        return sum(self.alert_counts.values())

    def merge(self, other: ApplyResult) -> None:
        """Add what ``other`` did to this result (several engine calls inside one store call)."""
        self.inserted += other.inserted
        self.duplicates += other.duplicates
        self.out_of_window += other.out_of_window
        self.future += other.future
        self.activated += other.activated
        self.expired += other.expired
        if self.keep_alerts:
            self.alerts.extend(other.alerts)
        for kind, count in other.alert_counts.items():
            self.alert_counts[kind] = self.alert_counts.get(kind, 0) + count
        for mine, theirs in (
            (self.inserted_by_rule, other.inserted_by_rule),
            (self.duplicates_by_rule, other.duplicates_by_rule),
            (self.out_of_window_by_rule, other.out_of_window_by_rule),
            (self.future_by_rule, other.future_by_rule),
        ):
            for key, count in theirs.items():
                mine[key] = mine.get(key, 0) + count


@dataclass(frozen=True, slots=True)
class StateStats:
    """Size of the state of one rule."""

    groups: int
    events: int


class Store(Protocol):
    """The rolling window state, shared by every source and sink."""

    name: str

    async def open(self) -> None:
        """Connect / create schema / take ownership. Raises StoreUnavailable (retried) or StoreRefused (fatal)."""

    async def close(self) -> None:
        """Release everything (idempotent)."""

    async def apply(self, matches: Sequence[Match], now: int) -> ApplyResult:
        """Advance the groups of ``matches`` to ``now``, add the matches, write the resulting alerts to
        the outbox, atomically per group. (A store may advance other groups too; ``tick`` does.)"""

    async def apply_many(self, parts: Sequence[Sequence[Match]], now: int) -> ApplyResult:
        """``apply`` of each part in turn at ``now`` (the same alerts and state as separate calls),
        in as few writes as the store can: the sqlite store makes it one transaction (group commit).

        The result counts the alerts created (``alert_counts``) but does not hold them
        (``alerts`` is empty, ``keep_alerts`` False): they are in the outbox, and a batch of
        thousands of matches would otherwise keep thousands of payloads alive."""

    async def tick(self, now: int) -> ApplyResult:
        """Advance to ``now``: expire, activate future-dated events, end episodes, flush throttled updates."""

    async def pending_alerts(self, limit: int) -> list[Alert]:
        """Outbox alerts not yet marked sent, oldest first."""

    async def pending_count(self, limit: int) -> int:
        """How many outbox alerts are not yet marked sent, counted up to ``limit`` (backpressure needs no more)."""

    async def mark_sent(self, keys: Sequence[tuple[str, int]]) -> None:
        """Mark outbox alerts delivered (idempotent): ``pending_alerts`` no longer returns them.

        The mark need not be durable when this returns (the sqlite store writes it with its next
        transaction): a crash before it is written only re-sends those alerts, byte for byte with
        the same ``(alert_id, revision)``, which is the sinks' at-least-once contract anyway."""

    async def summaries(self, rule: Rule, now: int) -> list[dict[str, Any]]:
        """The rule's output rows at ``now``, rendered and sorted like ``hunt``'s."""

    async def stats(self) -> dict[str, StateStats]:
        """Groups and events held, per rule id."""

    async def ping(self) -> bool:
        """Whether the store answers now (readiness)."""


async def apply_each(store: Store, parts: Sequence[Sequence[Match]], now: int) -> ApplyResult:
    """``apply_many`` as one ``apply`` per part: for a store whose ``apply`` is already as few writes as
    it can make (the memory store writes nothing durable; the Redis store's is one round trip)."""
    result = ApplyResult(keep_alerts=False)
    for part in parts:
        result.merge(await store.apply(part, now))
    return result
