"""Crash safety of ``run`` on a file replay: kill -9 at random points, restart, compare with hunt.

At least ten ``SIGKILL``s land while the detector reads, applies and delivers; each time
it is restarted on the same SQLite state and checkpoint. When a run finally reaches the
end of the input, the state must equal ``hunt``'s answer over the same file (nothing
lost, nothing counted twice), every episode's ``new`` alert must have been delivered at
least once, and each episode must have exactly one ``alert_id``.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson

from rmmwatch.kql.datetimes import format_datetime

RMMWATCH = [sys.executable, "-m", "rmmwatch.cli"]
KILLS = 10


def _run(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*RMMWATCH, *args], capture_output=True, timeout=300, check=False)


def test_kill_nine_and_restart_loses_nothing_and_counts_nothing_twice(tmp_path: Path) -> None:
    """Ten kill -9s mid-replay, then a clean finish: state == hunt, every alert delivered, one id per episode."""
    data = tmp_path / "stream.ndjson"
    start = format_datetime(time.time_ns() // 100)
    generated = _run(
        "generate",
        "--count",
        "8000",
        "--seed",
        "23",
        "--clock",
        start,
        "--step-ms",
        "1",
        "--max-records",
        "3",
        "--devices",
        "300",
        "--netsupport-ratio",
        "0.02",
        "--netsupport-devices",
        "60",
        "--duplicate-ratio",
        "0.02",
        "--output",
        str(data),
    )
    assert generated.returncode == 0, generated.stderr
    state = tmp_path / "state"
    alerts = tmp_path / "alerts.jsonl"
    command = [
        *RMMWATCH,
        "run",
        "--rule",
        "bundled:netsupport",
        "--source",
        f"file:{data}",
        "--data-dir",
        str(state),
        "--sink",
        f"jsonl:{alerts}",
        "--metrics-port",
        "-1",
        "--batch-max-messages",
        "4",
        "--tick-interval",
        "0.1",
        "--log-level",
        "warning",
    ]
    rng = random.Random(5)
    size = data.stat().st_size
    checkpoint = state / "file-offset.json"

    def committed() -> int:
        try:
            return int(orjson.loads(checkpoint.read_bytes())["offset"])
        except (OSError, ValueError):
            return 0

    # Kill on progress, not on time, so the kills spread over the replay whatever the machine's
    # speed: each one lands a random distance (1/30 to 1/14 of the file) past the previous one.
    kills = 0
    finished = False
    offsets: list[int] = []
    while not finished:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        target = committed() + int(size * rng.uniform(1 / 30, 1 / 14))
        deadline = time.monotonic() + 120
        while process.poll() is None and committed() < target and time.monotonic() < deadline:
            time.sleep(0.005)
        if process.poll() is not None or kills >= KILLS:
            _, stderr = process.communicate(timeout=300)
            assert process.returncode == 0, stderr[-2000:]
            finished = True
            break
        time.sleep(rng.uniform(0, 0.05))  # land inside the next batch, not on the commit
        os.kill(process.pid, signal.SIGKILL)
        process.communicate(timeout=30)
        kills += 1
        offsets.append(committed())
    assert kills >= KILLS, f"only {kills} kills landed before the replay ended"
    assert offsets == sorted(offsets), "the checkpoint never moves backwards"
    assert len(set(offsets)) > 3, "kills landed at different points of the replay"

    at = format_datetime(time.time_ns() // 100)
    netsupport = ("--rule", "bundled:netsupport")
    expected = orjson.loads(_run("hunt", *netsupport, "--now", at, "--format", "json", str(data)).stdout)
    actual = orjson.loads(_run("state", *netsupport, "--data-dir", str(state), "--now", at, "--format", "json").stdout)
    assert expected, "the stream has NetSupport episodes"
    assert actual == expected

    documents = [orjson.loads(line) for line in alerts.read_bytes().splitlines()]
    news = [d for d in documents if d["kind"] == "new"]
    groups_alerted = {(d["group"]["DeviceId"], d["group"]["DeviceName"]) for d in news}
    assert groups_alerted >= {(r["DeviceId"], r["DeviceName"]) for r in expected}
    ids_per_group: dict[tuple[str, str], set[str]] = {}
    for d in news:
        ids_per_group.setdefault((d["group"]["DeviceId"], d["group"]["DeviceName"]), set()).add(d["alert_id"])
    assert all(len(ids) == 1 for ids in ids_per_group.values()), "one alert_id per episode"
    pending = _run("state", *netsupport, "--data-dir", str(state), "--now", at, "--pending")
    assert b"0 alert(s) waiting for delivery" in pending.stderr
