"""State stores: memory (tests, hunt), sqlite (embedded default), redis (shared by replicas)."""

from __future__ import annotations

from collections.abc import Sequence

from rmmwatch.rules import Rule
from rmmwatch.stores.base import Store


def open_store(url: str, rules: Sequence[Rule], *, sqlite_synchronous: str = "full", read_only: bool = False) -> Store:
    """A store for ``url``: ``memory``, ``sqlite:PATH`` or ``redis://`` / ``rediss://``."""
    if url == "memory":
        from rmmwatch.stores.memory import MemoryStore  # noqa: PLC0415

        return MemoryStore(rules)
    if url.startswith("sqlite:"):
        from rmmwatch.stores.sqlite import SqliteStore  # noqa: PLC0415

        path = url.removeprefix("sqlite:")
        if not path:
            raise ValueError("sqlite store needs a path: sqlite:/var/lib/rmmwatch/state.db")
        return SqliteStore(rules, path, synchronous=sqlite_synchronous, read_only=read_only)
    if url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("the redis store is not available in this build yet")
    raise ValueError(f"unknown store {url.split(':', 1)[0]!r}: use memory, sqlite[:PATH] or redis://...")
