"""The sqlite store's cheaper writes: marks of delivered alerts ride on the next transaction.

``mark_sent`` does not commit (no fsync of its own); the next ``apply``/``tick`` or ``close``
does. What a crash in between costs is checked here with a real crash (``os._exit`` in a child
process): the marked alerts come back as pending, the same bytes under the same
``(alert_id, revision)``, and replaying the batch raises nothing new.
"""

from __future__ import annotations

import ast
import asyncio
import sys
import textwrap
from asyncio.subprocess import PIPE
from pathlib import Path

from rmmwatch.events import Detector
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
