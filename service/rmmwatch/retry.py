"""Exponential backoff with a cap, for everything the loop retries (store, sinks, dead letters)."""

from __future__ import annotations


class Backoff:
    """0.5 s, 1 s, 2 s ... ``cap_s``: the delay before the next attempt after each failure."""

    def __init__(self, first_s: float = 0.5, cap_s: float = 30.0) -> None:
        self.first_s = first_s
        self.cap_s = cap_s
        self.failures = 0

    def reset(self) -> None:
        self.failures = 0

    def next_delay(self) -> float:
        delay = min(self.cap_s, self.first_s * (1 << min(self.failures, 20)))
        self.failures += 1
        return delay
