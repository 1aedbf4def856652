"""The shared store: each group's window, episode and outbox in Redis, changed by one Lua script.

Several replicas in one consumer group see one device's events on any partition, so they
share this state. Design (docs/architecture.md §6, "one hash slot per group"):

* **Per group, one hash slot.** Every key of a group carries the hash tag
  ``{<prefix>:<rule id>:<group digest>}``; ``redis_group.lua`` changes them atomically: it
  advances the group to now (expiry, activation, end of episode), adds events idempotently,
  decides new/update/throttle once for all replicas, and writes the alert to the group's
  outbox, all in one step. It is the state machine of ``engine.py``, written for Redis.
* **One round trip per batch.** ``apply`` sends one pipeline: a script call per group
  touched, and for each group a schedule hint (below).
* **The schedule** (``{<prefix>:idx}:due``, one slot) says when each group next needs the
  wall-clock tick. It only ever *under*-states a group's due time: ``apply`` lowers it to now
  (``ZADD LT``) and bumps the group's epoch; the tick runs the due groups' scripts and writes
  their exact next due time back only if no ``apply`` bumped the epoch meanwhile (a
  compare-and-set script on the schedule's slot). A stale entry makes a tick visit a group
  early, never late: expiry and activation stay exact to the tick.
* **Alerts** are delivered by the replica whose script created them. One that dies first
  leaves them in the group's outbox; after ``orphan_age_s`` any replica's script hands them out
  again (the group's due time covers it). Alert payloads are built in Python from what the
  script stored (the group's contributions at that instant), so every delivery of one alert
  is the same bytes.
* **Exact time in doubles.** Sorted-set scores are ticks since 2020-01-01, exact in a double
  until 2048; Timestamps travel as fixed-width strings (Lua never does arithmetic on them).

The parts: this module is the batch and outbox protocol; ``redis_codec.py`` the wire format
(keys, scores, script arguments, alert specs); ``redis_connection.py`` the client, the scripts
and what errors mean. Redis unavailable: every call raises :class:`StoreUnavailable`; the loop
retries with backoff, commits nothing meanwhile, and reports not ready. Redis refusing our
password or TLS at start: :class:`StoreRefused`, the detector stops.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from rmmwatch.alerts import Alert
from rmmwatch.kql.datetimes import TICKS_PER_SECOND
from rmmwatch.model import Match
from rmmwatch.rules import Rule
from rmmwatch.stores.base import ApplyResult, StateStats, apply_each
from rmmwatch.stores.redis_codec import BASE, Group, alert_from_spec, common_args, group_args, group_of
from rmmwatch.stores.redis_connection import RedisConnection
from rmmwatch.window import aggregate, render_row, row_sort_key


@dataclass(slots=True)
class _Pending:
    """An alert this process knows is undelivered, and where it sits in Redis."""

    alert: Alert
    group: Group
    key: str


class RedisStore:
    """A Store in Redis, shared by every replica that points at it."""

    name = "redis"

    def __init__(
        self,
        rules: Sequence[Rule],
        url: str,
        *,
        prefix: str = "rmmwatch",
        username: str | None = None,
        password: str | None = None,
        ca_file: str | None = None,
        orphan_age_s: float = 10.0,
        cluster: bool = False,
    ) -> None:
        self.rules = {rule.id: rule for rule in rules}
        self.url = url
        self.prefix = prefix
        self.orphan_age = int(orphan_age_s * TICKS_PER_SECOND)
        self.cluster = cluster
        self.connection = RedisConnection(url, username=username, password=password, ca_file=ca_file, cluster=cluster)
        self._pending: dict[tuple[str, int], _Pending] = {}
        self._due = f"{{{prefix}:idx}}:due"
        self._epochs = f"{{{prefix}:idx}}:epoch"

    @property
    def _client(self) -> Any:
        return self.connection.client

    # -- lifecycle --------------------------------------------------------------------------
    async def open(self) -> None:
        await self.connection.open()
        with self.connection.errors():
            await self._recover()

    async def _recover(self) -> None:
        """Take up every undelivered alert (a restart; other replicas' may come twice: same bytes)."""
        groups = [g for g in await self._groups() if self._rule_of(g.tag) is not None]
        async with self._client.pipeline(transaction=False) as pipe:
            for group in groups:
                pipe.zrange(f"{group.tag}:unsent", 0, -1)
            unsent = await pipe.execute()
        async with self._client.pipeline(transaction=False) as pipe:
            wanted = [(group, keys) for group, keys in zip(groups, unsent, strict=True) if keys]
            for group, keys in wanted:
                pipe.hmget(f"{group.tag}:out", keys)
            specs = await pipe.execute()
        for (group, keys), values in zip(wanted, specs, strict=True):
            rule = self._rule_of(group.tag)
            assert rule is not None
            for key, spec in zip(keys, values, strict=True):
                if spec:
                    alert = alert_from_spec(rule, spec)
                    self._pending.setdefault(alert.key, _Pending(alert, group, key.decode()))

    async def close(self) -> None:
        await self.connection.close()

    def _rule_of(self, tag: str) -> Rule | None:
        inner = tag[1:-1].removeprefix(self.prefix + ":")
        return self.rules.get(inner.rsplit(":", 1)[0])

    # -- the store --------------------------------------------------------------------------
    async def apply(self, matches: Sequence[Match], now: int) -> ApplyResult:
        result = ApplyResult()
        groups: dict[tuple[str, str], list[Match]] = {}
        for match in matches:
            window = match.rule.query.window
            until = window.active_until(match.ticks)
            if until is not None and until < now:
                result.out_of_window += 1
                result.out_of_window_by_rule[match.rule.id] = result.out_of_window_by_rule.get(match.rule.id, 0) + 1
                continue
            groups.setdefault((match.rule.id, match.group_key), []).append(match)
        if not groups:
            return result
        calls = [
            (self.rules[rule_id], group_of(self.prefix, rule_id, group_key), group_matches)
            for (rule_id, group_key), group_matches in groups.items()
        ]
        replies = await self._run(calls, now, "apply", schedule=True)
        for (rule, group, _), reply in zip(calls, replies, strict=True):
            self._absorb(rule, group, reply, result)
        return result

    async def apply_many(self, parts: Sequence[Sequence[Match]], now: int) -> ApplyResult:
        # Each apply is atomic per group and already one round trip: nothing to group here.
        return await apply_each(self, parts, now)

    async def _run(
        self, calls: Sequence[tuple[Rule, Group, Sequence[Match]]], now: int, mode: str, *, schedule: bool
    ) -> list[Any]:
        """Run the group script over ``calls`` in one round trip: one call in standalone Redis,
        one per group (each its own slot) in a cluster. ``schedule``: also mark the groups due now."""
        connection = self.connection
        with connection.errors():
            if not self.cluster:
                keys = [key for _, group, _ in calls for key in group.key_names()]
                if schedule:
                    keys += [self._due, self._epochs]
                args = common_args(now, mode, self.orphan_age, len(calls), schedule)
                for rule, _, group_matches in calls:
                    args += group_args(rule, now, group_matches)
                return list(await connection.evalsha_group(keys, args))
            async with self._client.pipeline(transaction=False) as pipe:
                for rule, group, group_matches in calls:
                    args = common_args(now, mode, self.orphan_age, 1, False) + group_args(rule, now, group_matches)
                    await connection.group_script(keys=group.key_names(), args=args, client=pipe)
                if schedule:
                    await connection.schedule_script(
                        keys=[self._due, self._epochs],
                        args=[str(now - BASE), *(g.tag for _, g, _ in calls)],
                        client=pipe,
                    )
                replies = await pipe.execute()
            return [reply[0] for reply in replies[: len(calls)]]

    def _absorb(self, rule: Rule, group: Group, reply: list[Any], result: ApplyResult) -> str:
        """Fold one script reply into ``result``; remember its alerts for delivery; return the due time."""
        inserted, duplicates, future, activated, expired, due, _, created, orphans = reply
        rule_id = rule.id
        result.inserted += inserted
        result.duplicates += duplicates
        result.future += future
        result.activated += activated
        result.expired += expired
        for counter, value in ((result.inserted_by_rule, inserted), (result.duplicates_by_rule, duplicates),
                               (result.future_by_rule, future)):  # fmt: skip
            if value:
                counter[rule_id] = counter.get(rule_id, 0) + value
        for specs, fresh in ((created, True), (orphans, False)):
            for i in range(0, len(specs), 2):
                alert = alert_from_spec(rule, specs[i + 1])
                self._pending.setdefault(alert.key, _Pending(alert, group, specs[i].decode()))
                if fresh:
                    result.record(alert)
        return due.decode() if isinstance(due, bytes) else str(due)

    async def tick(self, now: int) -> ApplyResult:
        result = ApplyResult()
        with self.connection.errors():
            while True:
                due = await self._client.zrangebyscore(self._due, "-inf", now - BASE, start=0, num=500)
                if not due:
                    return result
                tags = [t.decode() for t in due]
                epochs = await self._client.hmget(self._epochs, tags)
                known = [(self._rule_of(t), Group(t), e or b"0") for t, e in zip(tags, epochs, strict=True)]
                calls = [(rule, group, ()) for rule, group, _ in known if rule is not None]
                replies = iter(await self._run(calls, now, "tick", schedule=False) if calls else [])
                async with self._client.pipeline(transaction=False) as pipe:
                    for rule, group, epoch in known:
                        next_due = "" if rule is None else self._absorb(rule, group, next(replies), result)
                        await self.connection.cas_script(
                            keys=[self._due, self._epochs], args=[group.tag, epoch, next_due], client=pipe
                        )
                    await pipe.execute()
                if len(due) < 500:
                    return result

    async def pending_alerts(self, limit: int) -> list[Alert]:
        pending = sorted(self._pending.values(), key=lambda p: (p.alert.created_ticks, p.alert.key))
        return [p.alert for p in pending[:limit]]

    async def pending_count(self, limit: int) -> int:
        # The alerts this replica delivers: its own, and orphans it adopted (pending_alerts' set).
        return min(len(self._pending), limit)

    async def mark_sent(self, keys: Sequence[tuple[str, int]]) -> None:
        entries = [self._pending[k] for k in keys if k in self._pending]
        if not entries:
            return
        sent_script = self.connection.sent_script
        with self.connection.errors():
            if not self.cluster:
                pairs = [k for e in entries for k in (f"{e.group.tag}:out", f"{e.group.tag}:unsent")]
                await sent_script(keys=pairs, args=[e.key for e in entries])
            else:
                async with self._client.pipeline(transaction=False) as pipe:
                    for entry in entries:
                        await sent_script(
                            keys=[f"{entry.group.tag}:out", f"{entry.group.tag}:unsent"], args=[entry.key], client=pipe
                        )
                    await pipe.execute()
        for key in keys:
            self._pending.pop(key, None)

    async def _groups(self, rule: Rule | None = None) -> list[Group]:
        """Every group with events, an episode or undelivered alerts (they are all scheduled)."""
        tags = [t.decode() for t in await self._client.zrange(self._due, 0, -1)]
        return [Group(t) for t in tags if rule is None or self._rule_of(t) is rule]

    async def summaries(self, rule: Rule, now: int) -> list[dict[str, Any]]:
        with self.connection.errors():
            groups = await self._groups(rule)
            async with self._client.pipeline(transaction=False) as pipe:
                for group in groups:
                    pipe.hget(f"{group.tag}:meta", "group")
                    pipe.zrangebyscore(f"{group.tag}:until", now - BASE, "+inf")
                    pipe.zrangebyscore(f"{group.tag}:pend", f"({now - BASE}", "+inf")
                replies = await pipe.execute()
            async with self._client.pipeline(transaction=False) as pipe:
                wanted: list[tuple[bytes, int]] = []
                for index, group in enumerate(groups):
                    meta, alive, not_yet = replies[index * 3 : index * 3 + 3]
                    ids = [i for i in alive if i not in set(not_yet)]
                    if meta and ids:
                        pipe.hmget(f"{group.tag}:ev", ids)
                        wanted.append((meta, len(ids)))
                records = await pipe.execute()
        query = rule.query
        rows = []
        for (meta, _), group_records in zip(wanted, records, strict=True):
            contributions = [orjson.loads(r[40 : r.index(b"\x1f", 40)]) for r in group_records if r]
            if contributions:
                rows.append(render_row(query, orjson.loads(meta), aggregate(query.aggregates, contributions)))
        rows.sort(key=lambda r: row_sort_key(r, query.group_by))
        return rows

    async def stats(self) -> dict[str, StateStats]:
        with self.connection.errors():
            groups = await self._groups()
            async with self._client.pipeline(transaction=False) as pipe:
                for group in groups:
                    pipe.hlen(f"{group.tag}:ev")
                sizes = await pipe.execute()
        out: dict[str, list[int]] = {}
        for group, size in zip(groups, sizes, strict=True):
            rule = self._rule_of(group.tag)
            if rule is None or not size:
                continue
            entry = out.setdefault(rule.id, [0, 0])
            entry[0] += 1
            entry[1] += size
        return {rule_id: StateStats(groups, events) for rule_id, (groups, events) in out.items()}

    async def ping(self) -> bool:
        return await self.connection.ping()
