"""A generated stream and the checks every end-to-end test makes: hunt's answer against the state."""

from __future__ import annotations

import time
from pathlib import Path

import orjson

from rmmwatch.kql.datetimes import format_datetime
from tests.integration.conftest import Detector, rmmwatch


def generate_stream(path: Path, count: int, seed: int, **ratios: float) -> list[bytes]:
    args = ["generate", "--count", str(count), "--seed", str(seed), "--clock", format_datetime(time.time_ns() // 100),
            "--step-ms", "1", "--max-records", "8", "--devices", "400", "--netsupport-devices", "40",
            "--netsupport-ratio", str(ratios.get("netsupport", 0.01))]  # fmt: skip
    for name in ("duplicate", "malformed", "late", "future"):
        if name in ratios:
            args += [f"--{name}-ratio", str(ratios[name])]
    result = rmmwatch(*args, "--output", str(path))
    assert result.returncode == 0, result.stderr
    return path.read_bytes().splitlines()


def hunt_and_state(stream: Path, data_dir: Path) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    at = format_datetime(time.time_ns() // 100)
    netsupport = ("--rule", "bundled:netsupport")  # the streams' known episodes are NetSupport's
    hunted = rmmwatch("hunt", *netsupport, "--now", at, "--format", "json", "--quiet", str(stream))
    state = rmmwatch("state", *netsupport, "--data-dir", str(data_dir), "--now", at, "--format", "json")
    assert hunted.returncode == 0, hunted.stderr
    assert state.returncode == 0, state.stderr
    return orjson.loads(hunted.stdout), orjson.loads(state.stdout)


def consumed_everything(detector: object, total: int) -> bool:
    """Every message read, its alerts delivered, and the source's position committed to the end.

    The lag gauge is per partition and set by the source's probe: before the first probe it has no
    samples at all, and its sum of 0 then means nothing (a batch still waiting for its dead letters
    or alerts would pass), so at least one sample must exist."""
    assert isinstance(detector, Detector)
    return (
        detector.metric("rmmwatch_messages_total") >= total
        and detector.metric("rmmwatch_outbox_pending") == 0
        and detector.metric("rmmwatch_source_commits_total") > 0
        and detector.samples("rmmwatch_consumer_lag") > 0
        and detector.metric("rmmwatch_consumer_lag") == 0
    )
