"""The values that pass between the stages: what decode+match found, and the clock.

Kept apart from the decoder (``events.py``) so that stores, the loop and ``hunt`` share these
types without importing the hot path. Times are integer ticks (100 ns since the Unix epoch,
KQL's datetime resolution: docs/semantics.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rmmwatch.rules import Exclusion, Rule

#: A clock in ticks (100 ns) since the Unix epoch.
Clock = Callable[[], int]


def wall_clock() -> int:
    """Now, in ticks (100 ns) since the Unix epoch."""
    return time.time_ns() // 100


@dataclass(frozen=True, slots=True)
class Problem:
    """Why a message or one of its records was not processed."""

    reason: str
    detail: str
    record: int | None = None  # index within the message; None for the whole message
    #: The offending record, re-encoded (None: the whole message is the evidence)
    payload: bytes | None = None


@dataclass(slots=True)
class Match:
    """One event that a rule's predicate keeps (exclusions are decided separately)."""

    rule: Rule
    ticks: int
    identity: str
    group: tuple[Any, ...]
    group_key: str
    contribution: tuple[Any, ...]
    trigger: dict[str, Any]


@dataclass(slots=True)
class Excluded:
    """A match that a named exclusion removed: metered and logged, never silently dropped."""

    match: Match
    exclusion: Exclusion


@dataclass(slots=True)
class BatchResult:
    """Everything decode+match learned from a batch of messages."""

    messages: int = 0
    bytes: int = 0
    candidates: int = 0
    records: int = 0
    other_tables: int = 0
    matches: list[Match] = field(default_factory=list)
    excluded: list[Excluded] = field(default_factory=list)
    problems: list[tuple[int, Problem]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One undecodable message or record, with why and where it came from."""

    reason: str
    detail: str
    origin: dict[str, Any]
    record: int | None
    payload: bytes
