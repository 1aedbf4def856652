"""The built-in synthetic stream (demo and load): generated Defender envelopes at a rate."""

from __future__ import annotations

import asyncio
from typing import Any

from rmmwatch.sources.base import Batch, LocalSource
from rmmwatch.synthetic import Generator, GeneratorConfig


class SyntheticSource(LocalSource):
    """Generates ``rate`` messages per second, ``count`` in all, in batches of at most ``max_messages``."""

    name = "synthetic"

    def __init__(
        self,
        config: GeneratorConfig,
        *,
        rate: float = 20.0,  # messages per second (0: as fast as possible)
        count: int | None = None,  # in all (None: forever)
        max_messages: int = 500,
    ) -> None:
        self.generator = Generator(config)
        self.rate = rate
        self.count = count
        self.max_messages = max_messages
        self._produced = 0
        self._started_at = 0.0
        self._running = False

    @property
    def exhausted(self) -> bool:
        return self.count is not None and self._produced >= self.count

    def ready(self) -> tuple[bool, str]:
        return (self._running, "generating" if self._running else "not started")

    async def start(self) -> None:
        self._started_at = asyncio.get_running_loop().time()
        self._running = True

    async def fetch(self, timeout_s: float) -> Batch | None:
        if await self._idle_while_paused(timeout_s):
            return None
        if self.exhausted:
            return None
        loop = asyncio.get_running_loop()
        budget = self.max_messages
        if self.count is not None:
            budget = min(budget, self.count - self._produced)
        if self.rate > 0:
            due = int((loop.time() - self._started_at) * self.rate) - self._produced
            if due <= 0:
                wait = (self._produced + 1) / self.rate - (loop.time() - self._started_at)
                await asyncio.sleep(max(0.0, min(wait, timeout_s)))
                due = int((loop.time() - self._started_at) * self.rate) - self._produced
                if due <= 0:
                    return None
            budget = min(budget, due)
        messages = [self.generator.message() for _ in range(budget)]
        first = self._produced
        self._produced += len(messages)

        def locate(index: int) -> dict[str, Any]:
            return {"source": "synthetic", "message": first + index}

        return Batch(messages, self._produced, locate)

    async def commit(self, position: Any) -> None:
        return None  # a generated stream has nothing to resume

    async def close(self) -> None:
        self._running = False
