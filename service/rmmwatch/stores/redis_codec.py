"""The redis store's wire format: key names, time as scores and strings, the group script's
arguments, and the alert specs it stores.

* **Keys.** Every key of a group carries the hash tag ``{<prefix>:<rule id>:<group digest>}``,
  so a group lives in one hash slot (one Lua script changes it atomically, also in a cluster).
* **Exact time in doubles.** Sorted-set scores are ticks since 2020-01-01, exact in a double
  until 2048; Timestamps travel as fixed-width strings (Lua never does arithmetic on them).
* **Alert specs.** The script stores what an alert was made of (the group's contributions at
  that instant); the payload is built here, a pure function of the spec, so every delivery of
  one alert is the same bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from rmmwatch.alerts import Alert, AlertKind, build_alert
from rmmwatch.kql.datetimes import parse_datetime
from rmmwatch.model import Match
from rmmwatch.rules import Rule
from rmmwatch.window import aggregate

#: Scores are ticks relative to this instant: integers below 2^53 until 2048.
BASE = parse_datetime("2020-01-01T00:00:00Z")
_TICKS_OFFSET = 10**19  # Timestamps as 20-digit strings: string order is time order
_UNBOUNDED = 1 << 61


def ticks_text(ticks: int) -> str:
    return f"{ticks + _TICKS_OFFSET:020d}"


def ticks_from_text(text: str | bytes) -> int:
    return int(text) - _TICKS_OFFSET


def score(ticks: int) -> str:
    if ticks >= _UNBOUNDED:
        return "+inf"
    if ticks <= -_UNBOUNDED:
        return "-inf"
    return str(ticks - BASE)


@dataclass(frozen=True, slots=True)
class Group:
    """Key names of one group."""

    tag: str

    def key_names(self) -> list[str]:
        return [f"{self.tag}:{suffix}" for suffix in ("ev", "until", "pend", "ep", "out", "unsent", "meta")]


def group_of(prefix: str, rule_id: str, group_key: str) -> Group:
    digest = hashlib.blake2b(group_key.encode(), digest_size=10).hexdigest()
    return Group(f"{{{prefix}:{rule_id}:{digest}}}")


def common_args(now: int, mode: str, orphan_age: int, groups: int, schedule: bool) -> list[str | bytes]:
    """The group script's leading arguments (one call may cover several groups)."""
    return [str(now - BASE), mode, str(orphan_age), ticks_text(now), str(groups), "1" if schedule else "0"]


def group_args(rule: Rule, now: int, matches: Sequence[Match]) -> list[str | bytes]:
    """The group script's arguments for one group: its alerting policy, then one record per match."""
    policy = rule.alerting
    args: list[str | bytes] = [
        policy.update,
        str(policy.update_interval_ticks),
        "1" if policy.end else "0",
        orjson.dumps(list(matches[0].group)) if matches else b"",
        str(len(matches)),
    ]
    window = rule.query.window
    for match in matches:
        active_from = window.active_from(match.ticks)
        active_until = window.active_until(match.ticks)
        pending = active_from is not None and active_from > now
        record = (
            ticks_text(match.ticks).encode()
            + ticks_text(now).encode()
            + orjson.dumps(list(match.contribution))
            + b"\x1f"
            + orjson.dumps(match.trigger)
        )
        args += [
            hashlib.blake2b(match.identity.encode(), digest_size=12).hexdigest(),
            score(-_UNBOUNDED if active_from is None else active_from),
            score(_UNBOUNDED if active_until is None else active_until),
            "1" if pending else "0",
            record,
        ]
    return args


def alert_from_spec(rule: Rule, spec: bytes) -> Alert:
    """The outbox alert a script stored: the payload is a pure function of the spec."""
    kind, revision, start, created, event, seen, group, trigger, contributions = spec.split(b"\x1f")
    values: list[Any] = []
    if kind != b"end":
        values = aggregate(rule.query.aggregates, [orjson.loads(p) for p in contributions.split(b"\x1e") if p])
    group_values: list[Any] = orjson.loads(group)
    return build_alert(
        rule=rule,
        kind=_KINDS[kind],
        group=group_values,
        group_key=orjson.dumps(group_values).decode(),
        episode_start_ticks=ticks_from_text(start),
        revision=int(revision),
        values=values,
        trigger=orjson.loads(trigger) if trigger else None,
        event_ticks=ticks_from_text(event),
        seen_ticks=ticks_from_text(seen),
        now=int(created) + BASE,
    )


_KINDS: dict[bytes, AlertKind] = {b"new": "new", b"update": "update", b"end": "end"}
