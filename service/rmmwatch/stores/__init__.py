"""State stores: memory (tests, hunt), sqlite (embedded default), redis (shared by replicas)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from rmmwatch.rules import Rule
from rmmwatch.stores.base import Store


def open_store(
    url: str,
    rules: Sequence[Rule],
    *,
    sqlite_synchronous: str = "full",
    read_only: bool = False,
    redis: dict[str, Any] | None = None,
) -> Store:
    """A store for ``url``: ``memory``, ``sqlite:PATH`` or ``redis://`` / ``rediss://`` (``redis``: its options)."""
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
        from rmmwatch.stores.redis import RedisStore  # noqa: PLC0415

        if urlsplit(url).password:
            raise ValueError("put the redis password in RMMWATCH_REDIS_PASSWORD(_FILE), not in the URL")
        return RedisStore(rules, url, **(redis or {}))
    raise ValueError(f"unknown store {url.split(':', 1)[0]!r}: use memory, sqlite[:PATH] or redis://...")
