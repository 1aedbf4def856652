"""The in-memory store: the engine over dicts and heaps. Nothing survives the process."""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from typing import Any

from rmmwatch.alerts import Alert
from rmmwatch.model import Match
from rmmwatch.rules import Rule
from rmmwatch.stores.base import ApplyResult, StateStats, apply_each
from rmmwatch.stores.engine import Engine, Episode, EventRow, GroupRef, group_slices


class MemoryBackend:
    """Engine primitives over Python containers."""

    def __init__(self) -> None:
        self.events: dict[GroupRef, dict[str, EventRow]] = {}
        self._until: list[tuple[int, str, str, str]] = []
        self._pending: list[tuple[int, int, str, str, str]] = []
        self._sequence = 0
        self.episodes: dict[GroupRef, Episode] = {}
        self._dirty: set[GroupRef] = set()
        self.outbox: dict[tuple[str, int], Alert] = {}
        self.unsent: dict[tuple[str, int], None] = {}

    def insert_event(self, row: EventRow) -> bool:
        ref = (row.rule_id, row.group_key)
        group = self.events.setdefault(ref, {})
        if row.identity in group:
            return False
        group[row.identity] = row
        heapq.heappush(self._until, (row.active_until, row.rule_id, row.group_key, row.identity))
        if row.pending:
            self._sequence += 1
            heapq.heappush(self._pending, (row.active_from, self._sequence, row.rule_id, row.group_key, row.identity))
        return True

    def _active(self, ref: GroupRef, now: int) -> Iterable[EventRow]:
        for row in self.events.get(ref, {}).values():
            if row.active_from <= now <= row.active_until:  # time alone decides (pending drives alerts)
                yield row

    def has_active(self, ref: GroupRef, now: int) -> bool:
        return any(True for _ in self._active(ref, now))

    def active_contributions(self, ref: GroupRef, now: int) -> list[list[Any]]:
        return [row.contribution for row in self._active(ref, now)]

    def active_min_ticks(self, ref: GroupRef, now: int) -> int | None:
        return min((row.ticks for row in self._active(ref, now)), default=None)

    def all_active(self, rule_id: str, now: int) -> Iterable[tuple[list[Any], list[Any]]]:
        for ref in self.events:
            if ref[0] == rule_id:
                for row in self._active(ref, now):
                    yield row.group, row.contribution

    def expire(self, now: int) -> tuple[int, set[GroupRef]]:
        count = 0
        touched: set[GroupRef] = set()
        while self._until and self._until[0][0] < now:
            _, rule_id, group_key, identity = heapq.heappop(self._until)
            ref = (rule_id, group_key)
            group = self.events.get(ref)
            if group is not None and group.pop(identity, None) is not None:
                count += 1
                touched.add(ref)
                if not group:
                    del self.events[ref]
        return count, touched

    def activate(self, now: int) -> list[EventRow]:
        out: list[EventRow] = []
        while self._pending and self._pending[0][0] <= now:
            _, _, rule_id, group_key, identity = heapq.heappop(self._pending)
            row = self.events.get((rule_id, group_key), {}).get(identity)
            if row is not None and row.pending:
                row.pending = False
                out.append(row)
        return out

    def get_episode(self, ref: GroupRef) -> Episode | None:
        return self.episodes.get(ref)

    def put_episode(self, episode: Episode) -> None:
        ref = (episode.rule_id, episode.group_key)
        self.episodes[ref] = episode
        if episode.dirty:
            self._dirty.add(ref)
        else:
            self._dirty.discard(ref)

    def delete_episode(self, ref: GroupRef) -> None:
        self.episodes.pop(ref, None)
        self._dirty.discard(ref)

    def dirty_episodes(self) -> list[Episode]:
        return [self.episodes[ref] for ref in sorted(self._dirty)]

    def add_alert(self, alert: Alert) -> None:
        if alert.key not in self.outbox:
            self.outbox[alert.key] = alert
            self.unsent[alert.key] = None


class MemoryStore:
    """A Store in process memory: for tests, ``hunt``-like runs and demos without a disk."""

    name = "memory"

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.engine = Engine(rules)
        self.backend = MemoryBackend()

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def apply(self, matches: Sequence[Match], now: int) -> ApplyResult:
        result = ApplyResult()
        for part in group_slices(matches):
            result.merge(self.engine.apply(self.backend, part, now))
        return result

    async def apply_many(self, parts: Sequence[Sequence[Match]], now: int) -> ApplyResult:
        return await apply_each(self, parts, now)

    async def tick(self, now: int) -> ApplyResult:
        return self.engine.tick(self.backend, now)

    async def pending_alerts(self, limit: int) -> list[Alert]:
        keys = list(self.backend.unsent)[:limit]
        return [self.backend.outbox[k] for k in keys]

    async def pending_count(self, limit: int) -> int:
        return min(len(self.backend.unsent), limit)

    async def mark_sent(self, keys: Sequence[tuple[str, int]]) -> None:
        for key in keys:
            self.backend.unsent.pop(key, None)

    async def summaries(self, rule: Rule, now: int) -> list[dict[str, Any]]:
        return self.engine.summaries(self.backend, rule, now)

    async def stats(self) -> dict[str, StateStats]:
        out: dict[str, list[int]] = {}
        for (rule_id, _), rows in self.backend.events.items():
            entry = out.setdefault(rule_id, [0, 0])
            entry[0] += 1
            entry[1] += len(rows)
        return {rule_id: StateStats(groups, events) for rule_id, (groups, events) in out.items()}

    async def ping(self) -> bool:
        return True
