"""``rmmwatch run`` delivering to a webhook that misbehaves (a real misbehaving HTTP server on 127.0.0.1).

End to end through the CLI: a redirecting or garbage-answering endpoint is a counted delivery
failure (``rmmwatch_sink_failures_total{sink="webhook"}``), never a traceback; the detector keeps
running, the alert stays pending in the store (``rmmwatch state --pending``) and is delivered
once the endpoint recovers; the bearer token never reaches another host. Credentials in the
webhook URL stop the detector at start (exit 2) without being printed.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import envelope, row
from tests.hostile_http import HostileEndpoint
from tests.integration.conftest import RMMWATCH, DetectorFactory, wait_until

TOKEN = "hostile-t0ken-f0r-the-origin-only"


@pytest.fixture
def thief() -> Iterator[HostileEndpoint]:
    """Another host a redirect points at: it must never see a connection."""
    endpoint = HostileEndpoint("ok")
    yield endpoint
    endpoint.close()


@pytest.fixture
def endpoint(thief: HostileEndpoint) -> Iterator[HostileEndpoint]:
    server = HostileEndpoint("ok", redirect_to=f"{thief.origin}/steal?session=xyz")
    yield server
    server.close()


def _pending(data_dir: Path) -> str:
    """``rmmwatch state --pending``'s report line (stderr)."""
    result = subprocess.run(
        [*RMMWATCH, "state", "--data-dir", str(data_dir), "--pending", "--format", "json"],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stderr.decode()


@pytest.mark.parametrize("behaviour", ["redirect:301", "garbage_status"])
def test_a_hostile_webhook_is_a_counted_failure_and_the_alert_waits_for_it(
    tmp_path: Path, detectors: DetectorFactory, endpoint: HostileEndpoint, thief: HostileEndpoint, behaviour: str
) -> None:
    """Redirect or garbage: no traceback, the detector runs on, the alert stays pending, the
    failure is counted, the other host sees nothing; when the endpoint recovers the alert is
    delivered (with the token, to the origin) and SIGTERM exits 0."""
    endpoint.behaviour = behaviour
    data = tmp_path / "stream.ndjson"
    data.write_bytes(envelope(row(ticks=time.time_ns() // 100)) + b"\n")
    state = tmp_path / "state"
    detector = detectors(
        "--source",
        f"file:{data}",
        "--follow",
        "--data-dir",
        str(state),
        "--sink",
        f"webhook:{endpoint.url}",
        "--webhook-retries",
        "0",
        "--webhook-timeout",
        "2",
        "--tick-interval",
        "0.2",
        env={"RMMWATCH_WEBHOOK_TOKEN": TOKEN},
    )
    wait_until(lambda: detector.metric("rmmwatch_sink_failures_total", 'sink="webhook"') >= 1, 60, "a sink failure")
    assert detector.process.poll() is None, detector.logs()[-3000:]
    assert "1 alert(s) waiting for delivery" in _pending(state)
    assert thief.connections == 0 and thief.requests == []
    assert endpoint.requests[0].headers["authorization"] == f"Bearer {TOKEN}"

    endpoint.behaviour = "ok"
    wait_until(lambda: "0 alert(s) waiting" in _pending(state), 90, "the alert delivered once the endpoint recovers")
    assert detector.stop() == 0
    bodies = endpoint.bodies()
    assert len(bodies) >= 2 and len(set(bodies)) == 1, "the same alert, byte for byte, retried until delivered"
    assert thief.connections == 0
    logs = detector.logs()
    assert "Traceback" not in logs
    assert TOKEN not in logs
    assert '"sink_failed"' in logs
    if behaviour.startswith("redirect"):
        assert f"HTTP 301 redirect to 127.0.0.1:{thief.port} not followed" in logs
        assert "steal" not in logs and "session=xyz" not in logs
    else:
        assert "malformed reply" in logs


def test_credentials_in_the_webhook_url_stop_the_start_without_printing_them(tmp_path: Path) -> None:
    """``webhook:http://user:password@host/``: exit 2 with a configuration error naming neither."""
    data = tmp_path / "stream.ndjson"
    data.write_bytes(envelope(row(ticks=time.time_ns() // 100)) + b"\n")
    result = subprocess.run(
        [
            *RMMWATCH,
            "run",
            "--source",
            f"file:{data}",
            "--data-dir",
            str(tmp_path / "state"),
            "--sink",
            "webhook:http://alice:pa55-w0rd@127.0.0.1:9/alerts",
            "--metrics-port",
            "-1",
        ],
        capture_output=True,
        timeout=120,
        check=False,
        env={**os.environ},
    )
    stderr = result.stderr.decode(errors="replace")
    assert result.returncode == 2, stderr[-3000:]
    assert "credentials" in stderr
    assert "pa55-w0rd" not in stderr and "alice" not in stderr and "Traceback" not in stderr


def test_a_finished_replay_exits_within_the_shutdown_timeout_while_the_webhook_hangs(tmp_path: Path) -> None:
    """A file replay ends while the webhook accepts and never answers: ``run`` used to wait out each delivery's own
    deadline (51.5 s with ``--shutdown-timeout 3``); it exits 1 within the timeout (plus start-up and the bounded
    closes) and the alert stays in the outbox for the next run."""
    endpoint = HostileEndpoint("hang")
    try:
        data = tmp_path / "replay.ndjson"
        data.write_bytes(envelope(row(ticks=time.time_ns() // 100)) + b"\n")
        state = tmp_path / "state"
        started = time.monotonic()
        result = subprocess.run(
            [
                *RMMWATCH,
                "run",
                "--source",
                f"file:{data}",
                "--data-dir",
                str(state),
                "--sink",
                f"webhook:{endpoint.url}",
                "--shutdown-timeout",
                "3",
                "--metrics-port",
                "-1",
            ],
            capture_output=True,
            timeout=180,
            check=False,
        )
        elapsed = time.monotonic() - started
    finally:
        endpoint.close()
    logs = result.stderr.decode(errors="replace")
    assert result.returncode == 1, logs[-3000:]
    assert elapsed < 20, f"{elapsed:.1f} s to exit with --shutdown-timeout 3"
    assert endpoint.requests, "the webhook was called"
    assert "1 alert(s) waiting for delivery" in _pending(state)
    assert "Traceback" not in logs
