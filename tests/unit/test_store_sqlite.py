"""The sqlite store's cheaper writes, and a damaged file never trusted.

Marks of delivered alerts ride on the next transaction.

``mark_sent`` does not commit (no fsync of its own); the next ``apply``/``tick`` or ``close``
does. What a crash in between costs is checked here with a real crash (``os._exit`` in a child
process): the marked alerts come back as pending, the same bytes under the same
``(alert_id, revision)``, and replaying the batch raises nothing new.

A damaged store is refused, never read in part: garbage in the middle of the file, a damaged
header, a truncated file, a store emptied or deleted (its ``.created`` marker remains), and
corruption met by a query while running all raise ``StoreRefused`` (fatal: the detector stops
with the message), never the retried ``StoreUnavailable``.
"""

from __future__ import annotations

import ast
import asyncio
import random
import sqlite3
import sys
import textwrap
from asyncio.subprocess import PIPE
from pathlib import Path

import pytest

from rmmwatch.events import Detector
from rmmwatch.stores.base import StoreRefused, StoreUnavailable
from rmmwatch.stores.engine import group_slices
from rmmwatch.stores.sqlite import SqliteStore
from tests.helpers import MINUTE, SECOND, T0, matches, row, seed_rule

RULE = seed_rule()
ROWS = [row(device="a", ticks=T0 - MINUTE, report=1), row(device="b", ticks=T0 - MINUTE, report=2)]


async def _committed_pending(path: Path) -> list[tuple[str, int]]:
    """What another process (``rmmwatch state --pending``) sees as undelivered."""
    reader = SqliteStore([RULE], path, read_only=True)
    await reader.open()
    try:
        return [a.key for a in await reader.pending_alerts(100)]
    finally:
        await reader.close()


async def test_marks_are_seen_at_once_and_committed_by_the_next_write(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = SqliteStore([RULE], path)
    await store.open()
    try:
        await store.apply(matches(Detector([RULE]), ROWS), T0)
        pending = await store.pending_alerts(100)
        assert len(pending) == 2
        await store.mark_sent([pending[0].key])
        assert [a.key for a in await store.pending_alerts(100)] == [pending[1].key]  # this connection: at once
        assert sorted(await _committed_pending(path)) == sorted(a.key for a in pending)  # not committed yet
        await store.tick(T0 + SECOND)  # the next write commits the mark with it
        assert await _committed_pending(path) == [pending[1].key]
        await store.mark_sent([pending[1].key])
    finally:
        await store.close()  # close commits what is left
    assert await _committed_pending(path) == []


_CRASH = textwrap.dedent(
    """
    import asyncio, os, sys
    from rmmwatch.events import Detector
    from rmmwatch.stores.sqlite import SqliteStore
    from tests.helpers import MINUTE, T0, matches, row, seed_rule
    from tests.unit.test_store_sqlite import ROWS

    async def main() -> None:
        rule = seed_rule()
        store = SqliteStore([rule], sys.argv[1])
        await store.open()
        await store.apply(matches(Detector([rule]), ROWS), T0)
        alerts = await store.pending_alerts(100)
        sys.stdout.write(repr([(a.alert_id, a.revision, a.payload) for a in alerts]))
        sys.stdout.flush()
        await store.mark_sent([a.key for a in alerts])  # delivered, marked, then the process dies
        os._exit(9)

    asyncio.run(main())
    """
)


async def test_a_crash_after_delivery_re_sends_the_same_alerts_and_replay_adds_none(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    root = Path(__file__).resolve().parents[2]
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _CRASH, str(path), cwd=root, stdout=PIPE, stderr=PIPE
    )
    out, err = await asyncio.wait_for(child.communicate(), timeout=60)
    assert child.returncode == 9, err.decode()
    delivered = ast.literal_eval(out.decode())
    assert len(delivered) == 2
    store = SqliteStore([RULE], path)
    await store.open()
    try:
        again = await store.pending_alerts(100)
        assert [(a.alert_id, a.revision, a.payload) for a in again] == delivered  # same keys, same bytes
        replay = await store.apply(matches(Detector([RULE]), ROWS), T0 + SECOND)  # the uncommitted batch again
        assert (replay.inserted, replay.duplicates, replay.alerts) == (0, 2, [])
        await store.mark_sent([a.key for a in again])
        assert await store.pending_alerts(100) == []
    finally:
        await store.close()


def test_group_slices_keep_groups_whole_and_in_order() -> None:
    detector = Detector([RULE])
    found = matches(detector, [row(device=f"d{i % 4}", report=100 + i) for i in range(18)])
    slices = [list(s) for s in group_slices(found, 5)]
    assert sorted(id(m) for s in slices for m in s) == sorted(id(m) for m in found)
    for piece in slices:
        assert len(piece) <= 5 or len({m.group_key for m in piece}) == 1
    owners = {m.group_key: i for i, s in enumerate(slices) for m in s}
    assert all(owners[m.group_key] == i for i, s in enumerate(slices) for m in s)  # no group split
    for key in owners:
        assert [m for s in slices for m in s if m.group_key == key] == [m for m in found if m.group_key == key]
    assert [list(s) for s in group_slices(found, 100)] == [found]  # small batches are not touched


# -- a damaged file ------------------------------------------------------------------------------

MANY = [row(device=f"dev-{i}", ticks=T0 - MINUTE, report=10_000 + i, command="x" * 400) for i in range(300)]


async def _made_store(path: Path) -> None:
    """A closed store with some hundred pages of state and outbox (the WAL folded into the file)."""
    store = SqliteStore([RULE], path)
    await store.open()
    try:
        await store.apply(matches(Detector([RULE]), MANY), T0)
    finally:
        await store.close()


def _pages_of(path: Path, *, except_tables: tuple[str, ...] = ("sqlite_schema",)) -> list[int]:
    """Page numbers (1-based) of every b-tree but ``except_tables``."""
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT pageno, name FROM dbstat").fetchall()
    finally:
        db.close()
    return sorted(page for page, name in rows if name not in except_tables)


def _scribble(path: Path, pages: list[int], seed: int = 7) -> None:
    """Garbage over whole pages of the file, in place."""
    garbage = random.Random(seed)
    with open(path, "r+b") as handle:
        for page in pages:
            handle.seek((page - 1) * 4096)
            handle.write(garbage.randbytes(4096))


async def _refusal(path: Path, *, read_only: bool) -> str:
    store = SqliteStore([RULE], path, read_only=read_only)
    with pytest.raises(StoreRefused) as refused:
        await store.open()
    await store.close()
    return str(refused.value)


@pytest.mark.parametrize("read_only", [False, True])
async def test_garbage_in_the_middle_of_the_file_is_refused_at_open(tmp_path: Path, read_only: bool) -> None:
    """quick_check at open: a corrupt file is refused (which file, what to do), read-only included,
    so ``rmmwatch state`` never prints the rows it could read as the answer."""
    path = tmp_path / "state.db"
    await _made_store(path)
    pages = _pages_of(path)
    middle = len(pages) // 2
    _scribble(path, pages[middle : middle + 4])
    message = await _refusal(path, read_only=read_only)
    assert str(path) in message and "corrupt" in message and "backup" in message


@pytest.mark.parametrize("read_only", [False, True])
async def test_a_damaged_header_is_refused(tmp_path: Path, read_only: bool) -> None:
    """The first bytes overwritten: not a database any more; refused with the same advice, no raw error."""
    path = tmp_path / "state.db"
    await _made_store(path)
    with open(path, "r+b") as handle:
        handle.write(b"this is no longer a SQLite header!" * 3)
    message = await _refusal(path, read_only=read_only)
    assert str(path) in message and "corrupt" in message and "not a database" in message


async def test_a_truncated_file_is_refused(tmp_path: Path) -> None:
    """Half the file cut off (a copy or a disk that lost its tail): refused, not read in part."""
    path = tmp_path / "state.db"
    await _made_store(path)
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size // 2)
    message = await _refusal(path, read_only=False)
    assert "corrupt" in message


@pytest.mark.parametrize("how", ["emptied", "deleted"])
async def test_a_store_that_existed_is_not_restarted_empty(tmp_path: Path, how: str) -> None:
    """The store emptied (0 bytes) or deleted while its marker remains: refused (starting empty would
    re-alert on everything and lose the outbox); moving the marker away is the way to start afresh."""
    path = tmp_path / "state.db"
    await _made_store(path)
    assert (tmp_path / "state.db.created").exists()
    if how == "emptied":
        path.write_bytes(b"")
    else:
        path.unlink()
    message = await _refusal(path, read_only=False)
    assert "state.db.created" in message and "backup" in message
    if how == "emptied":
        assert "0 bytes" in await _refusal(path, read_only=True)
    (tmp_path / "state.db.created").rename(tmp_path / "moved-away")
    store = SqliteStore([RULE], path)
    await store.open()  # on purpose: empty state
    try:
        assert await store.pending_alerts(10) == []
    finally:
        await store.close()
    assert (tmp_path / "state.db.created").exists(), "the new store has its own marker"


async def test_a_store_from_before_markers_gets_one_and_keeps_its_state(tmp_path: Path) -> None:
    """An existing store without a marker (made by an older rmmwatch) opens as before and is marked."""
    path = tmp_path / "state.db"
    await _made_store(path)
    (tmp_path / "state.db.created").unlink()
    store = SqliteStore([RULE], path)
    await store.open()
    try:
        assert len(await store.pending_alerts(1000)) == len(MANY)
    finally:
        await store.close()
    assert (tmp_path / "state.db.created").exists()


async def test_corruption_met_by_a_query_is_fatal_not_a_retried_outage(tmp_path: Path) -> None:
    """The file damaged under a running store: the next tick raises StoreRefused naming the file,
    not StoreUnavailable ("cannot rollback - no transaction is active") retried forever."""
    path = tmp_path / "state.db"
    store = SqliteStore([RULE], path)
    await store.open()
    try:
        await store.apply(matches(Detector([RULE]), MANY), T0)
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            _scribble(path, _pages_of(path, except_tables=("sqlite_schema", "meta")))
            # Another writer changes the WAL: the store's connection drops its page cache and reads the file.
            other.execute("INSERT OR REPLACE INTO meta VALUES ('poke', '1')")
        finally:
            other.close()
        with pytest.raises(StoreRefused) as refused:
            await store.tick(T0 + SECOND)
        assert str(path) in str(refused.value) and "corrupt" in str(refused.value)
        assert not isinstance(refused.value, StoreUnavailable)
        with pytest.raises(StoreRefused):
            await store.pending_alerts(10)
    finally:
        await store.close()
