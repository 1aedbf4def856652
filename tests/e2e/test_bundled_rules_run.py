"""``run`` with every bundled rule over the three tables: the state equals ``hunt``, and every rule alerts.

The input is the positive vectors of ``tests/unit/test_bundled_rules.py`` (process, network and
certificate records, each in its table's envelope), dated a minute ago; the SQLite store keeps each rule's
groups (``AccountName``, ``InitiatingProcessFileName`` or ``Signer`` beside the device) and string sets.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import orjson

from rmmwatch.kql.datetimes import TICKS_PER_MINUTE, format_datetime
from tests.unit.test_bundled_rules import ALL, BY_NAME, VECTORS, envelope

RMMWATCH = [sys.executable, "-m", "rmmwatch.cli"]


def _rmmwatch(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*RMMWATCH, *args], capture_output=True, timeout=300, check=False)


def test_run_with_every_bundled_rule_over_three_tables_equals_hunt(tmp_path: Path) -> None:
    """Default rules (all of them): one alert per row, state == hunt, and every bundled rule has a row."""
    stamp = format_datetime(time.time_ns() // 100 - TICKS_PER_MINUTE)
    lines = [
        envelope(BY_NAME[name].query.table, {**vector, "Timestamp": stamp})
        for name, (positives, _) in VECTORS.items()
        for vector in positives
    ]
    data = tmp_path / "mixed.ndjson"
    data.write_bytes(b"\n".join(lines) + b"\n")
    alerts = tmp_path / "alerts.jsonl"
    ran = _rmmwatch(
        "run", "--source", f"file:{data}", "--data-dir", str(tmp_path / "state"), "--sink", f"jsonl:{alerts}",
        "--metrics-port", "-1", "--log-level", "warning",
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-2000:]
    at = format_datetime(time.time_ns() // 100)
    state = _rmmwatch("state", "--data-dir", str(tmp_path / "state"), "--now", at, "--format", "json")
    hunted = _rmmwatch("hunt", "--now", at, "--format", "json", "--quiet", str(data))
    assert state.returncode == hunted.returncode == 0
    expected = orjson.loads(hunted.stdout)
    assert orjson.loads(state.stdout) == expected
    assert {row["RuleId"] for row in expected} == {rule.id for rule in ALL}
    news = [orjson.loads(line) for line in alerts.read_bytes().splitlines()]
    assert len(news) == len(expected)
    assert {d["kind"] for d in news} == {"new"}
