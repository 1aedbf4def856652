"""Store implementations under the one contract suite (redis joins when its service runs)."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import pytest

from rmmwatch.rules import Rule
from rmmwatch.stores import open_store
from rmmwatch.stores.base import Store
from tests.helpers import service_env

StoreFactory = Callable[..., Store]  # (rules, name=...) -> an unopened store

STORE_KINDS = ["memory", "sqlite", "redis"]


@pytest.fixture(params=["memory", "sqlite", pytest.param("redis", marks=pytest.mark.integration)])
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def make_store(store_kind: str, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    """Opens stores of one kind; every store made is closed after the test."""
    made: list[Store] = []
    run = uuid.uuid4().hex[:8]

    def factory(rules: Sequence[Rule], name: str = "state") -> Store:
        if store_kind == "memory":
            store = open_store("memory", rules)
        elif store_kind == "sqlite":
            store = open_store(f"sqlite:{tmp_path / name}.db", rules, sqlite_synchronous="normal")
        else:
            # One key prefix per test and name: stores named alike share state, like replicas do.
            prefix = f"t{run}-{name}"
            store = open_store(service_env("RMMWATCH_TEST_REDIS_URL"), rules, redis={"prefix": prefix})
        made.append(store)
        return store

    yield factory
    for store in made:
        await store.close()


def durable(kind: str) -> bool:
    """Whether a store of this kind keeps its state across close and reopen."""
    return kind != "memory"


REQUIRE_SERVICES = os.environ.get("RMMWATCH_REQUIRE_SERVICES") == "1"
