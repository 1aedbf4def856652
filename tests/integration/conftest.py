"""Real services for integration tests: Apache Kafka, Redis, Azurite on 127.0.0.1.

``make test`` starts them with ``scripts/services/all.sh`` and exports their addresses
(``RMMWATCH_TEST_*``). A test that needs a service whose address is missing FAILS: it is
never skipped, so a CI run without its services cannot pass by accident.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import service_env

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
RMMWATCH = [sys.executable, "-m", "rmmwatch.cli"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed test shows the tail of its last detectors' logs, with the stacks of those still running."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    factory = getattr(item, "funcargs", {}).get("detectors")
    if report.when != "call" or not report.failed or not isinstance(factory, DetectorFactory):
        return
    recent = list(enumerate(factory.started))[-3:]
    running = [d for _, d in recent if d.process.poll() is None]
    for detector in running:  # a stall's diagnosis: thread stacks (SIGUSR1), asyncio tasks (SIGUSR2)
        for sig in (signal.SIGUSR1, signal.SIGUSR2):
            with contextlib.suppress(OSError):
                os.kill(detector.process.pid, sig)
    if running:
        time.sleep(1.0)
    for index, detector in recent:
        state = detector.process.poll()
        size = 20000 if state is None else 4000
        text = detector.logs()[-size:] if detector.log.exists() else "(no log)"
        report.sections.append((f"detector {index} (exit {state}) log tail", text))


@pytest.fixture
def kafka_bootstrap() -> str:
    return service_env("RMMWATCH_TEST_KAFKA_BOOTSTRAP")


@pytest.fixture
def topic_name() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Detector:
    """One ``rmmwatch run`` subprocess with its metrics port."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError as exc:
            return 0, str(exc)

    def _samples(self, name: str) -> list[str]:
        """The sample lines of a metric in the detector's /metrics now (none if it does not answer)."""
        status, text = self.get("/metrics")
        if status != 200:
            return []
        return [line for line in text.splitlines() if line.startswith((name + "{", name + " "))]

    def metric(self, name: str, labels: str = "") -> float:
        """The sum of a metric's samples whose label text contains ``labels`` (0 if absent)."""
        return sum(float(line.rsplit(" ", 1)[1]) for line in self._samples(name) if labels in line)

    def samples(self, name: str) -> int:
        """How many samples of a metric the detector exports now (0 before a labelled gauge is first set)."""
        return len(self._samples(name))

    def ready(self) -> bool:
        return self.get("/readyz")[0] == 200

    def stop(self, timeout_s: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise

    def kill(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def logs(self) -> str:
        return self.log.read_text(errors="replace")


class DetectorFactory:
    """Starts detector subprocesses and makes sure none outlives its test."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.started: list[Detector] = []

    def __call__(self, *args: str, env: dict[str, str] | None = None) -> Detector:
        port = free_port()
        log = self.tmp_path / f"detector-{len(self.started)}.log"
        handle = open(log, "wb")  # noqa: SIM115  (closed when the process ends)
        process = subprocess.Popen(
            [*RMMWATCH, "run", "--metrics-port", str(port), "--metrics-host", "127.0.0.1", *args],
            stdout=subprocess.DEVNULL,
            stderr=handle,
            env={**os.environ, **(env or {})},
        )
        detector = Detector(process, port, log)
        self.started.append(detector)
        return detector

    def cleanup(self) -> None:
        for detector in self.started:
            if detector.process.poll() is None:
                detector.process.kill()
                detector.process.wait()


@pytest.fixture
def detectors(tmp_path: Path) -> Iterator[DetectorFactory]:
    factory = DetectorFactory(tmp_path)
    yield factory
    factory.cleanup()


def wait_until(predicate: object, timeout_s: float, what: str, interval_s: float = 0.1) -> None:
    """Poll ``predicate()`` until true; fail with ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(interval_s)
    pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what}")


def run_async(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def rmmwatch(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*RMMWATCH, *args], capture_output=True, timeout=300, check=False)


def kafka_script(*args: str) -> None:
    """Drive scripts/services/kafka.sh (stop/start/restart) for fault tests."""
    subprocess.run([str(REPO / "scripts/services/kafka.sh"), *args], check=True, timeout=180, stdout=subprocess.DEVNULL)


def sequence_args(values: Sequence[str]) -> list[str]:
    return list(values)
