"""The container image, built from the project's Dockerfile and run for real.

``make test`` builds the image first (``scripts/image/build.sh``: ``docker build`` where a Docker
engine answers, else buildah; here a stand-in base when the official one cannot be pulled) and
names it in ``RMMWATCH_TEST_IMAGE``. Each test runs the image's own ``rmmwatch`` inside a
container of it, as UID 10001, with buildah (chroot isolation, the host's network: its ports are
on the host's loopback): there is no container runtime here (``podman run`` fails), so the
read-only root filesystem is checked as what it protects: after every test, nothing in the
container's filesystem changed outside ``/tmp`` (the state directory is a volume, apart from it).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import service_env
from tests.integration.conftest import RMMWATCH

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
BUILDAH = ["buildah", "--storage-driver", "vfs"]
NOW = "2026-11-21T00:00:00Z"  # a day after the fixtures' events
INPUTS = ["defender-eventhub-message.json", "defender-storage-export.ndjson", "advanced-hunting-rows.ndjson"]

#: What a file's state is: enough to see any write (a write moves the mtime or the size).
Entry = tuple[int, int, int, int, int]


def _buildah(*args: str, timeout: float = 120) -> str:
    result = subprocess.run([*BUILDAH, *args], capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, f"buildah {' '.join(args)}: {result.stderr[-2000:]}"
    return result.stdout.strip()


def _snapshot(root: Path) -> dict[str, Entry]:
    files: dict[str, Entry] = {}
    for directory, subdirectories, names in os.walk(root):
        for name in subdirectories + names:
            path = os.path.join(directory, name)
            info = os.lstat(path)
            if stat.S_ISDIR(info.st_mode):
                # A directory by its entries (each is listed): buildah itself adds and removes a file in /run
                # for each run, which moves the directory's time, not its content.
                files[os.path.relpath(path, root)] = (info.st_mode, info.st_uid, 0, 0, info.st_ino)
            else:
                files[os.path.relpath(path, root)] = (
                    info.st_mode,
                    info.st_uid,
                    info.st_size,
                    info.st_mtime_ns,
                    info.st_ino,
                )
    return files


class Container:
    """A working container of the image, its root filesystem on the host, and what it held at first.

    ``run(ARGS)`` is ``docker run IMAGE ARGS``: the image's entrypoint with ARGS (its CMD without), as its
    own user and working directory; ``exec(ARGV)`` runs another program in it (``id``, the health check)."""

    def __init__(self, image: str) -> None:
        config = json.loads(_buildah("inspect", "--type", "image", image))["Docker"]["config"]
        self.entrypoint: list[str] = config.get("Entrypoint") or []
        self.cmd: list[str] = config.get("Cmd") or []
        self.user: str = config.get("User", "")
        self.healthcheck: list[str] = (config.get("Healthcheck") or {}).get("Test", [])
        self.name = f"rmmwatch-test-{uuid.uuid4().hex[:10]}"
        _buildah("from", "--pull=never", "--name", self.name, image)
        self.root = Path(_buildah("mount", self.name))
        _buildah("copy", "--chown", "10001:10001", self.name, str(FIXTURES), "/tmp/fixtures")
        self.before = _snapshot(self.root)

    def command(self, argv: list[str], env: dict[str, str] | None = None, workdir: str | None = None) -> list[str]:
        options = ["--isolation", "chroot", "--network", "host"]
        options += [f"--env={key}={value}" for key, value in (env or {}).items()]
        options += ["--workingdir", workdir] if workdir else []
        return [*BUILDAH, "run", *options, self.name, "--", *argv]

    def image_argv(self, *args: str) -> list[str]:
        return [*self.entrypoint, *(args or self.cmd)]

    def run(self, *args: str, workdir: str | None = None) -> subprocess.CompletedProcess[bytes]:
        return self.exec(*self.image_argv(*args), workdir=workdir)

    def exec(
        self, *argv: str, env: dict[str, str] | None = None, workdir: str | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(self.command(list(argv), env, workdir), capture_output=True, timeout=120, check=False)

    def written_outside_tmp(self) -> list[str]:
        after = _snapshot(self.root)
        changed = {p for p in self.before.keys() | after.keys() if self.before.get(p) != after.get(p)}
        return sorted(p for p in changed if p != "tmp" and not p.startswith("tmp/"))

    def remove(self) -> None:
        subprocess.run([*BUILDAH, "rm", self.name], capture_output=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def container() -> Iterator[Container]:
    made = Container(service_env("RMMWATCH_TEST_IMAGE"))
    try:
        yield made
    finally:
        made.remove()


@pytest.fixture(autouse=True)
def _nothing_written_outside_tmp(container: Container) -> Iterator[None]:
    yield
    assert container.written_outside_tmp() == [], "the root filesystem must stay read-only"


def _version() -> str:
    match = re.search(r'^version = "(.+)"$', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    assert match is not None
    return match.group(1)


def test_the_image_runs_as_uid_10001_and_says_its_version(container: Container) -> None:
    assert container.user == "10001:10001"
    result = container.run("--version")
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert result.stdout.decode().strip() == f"rmmwatch {_version()}"
    assert container.exec("id", "-u").stdout.decode().strip() == "10001", "the image's own user, not --user"


def test_the_bundled_rules_check_inside_the_image(container: Container) -> None:
    inside = container.run("rules", "check")
    assert inside.returncode == 0, inside.stderr.decode()[-2000:]
    outside = subprocess.run([*RMMWATCH, "rules", "check"], capture_output=True, timeout=120, check=False)
    assert inside.stdout == outside.stdout, "the image bundles the same rules as the source tree"


@pytest.mark.parametrize("name", INPUTS)
@pytest.mark.parametrize(
    ("output", "rules"),
    [("json", ()), ("table", ()), ("csv", ("--rule", "netsupport-rule.yaml"))],
    ids=["json-all-bundled", "table-all-bundled", "csv-the-seed-rule-file"],
)
def test_hunt_inside_equals_hunt_outside_byte_for_byte(
    container: Container, name: str, output: str, rules: tuple[str, ...]
) -> None:
    arguments = ["hunt", "--now", NOW, "--format", output, "--quiet", *rules, name]
    inside = container.run(*arguments, workdir="/tmp/fixtures")
    assert inside.returncode == 0, inside.stderr.decode()[-2000:]
    outside = subprocess.run([*RMMWATCH, *arguments], cwd=FIXTURES, capture_output=True, timeout=120, check=False)
    assert outside.returncode == 0, outside.stderr.decode()[-2000:]
    assert inside.stdout == outside.stdout
    assert b"fin-ws-042.corp.example" in inside.stdout, "the fixtures' NetSupport device was found"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read()


def _service_pid(port: int) -> int:
    """The image's rmmwatch process (UID 10001, this run's port) as the host sees it."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes().split(b"\0")
            owner = (entry / "status").read_text()
        except OSError:
            continue
        if (
            argv[0].endswith(b"/opt/rmmwatch/bin/python")
            and f"RMMWATCH_METRICS_PORT={port}".encode() in environ
            and re.search(r"^Uid:\s+10001\s", owner, re.MULTILINE)
        ):
            return int(entry.name)
    raise LookupError(port)


def test_run_serves_health_and_metrics_and_sigterm_ends_it_with_exit_0(container: Container) -> None:
    """The image's entrypoint and CMD (``run``: the synthetic source, state in the volume, every default the
    image sets), the port moved by its environment variable; the image's HEALTHCHECK passes; SIGTERM to the
    service itself (buildah run kills its child on SIGTERM rather than forwarding it, unlike a runtime)."""
    port = _free_port()
    env = {"RMMWATCH_METRICS_HOST": "127.0.0.1", "RMMWATCH_METRICS_PORT": str(port)}
    process = subprocess.Popen(
        container.command(container.image_argv(), env), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        answers: dict[str, tuple[int, bytes]] = {}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            try:
                answers = {path: _get(f"http://127.0.0.1:{port}{path}") for path in ("/healthz", "/readyz", "/metrics")}
            except OSError:
                time.sleep(0.2)
                continue
            if all(status == 200 for status, _ in answers.values()):
                break
            time.sleep(0.2)
        assert process.poll() is None, process.stderr.read().decode()[-3000:] if process.stderr else ""
        assert {path: status for path, (status, _) in answers.items()} == {
            "/healthz": 200,
            "/readyz": 200,
            "/metrics": 200,
        }
        assert b"rmmwatch_messages_total" in answers["/metrics"][1]
        assert container.healthcheck[:1] == ["CMD"], container.healthcheck
        health = container.exec(*container.healthcheck[1:], env=env)
        assert health.returncode == 0, f"the image's HEALTHCHECK: {health.stderr.decode()[-2000:]}"
        os.kill(_service_pid(port), signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    logs = stderr.decode(errors="replace")
    assert process.returncode == 0, logs[-3000:]
    assert '"event": "stopping"' in logs and '"event": "stopped"' in logs
    assert "Traceback" not in logs
