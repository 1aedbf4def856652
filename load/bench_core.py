"""Benchmark the decode+match hot path on one core: records/s and MB/s.

The realistic mix of issue #2: Defender envelopes of 1 to 50 records, NetSupport in 0.1%
of records (plus decoys that pass the prefilter but not ``has``), with the bundled rule
(the seed query and its five exclusions). Messages are generated up front, then
``Detector.process`` runs over all of them several times; the best round is reported
(the others are printed too). Both record shapes are measured: ``compact`` (about 1.5 KB
per record, the issue's figure) and ``full`` (every column Defender sends today, about
2 KB), and both prefilter engines.

    python -m load.bench_core [--messages 20000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

from rmmwatch.events import Detector
from rmmwatch.rules import load_rules
from rmmwatch.synthetic import Generator, GeneratorConfig

#: The bundled NetSupport rule alone: the figure this benchmark has always reported.
RULES = ["bundled:netsupport"]


def measure(messages: list[bytes], records: int, engine: str, rounds: int) -> tuple[float, float, list[float]]:
    detector = Detector(load_rules(RULES), prefilter_engine=engine)
    total_bytes = sum(map(len, messages))
    seconds: list[float] = []
    for _ in range(rounds):
        started = time.perf_counter()
        detector.process(messages)
        seconds.append(time.perf_counter() - started)
    best = min(seconds)
    return records / best, total_bytes / best / 1e6, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core, as the floor is stated
    print(
        f"rmmwatch bench-core: {platform.python_implementation()} {platform.python_version()}, "
        f"{args.messages} messages per round, best of {args.rounds} rounds, pinned to one core"
    )
    print(f"{'shape':8} {'engine':10} {'rec/msg':>7} {'B/rec':>6} {'parsed':>7} {'records/s':>11} {'MB/s':>7}")
    for compact in (True, False):
        config = GeneratorConfig(seed=args.seed, netsupport_ratio=0.001, compact=compact)
        generator = Generator(config)
        messages = list(generator.messages(args.messages))
        stats = generator.stats
        parsed = Detector(load_rules(RULES)).process(messages).candidates
        for engine in ("hyperscan", "python"):
            try:
                per_second, megabytes, _ = measure(messages, stats.records, engine, args.rounds)
            except RuntimeError as exc:
                print(f"{'compact' if compact else 'full':8} {engine:10} unavailable: {exc}")
                continue
            print(
                f"{'compact' if compact else 'full':8} {engine:10} {stats.records / stats.messages:7.1f} "
                f"{sum(map(len, messages)) / stats.records:6.0f} {parsed / stats.messages:7.1%} "
                f"{per_second:11,.0f} {megabytes:7,.0f}"
            )


if __name__ == "__main__":
    main()
