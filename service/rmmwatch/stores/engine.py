"""The episode state machine, written once over a small synchronous backend interface.

The memory and sqlite stores run this engine inside one transaction per call; the Redis
store runs the same logic as Lua. The rules it implements:

* an event older than the window at ``now`` is refused (out of window); one dated after
  the window's upper edge is stored *pending* and activates when ``now`` reaches it;
* every call first **advances** to ``now``: expires events that left the window, activates
  pending events, and ends episodes whose group became empty, so the state is exact at
  ``now`` before anything is added (a group that emptied between two ticks ends even if
  a new event arrives first);
* a group that goes from empty to non-empty opens an episode and raises ``new``; its
  start is the group's FirstSeen at that moment, which fixes the ``alert_id``;
* a further change raises ``update`` according to the rule's policy: ``every`` change,
  ``none``, or ``throttle``: at most one per interval; a change inside the interval
  marks the episode dirty and the tick sends the update when the interval has passed
  (trailing edge), so the last change is never lost;
* a group that empties ends its episode (and raises ``end`` if the rule asks).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from rmmwatch.alerts import Alert, AlertKind, build_alert
from rmmwatch.model import Match
from rmmwatch.rules import Rule
from rmmwatch.stores.base import ApplyResult
from rmmwatch.window import aggregate, render_row, row_sort_key

#: Stand-ins for "unbounded" in integer columns (well inside int64).
UNBOUNDED_PAST = -(1 << 62)
UNBOUNDED_FUTURE = 1 << 62

GroupRef = tuple[str, str]  # (rule id, group key)

#: At most this many matches per engine call (``group_slices``): bounds the memory one store call
#: holds (event rows, alerts and their payloads, SQL parameters) whatever the match ratio of a batch.
APPLY_SLICE = 1_000


def group_slices(matches: Sequence[Match], limit: int | None = None) -> Iterator[Sequence[Match]]:
    """``matches`` in slices of at most ``limit`` (default ``APPLY_SLICE``) that never split a group
    (a group with more than ``limit`` matches is one slice of its own), each group's matches in their
    order.

    Applying the slices one after the other at one ``now`` gives exactly the state and alerts of
    applying ``matches`` at once: the engine decides per group (new, update, throttle) from that
    group's events alone, and the second advance to the same ``now`` finds nothing to do (every
    event just inserted is inside the window, and pending ones activate after ``now``). Only the
    order in which different groups' alerts are created may differ (the outbox orders them by
    creation time, then ``alert_id``).
    """
    if limit is None:
        limit = APPLY_SLICE
    if len(matches) <= limit:
        yield matches
        return
    groups: dict[GroupRef, list[Match]] = {}
    for match in matches:
        groups.setdefault((match.rule.id, match.group_key), []).append(match)
    current: list[Match] = []
    for group in groups.values():
        if current and len(current) + len(group) > limit:
            yield current
            current = []
        current.extend(group)
    if current:
        yield current


@dataclass(slots=True)
class EventRow:
    """One stored event of one rule's group."""

    rule_id: str
    group_key: str
    group: list[Any]
    identity: str
    ticks: int
    active_from: int
    active_until: int
    pending: bool
    contribution: list[Any]
    trigger: dict[str, Any]
    seen_ticks: int


@dataclass(slots=True)
class Episode:
    """An open episode of one group: identified by its start, with its alert bookkeeping."""

    rule_id: str
    group_key: str
    group: list[Any]
    start_ticks: int
    revision: int
    last_alert_ticks: int
    dirty: bool = False
    dirty_trigger: dict[str, Any] | None = None
    dirty_event_ticks: int = 0
    dirty_seen_ticks: int = 0


class Backend(Protocol):
    """Storage primitives the engine needs; called inside one transaction."""

    def insert_event(self, row: EventRow) -> bool:
        """Insert unless (rule, group, identity) exists; True when inserted."""

    def has_active(self, ref: GroupRef, now: int) -> bool:
        """Whether the group holds an event active at ``now``."""

    def active_contributions(self, ref: GroupRef, now: int) -> list[list[Any]]:
        """Contributions of the group's events active at ``now``."""

    def active_min_ticks(self, ref: GroupRef, now: int) -> int | None:
        """The smallest Timestamp among the group's active events."""

    def all_active(self, rule_id: str, now: int) -> Iterable[tuple[list[Any], list[Any]]]:
        """(group, contribution) of every active event of a rule."""

    def expire(self, now: int) -> tuple[int, set[GroupRef]]:
        """Delete events with active_until < now: (count, groups touched)."""

    def activate(self, now: int) -> list[EventRow]:
        """Pending events with active_from <= now, now marked active, oldest first."""

    def get_episode(self, ref: GroupRef) -> Episode | None: ...

    def put_episode(self, episode: Episode) -> None: ...

    def delete_episode(self, ref: GroupRef) -> None: ...

    def dirty_episodes(self) -> list[Episode]:
        """Episodes with a change not yet alerted."""

    def add_alert(self, alert: Alert) -> None: ...


@dataclass(slots=True)
class _Change:
    """The first and the last event that changed a group in one call."""

    first: EventRow
    last: EventRow


def _note_change(changes: dict[GroupRef, _Change], row: EventRow) -> None:
    """``row`` changed its group: it is the group's last change in this call, and its first if none came before."""
    ref = (row.rule_id, row.group_key)
    change = changes.get(ref)
    if change is None:
        changes[ref] = _Change(row, row)
    else:
        change.last = row


class Engine:
    """Applies matches and the passage of time to a backend, producing alerts."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.rules = {rule.id: rule for rule in rules}

    # -- entry points --------------------------------------------------------------------
    def apply(self, backend: Backend, matches: Sequence[Match], now: int, *, keep_alerts: bool = True) -> ApplyResult:
        result = ApplyResult(keep_alerts=keep_alerts)
        self._advance(backend, now, result)
        changes: dict[GroupRef, _Change] = {}
        for match in matches:
            rule = match.rule
            window = rule.query.window
            active_until = window.active_until(match.ticks)
            if active_until is not None and active_until < now:
                result.out_of_window += 1
                _bump(result.out_of_window_by_rule, rule.id)
                continue
            active_from = window.active_from(match.ticks)
            pending = active_from is not None and active_from > now
            row = EventRow(
                rule_id=rule.id,
                group_key=match.group_key,
                group=list(match.group),
                identity=match.identity,
                ticks=match.ticks,
                active_from=UNBOUNDED_PAST if active_from is None else active_from,
                active_until=UNBOUNDED_FUTURE if active_until is None else active_until,
                pending=pending,
                contribution=list(match.contribution),
                trigger=match.trigger,
                seen_ticks=now,
            )
            if not backend.insert_event(row):
                result.duplicates += 1
                _bump(result.duplicates_by_rule, rule.id)
                continue
            result.inserted += 1
            _bump(result.inserted_by_rule, rule.id)
            if pending:
                result.future += 1
                _bump(result.future_by_rule, rule.id)
                continue
            _note_change(changes, row)
        for ref, change in changes.items():
            self._changed(backend, ref, change, now, result)
        return result

    def tick(self, backend: Backend, now: int) -> ApplyResult:
        result = ApplyResult()
        self._advance(backend, now, result)
        self._flush_updates(backend, now, result)
        return result

    def summaries(self, backend: Backend, rule: Rule, now: int) -> list[dict[str, Any]]:
        groups: dict[str, tuple[list[Any], list[list[Any]]]] = {}
        for group, contribution in backend.all_active(rule.id, now):
            key = repr(group)
            if key not in groups:
                groups[key] = (group, [])
            groups[key][1].append(contribution)
        query = rule.query
        rows = [render_row(query, group, aggregate(query.aggregates, c)) for group, c in groups.values()]
        rows.sort(key=lambda r: row_sort_key(r, query.group_by))
        return rows

    # -- the state machine -------------------------------------------------------------
    def _advance(self, backend: Backend, now: int, result: ApplyResult) -> None:
        expired, touched = backend.expire(now)
        result.expired += expired
        activated: dict[GroupRef, _Change] = {}
        for row in backend.activate(now):
            result.activated += 1
            _note_change(activated, row)
        for ref in touched - activated.keys():
            episode = backend.get_episode(ref)
            if episode is not None and not backend.has_active(ref, now):
                self._end(backend, episode, now, result)
        for ref, change in activated.items():
            self._changed(backend, ref, change, now, result)

    def _changed(self, backend: Backend, ref: GroupRef, change: _Change, now: int, result: ApplyResult) -> None:
        rule = self.rules.get(ref[0])
        if rule is None:
            return  # state of a rule no longer loaded: it only ages out
        episode = backend.get_episode(ref)
        if episode is None:
            start = backend.active_min_ticks(ref, now)
            assert start is not None, "a changed group holds an active event"
            episode = Episode(ref[0], ref[1], change.first.group, start, 0, now)
            backend.put_episode(episode)
            self._alert(backend, rule=rule, episode=episode, kind="new", trigger=change.first, now=now, result=result)
            return
        policy = rule.alerting
        if policy.update == "none":
            return
        if policy.update == "every" or now - episode.last_alert_ticks >= policy.update_interval_ticks:
            episode.revision += 1
            episode.last_alert_ticks = now
            episode.dirty = False
            episode.dirty_trigger = None
            backend.put_episode(episode)
            self._alert(backend, rule=rule, episode=episode, kind="update", trigger=change.last, now=now, result=result)
            return
        episode.dirty = True
        episode.dirty_trigger = change.last.trigger
        episode.dirty_event_ticks = change.last.ticks
        episode.dirty_seen_ticks = change.last.seen_ticks
        backend.put_episode(episode)

    def _flush_updates(self, backend: Backend, now: int, result: ApplyResult) -> None:
        for episode in backend.dirty_episodes():
            rule = self.rules.get(episode.rule_id)
            if rule is None:
                continue
            policy = rule.alerting
            if policy.update == "throttle" and now - episode.last_alert_ticks < policy.update_interval_ticks:
                continue
            ref = (episode.rule_id, episode.group_key)
            trigger_row = EventRow(
                rule_id=episode.rule_id,
                group_key=episode.group_key,
                group=episode.group,
                identity="",
                ticks=episode.dirty_event_ticks,
                active_from=0,
                active_until=0,
                pending=False,
                contribution=[],
                trigger=episode.dirty_trigger or {},
                seen_ticks=episode.dirty_seen_ticks,
            )
            episode.dirty = False
            episode.dirty_trigger = None
            if policy.update == "none" or not backend.has_active(ref, now):
                backend.put_episode(episode)
                continue
            episode.revision += 1
            episode.last_alert_ticks = now
            backend.put_episode(episode)
            self._alert(backend, rule=rule, episode=episode, kind="update", trigger=trigger_row, now=now, result=result)

    def _end(self, backend: Backend, episode: Episode, now: int, result: ApplyResult) -> None:
        ref = (episode.rule_id, episode.group_key)
        backend.delete_episode(ref)
        rule = self.rules.get(episode.rule_id)
        if rule is None or not rule.alerting.end:
            return
        alert = build_alert(
            rule=rule,
            kind="end",
            group=episode.group,
            group_key=episode.group_key,
            episode_start_ticks=episode.start_ticks,
            revision=episode.revision + 1,
            values=[],
            trigger=None,
            event_ticks=episode.start_ticks,
            seen_ticks=now,
            now=now,
        )
        backend.add_alert(alert)
        result.record(alert)

    def _alert(
        self,
        backend: Backend,
        *,
        rule: Rule,
        episode: Episode,
        kind: AlertKind,
        trigger: EventRow,
        now: int,
        result: ApplyResult,
    ) -> None:
        ref = (episode.rule_id, episode.group_key)
        values = aggregate(rule.query.aggregates, backend.active_contributions(ref, now))
        alert = build_alert(
            rule=rule,
            kind=kind,
            group=episode.group,
            group_key=episode.group_key,
            episode_start_ticks=episode.start_ticks,
            revision=episode.revision,
            values=values,
            trigger=trigger.trigger,
            event_ticks=trigger.ticks,
            seen_ticks=trigger.seen_ticks,
            now=now,
        )
        backend.add_alert(alert)
        result.record(alert)


def _bump(counter: dict[str, int], key: str) -> None:
    counter[key] = counter.get(key, 0) + 1
