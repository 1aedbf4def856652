"""The embedded durable store: the engine over SQLite, one transaction per call.

* WAL journal; ``synchronous=FULL`` by default, so a committed batch survives power loss
  (``synchronous=normal`` trades that for speed: it still survives a killed process).
* Every call runs in one dedicated thread (SQLite connections are not shared across
  threads, and the event loop keeps serving health checks while SQLite syncs).
* ``mark_sent`` does not commit (no fsync of its own): it opens, or joins, the write
  transaction that the next ``apply``/``apply_many``/``tick`` (at most a tick interval later)
  or ``close`` commits. This connection reads its own marks at once, so ``pending_alerts``
  never returns a delivered alert twice within a run; a crash before that commit re-sends
  those alerts after the restart, byte for byte with the same ``(alert_id, revision)`` (the
  sinks' at-least-once contract). State and new alerts are never left uncommitted: every
  ``apply`` and ``tick`` commits before it returns.
* ``apply_many`` (group commit) applies several batches in one transaction, one fsync; a
  large batch is applied in slices of whole groups (``engine.group_slices``) inside it, and
  its alerts are counted, not returned (they are in the outbox), so memory stays bounded.
* Single process (``sqlite_file.py``): an exclusive ``flock`` on ``<db>.lock`` is held while
  open. A second rmmwatch on the same file is refused with :class:`StoreLocked`. Several
  replicas must use the redis store: with one SQLite file per replica each would see part of
  every device's events and alert on partial state.
* A damaged file is never trusted (``sqlite_file.py``; docs/architecture.md, "what happens
  when ..."): ``open`` runs ``PRAGMA quick_check`` and refuses a corrupt file, one that is not a
  database, or a store that existed and is now 0 bytes or missing, with :class:`StoreRefused`
  (the detector stops, exit 1, saying which file and what to do); a partial answer is never
  given as the answer. Corruption met later by a query is just as fatal; a full disk or an I/O
  error is :class:`StoreUnavailable` (retried), with SQLite's own reason in the message.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from pathlib import Path
from typing import Any, TypeVar

import orjson

from rmmwatch.alerts import Alert
from rmmwatch.kql.datetimes import TICKS_PER_DAY
from rmmwatch.model import Match
from rmmwatch.rules import Rule
from rmmwatch.stores.base import ApplyResult, StateStats, StoreRefused, StoreUnavailable
from rmmwatch.stores.engine import Engine, Episode, EventRow, GroupRef, group_slices
from rmmwatch.stores.sqlite_file import StoreFile

T = TypeVar("T")

SCHEMA_VERSION = "1"
#: How long delivered alerts stay in the outbox for audit before they are pruned.
SENT_RETENTION_TICKS = 7 * TICKS_PER_DAY

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    rule_id TEXT NOT NULL,
    grp TEXT NOT NULL,
    identity TEXT NOT NULL,
    grp_values TEXT NOT NULL,
    ticks INTEGER NOT NULL,
    active_from INTEGER NOT NULL,
    active_until INTEGER NOT NULL,
    pending INTEGER NOT NULL,
    contribution TEXT NOT NULL,
    trigger TEXT NOT NULL,
    seen_ticks INTEGER NOT NULL,
    PRIMARY KEY (rule_id, grp, identity)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS events_until ON events (active_until);
CREATE INDEX IF NOT EXISTS events_pending ON events (active_from) WHERE pending = 1;
CREATE TABLE IF NOT EXISTS episodes (
    rule_id TEXT NOT NULL,
    grp TEXT NOT NULL,
    grp_values TEXT NOT NULL,
    start_ticks INTEGER NOT NULL,
    revision INTEGER NOT NULL,
    last_alert_ticks INTEGER NOT NULL,
    dirty INTEGER NOT NULL,
    dirty_trigger TEXT,
    dirty_event_ticks INTEGER NOT NULL,
    dirty_seen_ticks INTEGER NOT NULL,
    PRIMARY KEY (rule_id, grp)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS episodes_dirty ON episodes (rule_id, grp) WHERE dirty = 1;
CREATE TABLE IF NOT EXISTS outbox (
    alert_id TEXT NOT NULL,
    revision INTEGER NOT NULL,
    kind TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    grp TEXT NOT NULL,
    created_ticks INTEGER NOT NULL,
    event_ticks INTEGER NOT NULL,
    seen_ticks INTEGER NOT NULL,
    payload BLOB NOT NULL,
    sent INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (alert_id, revision)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS outbox_unsent ON outbox (created_ticks) WHERE sent = 0;
CREATE INDEX IF NOT EXISTS outbox_sent ON outbox (created_ticks) WHERE sent = 1;
"""


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


class SqliteBackend:
    """Engine primitives as SQL on one connection (inside the caller's transaction)."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.db = connection

    def insert_event(self, row: EventRow) -> bool:
        cursor = self.db.execute(
            "INSERT OR IGNORE INTO events VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (
                row.rule_id,
                row.group_key,
                row.identity,
                _dumps(row.group),
                row.ticks,
                row.active_from,
                row.active_until,
                int(row.pending),
                _dumps(row.contribution),
                _dumps(row.trigger),
                row.seen_ticks,
            ),
        )
        return cursor.rowcount == 1

    # "Active at now" is a matter of time alone: the pending flag only drives activation alerts.
    _ACTIVE = "rule_id = ? AND grp = ? AND active_from <= ? AND active_until >= ?"

    def has_active(self, ref: GroupRef, now: int) -> bool:
        row = self.db.execute(f"SELECT 1 FROM events WHERE {self._ACTIVE} LIMIT 1", (*ref, now, now)).fetchone()
        return row is not None

    def active_contributions(self, ref: GroupRef, now: int) -> list[list[Any]]:
        rows = self.db.execute(f"SELECT contribution FROM events WHERE {self._ACTIVE}", (*ref, now, now))
        return [orjson.loads(r[0]) for r in rows]

    def active_min_ticks(self, ref: GroupRef, now: int) -> int | None:
        row = self.db.execute(f"SELECT MIN(ticks) FROM events WHERE {self._ACTIVE}", (*ref, now, now)).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def all_active(self, rule_id: str, now: int) -> Iterable[tuple[list[Any], list[Any]]]:
        rows = self.db.execute(
            "SELECT grp_values, contribution FROM events WHERE rule_id = ? AND active_from <= ? AND active_until >= ?",
            (rule_id, now, now),
        )
        for grp_values, contribution in rows:
            yield orjson.loads(grp_values), orjson.loads(contribution)

    def expire(self, now: int) -> tuple[int, set[GroupRef]]:
        touched = {
            (r[0], r[1])
            for r in self.db.execute("SELECT DISTINCT rule_id, grp FROM events WHERE active_until < ?", (now,))
        }
        if not touched:
            return 0, touched
        cursor = self.db.execute("DELETE FROM events WHERE active_until < ?", (now,))
        return cursor.rowcount, touched

    def activate(self, now: int) -> list[EventRow]:
        rows = self.db.execute(
            "SELECT rule_id, grp, identity, grp_values, ticks, active_from, active_until, contribution, "
            "trigger, seen_ticks FROM events WHERE pending = 1 AND active_from <= ? ORDER BY active_from",
            (now,),
        ).fetchall()
        if not rows:
            return []
        self.db.execute("UPDATE events SET pending = 0 WHERE pending = 1 AND active_from <= ?", (now,))
        return [
            EventRow(
                rule_id=r[0],
                group_key=r[1],
                identity=r[2],
                group=orjson.loads(r[3]),
                ticks=r[4],
                active_from=r[5],
                active_until=r[6],
                pending=False,
                contribution=orjson.loads(r[7]),
                trigger=orjson.loads(r[8]),
                seen_ticks=r[9],
            )
            for r in rows
        ]

    _EPISODE_COLUMNS = (
        "rule_id, grp, grp_values, start_ticks, revision, last_alert_ticks, dirty, dirty_trigger, "
        "dirty_event_ticks, dirty_seen_ticks"
    )

    @staticmethod
    def _episode(r: Sequence[Any]) -> Episode:
        return Episode(
            rule_id=r[0],
            group_key=r[1],
            group=orjson.loads(r[2]),
            start_ticks=r[3],
            revision=r[4],
            last_alert_ticks=r[5],
            dirty=bool(r[6]),
            dirty_trigger=orjson.loads(r[7]) if r[7] is not None else None,
            dirty_event_ticks=r[8],
            dirty_seen_ticks=r[9],
        )

    def get_episode(self, ref: GroupRef) -> Episode | None:
        row = self.db.execute(
            f"SELECT {self._EPISODE_COLUMNS} FROM episodes WHERE rule_id = ? AND grp = ?", ref
        ).fetchone()
        return None if row is None else self._episode(row)

    def put_episode(self, episode: Episode) -> None:
        self.db.execute(
            f"INSERT OR REPLACE INTO episodes ({self._EPISODE_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                episode.rule_id,
                episode.group_key,
                _dumps(episode.group),
                episode.start_ticks,
                episode.revision,
                episode.last_alert_ticks,
                int(episode.dirty),
                None if episode.dirty_trigger is None else _dumps(episode.dirty_trigger),
                episode.dirty_event_ticks,
                episode.dirty_seen_ticks,
            ),
        )

    def delete_episode(self, ref: GroupRef) -> None:
        self.db.execute("DELETE FROM episodes WHERE rule_id = ? AND grp = ?", ref)

    def dirty_episodes(self) -> list[Episode]:
        rows = self.db.execute(f"SELECT {self._EPISODE_COLUMNS} FROM episodes WHERE dirty = 1 ORDER BY rule_id, grp")
        return [self._episode(r) for r in rows]

    def add_alert(self, alert: Alert) -> None:
        self.db.execute(
            "INSERT OR IGNORE INTO outbox (alert_id, revision, kind, rule_id, grp, created_ticks, event_ticks, "
            "seen_ticks, payload) VALUES (?,?,?,?,?,?,?,?,?)",
            (
                alert.alert_id,
                alert.revision,
                alert.kind,
                alert.rule_id,
                alert.group_key,
                alert.created_ticks,
                alert.event_ticks,
                alert.seen_ticks,
                alert.payload,
            ),
        )


class SqliteStore:
    """A Store in one SQLite file, owned by one process."""

    name = "sqlite"

    def __init__(
        self,
        rules: Sequence[Rule],
        path: str | os.PathLike[str],
        *,
        synchronous: str = "full",
        read_only: bool = False,
    ) -> None:
        """``read_only`` opens without the ownership lock, for inspecting a live store (``rmmwatch state``)."""
        if synchronous.lower() not in ("full", "normal", "extra"):
            raise ValueError("synchronous must be full, normal or extra")
        self.engine = Engine(rules)
        self.path = Path(path)
        self.synchronous = synchronous.upper()
        self.read_only = read_only
        self.file = StoreFile(self.path)
        self._executor: ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None

    # -- lifecycle -------------------------------------------------------------------------
    async def open(self) -> None:
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rmmwatch-sqlite")
        try:
            await self._run(self._open_sync)
        except BaseException:
            await self.close()
            raise

    def _open_sync(self) -> None:
        self.file.check_not_lost()
        if self.read_only:
            if not self.file.size():
                raise StoreRefused(f"{self.path} is empty (0 bytes): it holds no rmmwatch state")
            try:
                self._db = sqlite3.connect(
                    f"file:{self.path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
                )
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"cannot open {self.path}: {exc}") from None
            self._db.execute("PRAGMA busy_timeout=5000")
            self.file.check_integrity(self._db)
            return
        self.file.lock()
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open {self.path}: {exc}") from None
        self._db = db  # closed by close() whatever happens next
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={self.synchronous}")
        db.execute("PRAGMA busy_timeout=5000")
        self.file.check_integrity(db)
        db.executescript(_SCHEMA)
        version = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if version is None:
            db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
        elif version[0] != SCHEMA_VERSION:
            raise StoreRefused(
                f"{self.path} has schema version {version[0]}, this rmmwatch needs {SCHEMA_VERSION}: "
                "run the rmmwatch version that wrote it, or move the file away to start with empty state"
            )
        store_id = db.execute("SELECT value FROM meta WHERE key = 'store_id'").fetchone()
        if store_id is None:  # a new store, or one made before stores had ids
            store_id = (uuid.uuid4().hex,)
            db.execute("INSERT INTO meta VALUES ('store_id', ?)", store_id)
        self.file.mark_created(store_id[0])

    async def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is None:
            return
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(executor, self._close_sync)
        executor.shutdown(wait=True)

    def _close_sync(self) -> None:
        if self._db is not None:
            if self._db.in_transaction:  # marks of delivered alerts (mark_sent) not yet committed
                with suppress(sqlite3.Error):  # if it fails, the next run re-sends them (same keys)
                    self._db.execute("COMMIT")
            self._db.close()
            self._db = None
        self.file.unlock()

    async def _run(self, function: Callable[[], T]) -> T:
        if self._executor is None:
            raise StoreUnavailable("the sqlite store is not open")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._guarded, function)

    def _guarded(self, function: Callable[[], T]) -> T:
        """``function`` in the store's thread, with SQLite's errors classified (``StoreFile.classified``)."""
        try:
            return function()
        except sqlite3.Error as exc:
            raise self.file.classified(exc) from None
        except orjson.JSONDecodeError as exc:  # only what the store wrote is decoded here
            raise self.file.corrupt(f"a row that is not the JSON it stored: {exc}") from None

    @staticmethod
    def _rollback(db: sqlite3.Connection) -> None:
        # SQLite has often rolled back already (a full disk, an I/O error, corruption): a second
        # ROLLBACK would fail with "no transaction is active" and hide the real cause.
        if db.in_transaction:
            with suppress(sqlite3.Error):
                db.execute("ROLLBACK")

    def _transaction(self, body: Callable[[SqliteBackend], T]) -> T:
        db = self._db
        if db is None:
            raise StoreUnavailable("the sqlite store is not open")
        if not db.in_transaction:  # else: the one mark_sent opened, committed with this body
            db.execute("BEGIN IMMEDIATE")
        try:
            result = body(SqliteBackend(db))
            db.execute("COMMIT")
        except BaseException:
            self._rollback(db)
            raise
        return result

    # -- the store --------------------------------------------------------------------------
    async def apply(self, matches: Sequence[Match], now: int) -> ApplyResult:
        return await self._apply([matches], now, keep_alerts=True)

    async def apply_many(self, parts: Sequence[Sequence[Match]], now: int) -> ApplyResult:
        return await self._apply(parts, now, keep_alerts=False)

    async def _apply(self, parts: Sequence[Sequence[Match]], now: int, *, keep_alerts: bool) -> ApplyResult:
        def body(backend: SqliteBackend) -> ApplyResult:
            result = ApplyResult(keep_alerts=keep_alerts)
            for part in parts:
                for piece in group_slices(part):
                    result.merge(self.engine.apply(backend, piece, now, keep_alerts=keep_alerts))
            return result

        return await self._run(lambda: self._transaction(body))

    async def tick(self, now: int) -> ApplyResult:
        def body(backend: SqliteBackend) -> ApplyResult:
            result = self.engine.tick(backend, now)
            backend.db.execute("DELETE FROM outbox WHERE sent = 1 AND created_ticks < ?", (now - SENT_RETENTION_TICKS,))
            return result

        return await self._run(lambda: self._transaction(body))

    async def pending_alerts(self, limit: int) -> list[Alert]:
        def read() -> list[Alert]:
            assert self._db is not None
            rows = self._db.execute(
                "SELECT alert_id, revision, kind, rule_id, grp, created_ticks, event_ticks, seen_ticks, payload "
                "FROM outbox WHERE sent = 0 ORDER BY created_ticks, alert_id, revision LIMIT ?",
                (limit,),
            )
            return [Alert(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], bytes(r[8])) for r in rows]

        return await self._run(read)

    async def pending_count(self, limit: int) -> int:
        def count() -> int:
            assert self._db is not None
            row = self._db.execute(
                "SELECT count(*) FROM (SELECT 1 FROM outbox WHERE sent = 0 LIMIT ?)", (limit,)
            ).fetchone()
            return int(row[0])

        return await self._run(count)

    async def mark_sent(self, keys: Sequence[tuple[str, int]]) -> None:
        if not keys:
            return

        def mark() -> None:
            db = self._db
            if db is None:
                raise StoreUnavailable("the sqlite store is not open")
            try:
                if not db.in_transaction:
                    db.execute("BEGIN IMMEDIATE")
                db.executemany("UPDATE outbox SET sent = 1 WHERE alert_id = ? AND revision = ?", keys)
            except BaseException:
                self._rollback(db)
                raise
            # Left open: the next apply, tick or close commits it (see the module's docstring).

        await self._run(mark)

    async def summaries(self, rule: Rule, now: int) -> list[dict[str, Any]]:
        def read() -> list[dict[str, Any]]:
            assert self._db is not None
            return self.engine.summaries(SqliteBackend(self._db), rule, now)

        return await self._run(read)

    async def stats(self) -> dict[str, StateStats]:
        def read() -> dict[str, StateStats]:
            assert self._db is not None
            rows = self._db.execute("SELECT rule_id, COUNT(DISTINCT grp), COUNT(*) FROM events GROUP BY rule_id")
            return {r[0]: StateStats(r[1], r[2]) for r in rows}

        return await self._run(read)

    async def ping(self) -> bool:
        def check() -> bool:
            return self._db is not None and self._db.execute("SELECT 1").fetchone() == (1,)

        try:
            return await self._run(check)
        except (StoreUnavailable, StoreRefused, sqlite3.Error):
            return False
