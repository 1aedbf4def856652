"""The partition ledger and the sharing check, without services: each case is a few steps and what follows.

Steps are ``(operation, argument)``: ``assign`` keys (a new generation), ``restore`` committed marks (the
transport's truth), ``hand_out`` marks of a batch (its position is kept, numbered from 0), ``commit`` position
number n (plan it, then record the plan as confirmed), ``forget`` keys (revoke, loss, close).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from rmmwatch.metrics import Metrics
from rmmwatch.sources.partitions import Mark, PartitionLedger, SharingCheck

A, B = ("t", 0), ("t", 1)
Key = tuple[str, int]
Step = tuple[str, Any]


def play(steps: Sequence[Step], metrics: Metrics | None = None) -> tuple[PartitionLedger[Key], list[dict[Key, Mark]]]:
    ledger: PartitionLedger[Key] = PartitionLedger(lambda key: (key[0], str(key[1])), metrics)
    positions: list[dict[Key, Mark]] = []
    for operation, argument in steps:
        if operation == "assign":
            ledger.assign(argument)
        elif operation == "restore":
            ledger.restore(list(argument), argument)
        elif operation == "hand_out":
            positions.append(ledger.hand_out(argument))
        elif operation == "commit":
            ledger.committed(ledger.commit_plan(positions[argument]))
        elif operation == "forget":
            ledger.forget(argument)
        else:
            raise AssertionError(f"unknown step {operation}")
    return ledger, positions


def values(marks: dict[Key, Mark]) -> dict[Key, int]:
    return {key: mark.value for key, mark in marks.items()}


# (what it shows, steps, the position to plan (index), the planned marks)
PLANS: list[tuple[str, list[Step], int, dict[Key, int]]] = [
    ("owned partitions are planned", [("assign", [A, B]), ("hand_out", {A: 5, B: 3})], 0, {A: 5, B: 3}),
    (
        "cumulative: the newest position covers an earlier batch's partition",
        [("assign", [A, B]), ("hand_out", {A: 5}), ("hand_out", {B: 3})],
        1,
        {A: 5, B: 3},
    ),
    (
        "never backwards: an older position after a newer one plans nothing",
        [("assign", [A]), ("hand_out", {A: 5}), ("hand_out", {A: 9}), ("commit", 1)],
        0,
        {},
    ),
    ("the committed mark again plans nothing", [("assign", [A]), ("hand_out", {A: 5}), ("commit", 0)], 0, {}),
    (
        "only the partitions that move forward",
        [("assign", [A, B]), ("hand_out", {A: 5, B: 2}), ("commit", 0), ("hand_out", {B: 4})],
        1,
        {B: 4},
    ),
    (
        "an older mark handed out late does not lower the position",
        [("assign", [A]), ("hand_out", {A: 9}), ("hand_out", {A: 5})],
        1,
        {A: 9},
    ),
    ("a revoked partition is dropped", [("assign", [A, B]), ("hand_out", {A: 5, B: 3}), ("forget", [B])], 0, {A: 5}),
    (
        "stale generation: revoked and assigned again, the old position is dropped",
        [("assign", [A]), ("hand_out", {A: 5}), ("forget", [A]), ("assign", [A])],
        0,
        {},
    ),
    (
        "a new generation's own batch is planned",
        [("assign", [A]), ("hand_out", {A: 5}), ("forget", [A]), ("assign", [A]), ("hand_out", {A: 7})],
        1,
        {A: 7},
    ),
    ("handed out while not owned: never planned", [("hand_out", {A: 5})], 0, {}),
    (
        "a restored committed mark bounds the plan (another owner moved it)",
        [("assign", [A]), ("restore", {A: 40}), ("hand_out", {A: 40})],
        0,
        {},
    ),
]


@pytest.mark.parametrize(("steps", "planned", "expected"), [p[1:] for p in PLANS], ids=[p[0] for p in PLANS])
def test_commit_plans(steps: list[Step], planned: int, expected: dict[Key, int]) -> None:
    """A position is planned for commit only where the partition is still owned in the same generation and its
    mark moves forward."""
    ledger, positions = play(steps)
    assert values(ledger.commit_plan(positions[planned])) == expected


def test_a_position_carries_each_partitions_generation_and_the_newest_token() -> None:
    """Event Hubs commits an event, not a number: the newest mark's token rides in the position."""
    ledger, positions = play([("assign", [A]), ("assign", [B]), ("hand_out", {A: (5, "e5"), B: (1, "e1")})])
    positions.append(ledger.hand_out({A: (4, "e4")}))
    assert positions[-1] == {A: Mark(5, 1, "e5"), B: Mark(1, 2, "e1")}


def test_a_confirmation_for_an_ended_generation_is_not_recorded() -> None:
    """A commit planned before a revoke and confirmed after it (the wait gave up) leaves the new generation
    without a committed mark: its owner starts from what the transport holds."""
    ledger, positions = play([("assign", [A]), ("hand_out", {A: 5})])
    plan = ledger.commit_plan(positions[0])
    ledger.forget([A])
    ledger.assign([A])
    ledger.committed(plan)
    assert ledger.committed_mark(A) is None


def test_confirmations_never_lower_the_committed_mark() -> None:
    """Two commits confirmed out of order: the committed mark stays at the higher one."""
    ledger, positions = play([("assign", [A]), ("hand_out", {A: 5}), ("hand_out", {A: 9})])
    older, newer = ledger.commit_plan(positions[0]), ledger.commit_plan(positions[1])
    ledger.committed(newer)
    ledger.committed(older)
    assert ledger.committed_mark(A) == 9


# (what it shows, steps, the revoked partitions, those the revoke waits for)
PENDING: list[tuple[str, list[Step], list[Key], list[Key]]] = [
    ("nothing handed out: nothing to wait for", [("assign", [A])], [A], []),
    ("handed out, not committed: wait", [("assign", [A]), ("hand_out", {A: 5})], [A], [A]),
    ("handed out and committed: go on", [("assign", [A]), ("hand_out", {A: 5}), ("commit", 0)], [A], []),
    (
        "committed, then more handed out: wait",
        [("assign", [A]), ("hand_out", {A: 5}), ("commit", 0), ("hand_out", {A: 8})],
        [A],
        [A],
    ),
    ("only the revoked partitions count", [("assign", [A, B]), ("hand_out", {A: 5, B: 5})], [B], [B]),
    ("resumed at a committed offset, nothing new", [("assign", [A]), ("restore", {A: 40})], [A], []),
]


@pytest.mark.parametrize(("steps", "revoked", "expected"), [p[1:] for p in PENDING], ids=[p[0] for p in PENDING])
def test_the_revoke_wait_predicate(steps: list[Step], revoked: list[Key], expected: list[Key]) -> None:
    """A rebalance waits for exactly the revoked partitions whose handed-out batches are not committed yet."""
    ledger, _ = play(steps)
    assert sorted(ledger.pending(revoked)) == expected


# (what it shows, steps, end of partition A, floor, lag of A)
LAG: list[tuple[str, list[Step], int, int | None, int | None]] = [
    ("end minus committed", [("assign", [A]), ("hand_out", {A: 5}), ("commit", 0)], 12, 0, 7),
    ("before the first commit: end minus the floor (Kafka: 0)", [("assign", [A])], 12, 0, 12),
    ("the floor a source knows (Event Hubs: before the first to read)", [("assign", [A])], 12, 9, 3),
    ("no commit and no floor: not measurable", [("assign", [A])], 12, None, None),
    ("never negative", [("assign", [A]), ("restore", {A: 15})], 12, 0, 0),
    ("the committed mark wins over the floor", [("assign", [A]), ("restore", {A: 10})], 12, 2, 2),
]


@pytest.mark.parametrize(("steps", "end", "floor", "expected"), [p[1:] for p in LAG], ids=[p[0] for p in LAG])
def test_lag(steps: list[Step], end: int, floor: int | None, expected: int | None) -> None:
    """Lag is the end of the partition minus what is committed (or a floor before the first commit)."""
    ledger, _ = play(steps)
    assert ledger.lag(A, end, floor) == expected


def _gauge(metrics: Metrics, key: Key) -> float | None:
    return metrics.registry.get_sample_value("rmmwatch_consumer_lag", {"topic": key[0], "partition": str(key[1])})


def test_the_lag_gauge_follows_ownership() -> None:
    """Set for owned partitions, removed when forgotten, never set for a partition not owned."""
    metrics = Metrics()
    ledger, _ = play([("assign", [A, B]), ("hand_out", {A: 5, B: 1}), ("commit", 0)], metrics)
    ledger.report_lag(A, 12)
    ledger.report_lag(B, 3)
    assert (_gauge(metrics, A), _gauge(metrics, B)) == (7, 2)
    ledger.forget([B])
    ledger.report_lag(B, 3)  # its end arrived after the revoke
    assert (_gauge(metrics, A), _gauge(metrics, B)) == (7, None)


def test_forgetting_can_keep_committed_marks() -> None:
    """Event Hubs without a checkpoint store keeps its checkpoints in memory across a close and reopen."""
    ledger, _ = play([("assign", [A, B]), ("hand_out", {A: 5, B: 6}), ("commit", 0)])
    ledger.forget([A], keep_committed=True)
    ledger.forget([B])
    assert (ledger.committed_mark(A), ledger.committed_mark(B)) == (5, None)
    assert ledger.owned() == []


def test_restore_replaces_what_the_ledger_held() -> None:
    """The transport's committed marks are the truth: one it does not have is no longer known."""
    ledger, _ = play([("assign", [A, B]), ("hand_out", {A: 5, B: 6}), ("commit", 0), ("restore", {A: 3})])
    ledger.restore([B], {})
    assert (ledger.committed_mark(A), ledger.committed_mark(B)) == (3, None)


def test_generations_count_up_per_assignment() -> None:
    """Each assignment is a new generation, shared by the partitions it assigns."""
    ledger, _ = play([])
    assert ledger.assign([A, B]) == 1
    assert ledger.assign([A]) == 2
    assert (ledger.generation(A), ledger.generation(B)) == (2, 1)


KAFKA_PROBLEM = (
    "this process owns 1 of 2 partitions of t in group 'g': another replica shares the group, and the sqlite "
    "store is single-process; run one replica, or use --store redis://... for several"
)
# (what it shows, observations (owned, total, monotonic time), the problem after the last one)
SHARING: list[tuple[str, list[tuple[int, int, float]], str | None]] = [
    ("owning every partition is fine", [(2, 2, 0), (2, 2, 100)], None),
    ("part of them within the grace is tolerated", [(1, 2, 0), (1, 2, 30)], None),
    ("part of them past the grace is a problem", [(1, 2, 0), (1, 2, 30.5)], KAFKA_PROBLEM),
    ("owning every partition again restarts the grace", [(1, 2, 0), (2, 2, 20), (1, 2, 25), (1, 2, 50)], None),
    ("a problem, once found, stays", [(1, 2, 0), (1, 2, 31), (2, 2, 40)], KAFKA_PROBLEM),
    ("partitions not known yet (0): nothing to say", [(1, 0, 0), (1, 0, 100)], None),
]


@pytest.mark.parametrize(("observed", "expected"), [s[1:] for s in SHARING], ids=[s[0] for s in SHARING])
def test_the_sharing_check(observed: list[tuple[int, int, float]], expected: str | None) -> None:
    """A process that must own every partition tolerates owning part of them for the grace, then says why not."""
    check = SharingCheck(30.0, "of t in group 'g'")
    for owned, total, now in observed:
        found = check.observe(owned, total, now)
    assert found == check.problem == expected


def test_the_sharing_check_speaks_of_the_consumer_group_for_event_hubs() -> None:
    """The wording of the Event Hubs source (its scope names the namespace and hub)."""
    check = SharingCheck(30.0, "(namespace n, hub h, consumer group $Default)", "consumer group")
    check.observe(3, 4, 0)
    assert check.observe(3, 4, 31) == (
        "this process owns 3 of 4 partitions (namespace n, hub h, consumer group $Default): another replica shares "
        "the consumer group, and the sqlite store is single-process; run one replica, or use --store redis://... "
        "for several"
    )
