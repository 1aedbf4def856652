"""Stores that cannot be used, and disks that fill up, through ``rmmwatch run`` and ``rmmwatch state``.

* A damaged or lost sqlite store stops ``run`` and ``state`` at once: exit 1, the file and what
  to do, no traceback, never the rows that could be read.
* A full disk loses nothing: the store write fails with SQLite's own reason (not "cannot
  rollback - no transaction is active"), is retried, and the run completes once space is
  freed with the state equal to ``hunt``; a file source's checkpoint on a full disk is a failed
  commit, retried with backoff, never an ``OSError`` traceback. The disk is a real, small
  tmpfs mounted for the test (the tests run as root, as CI does) and unmounted after it.
* A Redis store that refuses our password or TLS stops the detector (exit 1) naming the store,
  not the password; ``--redis-ca-file`` with a ``redis://`` URL is a configuration error (exit 2).
"""

from __future__ import annotations

import asyncio
import datetime
import errno
import ipaddress
import os
import shutil
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
import redis as redis_py
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from rmmwatch.kql.datetimes import format_datetime
from tests.helpers import envelope, row
from tests.integration.conftest import RMMWATCH, DetectorFactory, free_port, wait_until
from tests.unit.test_store_sqlite import _made_store, _pages_of, _scribble


def _cli(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*RMMWATCH, *args], capture_output=True, timeout=timeout_s, check=False)


def _text(result: subprocess.CompletedProcess[bytes]) -> str:
    return result.stderr.decode(errors="replace")


# -- a damaged or lost sqlite store -------------------------------------------------------------


@pytest.fixture
def made_store(tmp_path: Path) -> Path:
    """A data directory holding a sqlite store with 300 open episodes."""
    data_dir = tmp_path / "state"
    data_dir.mkdir()
    asyncio.run(_made_store(data_dir / "rmmwatch.db"))
    return data_dir


def _damage(data_dir: Path, how: str) -> None:
    db = data_dir / "rmmwatch.db"
    if how == "garbage in the middle":
        pages = _pages_of(db)
        _scribble(db, pages[len(pages) // 2 : len(pages) // 2 + 4])
    elif how == "damaged header":
        with open(db, "r+b") as handle:
            handle.write(b"\x00garbage where the SQLite header was\x00" * 2)
    elif how == "0 bytes":
        db.write_bytes(b"")
    else:
        raise ValueError(how)


@pytest.mark.parametrize("how", ["garbage in the middle", "damaged header", "0 bytes"])
def test_state_on_a_damaged_store_exits_1_with_the_reason_and_no_rows(made_store: Path, how: str) -> None:
    """``rmmwatch state`` refuses a damaged store: exit 1, the file and the way out, no rows printed."""
    _damage(made_store, how)
    result = _cli("state", "--data-dir", str(made_store), "--format", "json", "--pending")
    stderr = _text(result)
    assert result.returncode == 1, stderr[-3000:]
    assert result.stdout == b"", "no partial answer"
    assert str(made_store / "rmmwatch.db") in stderr and "backup" in stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize("how", ["garbage in the middle", "damaged header", "0 bytes"])
def test_run_on_a_damaged_store_stops_at_start(tmp_path: Path, made_store: Path, how: str) -> None:
    """``rmmwatch run`` refuses a damaged store at start: exit 1 (not retried forever), the reason, no traceback."""
    _damage(made_store, how)
    data = tmp_path / "in.ndjson"
    data.write_bytes(envelope(row(ticks=time.time_ns() // 100)) + b"\n")
    result = _cli(
        "run",
        "--source",
        f"file:{data}",
        "--data-dir",
        str(made_store),
        "--sink",
        f"jsonl:{tmp_path / 'alerts.jsonl'}",
        "--metrics-port",
        "-1",
        timeout_s=60,
    )
    stderr = _text(result)
    assert result.returncode == 1, stderr[-3000:]
    assert "Traceback" not in stderr and "store_unavailable" not in stderr
    assert str(made_store / "rmmwatch.db") in stderr
    assert ("corrupt" in stderr) if how != "0 bytes" else ("rmmwatch.db.created" in stderr)
    assert not (tmp_path / "alerts.jsonl").exists() or not (tmp_path / "alerts.jsonl").read_bytes()


def test_corruption_found_while_running_stops_the_detector_instead_of_retrying_forever(
    tmp_path: Path, detectors: DetectorFactory
) -> None:
    """The store file damaged under a running detector: the next tick meets it, and the detector
    stops with exit 1 and the reason (not "store_unavailable" retried on every tick, forever)."""
    data = tmp_path / "in.ndjson"
    data.write_bytes(b"".join(envelope(row(device=f"c-{i}", ticks=time.time_ns() // 100)) + b"\n" for i in range(50)))
    alerts = tmp_path / "alerts.jsonl"
    state = tmp_path / "state"
    detector = detectors(
        "--source", f"file:{data}", "--follow", "--data-dir", str(state), "--sink", f"jsonl:{alerts}",
        "--tick-interval", "0.2",
    )  # fmt: skip
    wait_until(lambda: alerts.exists() and len(alerts.read_bytes().splitlines()) == 50, 60, "the alerts")
    db = state / "rmmwatch.db"
    other = sqlite3.connect(db, isolation_level=None, timeout=30)
    try:
        wait_until(lambda: other.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0, 30, "a checkpoint")
        _scribble(db, _pages_of(db, except_tables=("sqlite_schema", "meta")))
        # Another writer changes the WAL: the detector's connection drops its page cache and reads the file.
        other.execute("INSERT OR REPLACE INTO meta VALUES ('poke', '1')")
    finally:
        other.close()
    assert detector.process.wait(timeout=60) == 1, detector.logs()[-3000:]
    logs = detector.logs()
    assert str(db) in logs and "corrupt" in logs and "Traceback" not in logs
    assert "store_unavailable" not in logs


# -- a full disk ------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs mounted at a fresh directory, unmounted after the test."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0755", "tmpfs", str(mount_point)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.fail(f"cannot mount a small tmpfs (the disk-full tests need root): {mounted.stderr!r}", pytrace=False)
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)], capture_output=True, check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], capture_output=True, check=False)


def _fill(directory: Path) -> Path:
    """A file taking every free byte of ``directory``'s filesystem."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as handle:
        for size in (65536, 512, 1):
            while True:
                try:
                    handle.write(b"\0" * size)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    return filler


def _launches(count: int, first: int) -> bytes:
    """``count`` NetSupport launches on distinct devices (one new alert each), now, with long command lines."""
    now = time.time_ns() // 100
    return b"".join(
        envelope(row(device=f"full-{first + i}", ticks=now, command="x" * 1500)) + b"\n" for i in range(count)
    )


def test_a_full_disk_under_the_sqlite_store_loses_nothing_and_says_why(
    tmp_path: Path, small_disk: Path, detectors: DetectorFactory
) -> None:
    """The store's disk fills while running: the apply fails with SQLite's reason ("database or disk
    is full"), never "cannot rollback"; it is retried, and once space is freed every alert is
    delivered and the state equals hunt's answer."""
    data = tmp_path / "in.ndjson"
    data.write_bytes(_launches(1, 0))
    alerts = tmp_path / "alerts.jsonl"
    detector = detectors(
        "--source",
        f"file:{data}",
        "--follow",
        "--checkpoint",
        str(tmp_path / "offset.json"),  # only the store is on the small disk
        "--data-dir",
        str(small_disk / "state"),
        "--sink",
        f"jsonl:{alerts}",
        "--tick-interval",
        "0.2",
    )
    wait_until(lambda: alerts.exists() and len(alerts.read_bytes().splitlines()) == 1, 60, "the first alert")
    filler = _fill(small_disk)
    with open(data, "ab") as handle:
        handle.write(_launches(400, 1))
    wait_until(lambda: "database or disk is full" in detector.logs(), 60, "the store to hit the full disk")
    assert detector.process.poll() is None, detector.logs()[-3000:]
    filler.unlink()
    wait_until(lambda: len(alerts.read_bytes().splitlines()) >= 401, 120, "every alert once space is freed")
    assert detector.stop() == 0, detector.logs()[-3000:]
    logs = detector.logs()
    assert "cannot rollback" not in logs and "Traceback" not in logs
    assert '"store_unavailable"' in logs
    at = format_datetime(time.time_ns() // 100)
    state = _cli("state", "--data-dir", str(small_disk / "state"), "--now", at, "--format", "json")
    hunted = _cli("hunt", "--now", at, "--format", "json", str(data))
    assert state.returncode == hunted.returncode == 0, _text(state)
    assert len(orjson.loads(hunted.stdout)) == 401
    assert orjson.loads(state.stdout) == orjson.loads(hunted.stdout)
    news = [orjson.loads(line) for line in alerts.read_bytes().splitlines()]
    assert len({d["alert_id"] for d in news if d["kind"] == "new"}) == 401


def test_a_checkpoint_on_a_full_disk_is_retried_not_a_traceback(
    tmp_path: Path, small_disk: Path, detectors: DetectorFactory
) -> None:
    """``--checkpoint`` on a full disk: a failed commit logged with its cause and retried with backoff;
    the detector keeps running, and the checkpoint is written once space is freed."""
    filler = _fill(small_disk)
    data = tmp_path / "in.ndjson"
    data.write_bytes(_launches(3, 0))
    alerts = tmp_path / "alerts.jsonl"
    checkpoint = small_disk / "offset.json"
    detector = detectors(
        "--source",
        f"file:{data}",
        "--follow",
        "--checkpoint",
        str(checkpoint),
        "--data-dir",
        str(tmp_path / "state"),
        "--sink",
        f"jsonl:{alerts}",
        "--tick-interval",
        "0.2",
    )
    wait_until(lambda: "No space left on device" in detector.logs(), 60, "the checkpoint write to fail")
    assert detector.process.poll() is None, detector.logs()[-3000:]
    assert '"commit_failed"' in detector.logs()
    wait_until(lambda: "next try in" in detector.logs(), 60, "a retry held back by the backoff")
    filler.unlink()
    wait_until(checkpoint.exists, 120, "the checkpoint written once space is freed")
    assert orjson.loads(checkpoint.read_bytes())["offset"] == data.stat().st_size
    assert detector.stop() == 0, detector.logs()[-3000:]
    assert "Traceback" not in detector.logs()
    assert len(alerts.read_bytes().splitlines()) == 3


# -- a redis store that refuses us ----------------------------------------------------------------


@dataclass
class PrivateRedis:
    """A private redis-server on a free loopback port (password or TLS), stopped after the test."""

    port: int
    process: subprocess.Popen[bytes]
    tls_ca: Path | None = None

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls_ca else 'redis'}://127.0.0.1:{self.port}/0"


def _start_redis(directory: Path, *extra: str, tls_ca: Path | None = None, password: str | None = None) -> PrivateRedis:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed: run scripts/services/all.sh start (or make test)", pytrace=False)
    port = free_port()
    plain = ["--port", "0", "--tls-port", str(port)] if tls_ca else ["--port", str(port)]
    process = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", *plain, "--dir", str(directory), "--save", "", *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = PrivateRedis(port, process, tls_ca)

    def answers() -> bool:
        client = redis_py.Redis(
            host="127.0.0.1",
            port=port,
            password=password,
            ssl=tls_ca is not None,
            ssl_ca_certs=str(tls_ca) if tls_ca else None,
            socket_timeout=2,
        )
        try:
            return bool(client.ping())
        except redis_py.RedisError:
            return False
        finally:
            client.close()

    wait_until(answers, 20, "the private redis-server to answer")
    return server


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[Callable[..., PrivateRedis]]:
    started: list[PrivateRedis] = []

    def start(*extra: str, tls_ca: Path | None = None, password: str | None = None) -> PrivateRedis:
        directory = tmp_path / f"redis-{len(started)}"
        directory.mkdir()
        server = _start_redis(directory, *extra, tls_ca=tls_ca, password=password)
        started.append(server)
        return server

    yield start
    for server in started:
        if server.process.poll() is None:
            server.process.terminate()
            server.process.wait(timeout=30)


def _certificate_authority(name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
        .sign(key, hashes.SHA256())
    )
    return certificate, key


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


@pytest.fixture
def tls_files(tmp_path: Path) -> dict[str, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it, and a second, unrelated CA."""
    ca, ca_key = _certificate_authority("rmmwatch test CA")
    other_ca, _ = _certificate_authority("some other CA")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    files = {name: tmp_path / f"{name}.pem" for name in ("ca", "other_ca", "server", "server_key")}
    files["ca"].write_bytes(_pem(ca))
    files["other_ca"].write_bytes(_pem(other_ca))
    files["server"].write_bytes(_pem(server))
    files["server_key"].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return files


def _run_on_redis(
    tmp_path: Path, store: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """A finite ``rmmwatch run`` over one launch on the given redis store (60 s at most: a refusal is quick)."""
    data = tmp_path / "in.ndjson"
    data.write_bytes(envelope(row(ticks=time.time_ns() // 100)) + b"\n")
    return subprocess.run(
        [
            *RMMWATCH,
            "run",
            "--source",
            f"file:{data}",
            "--store",
            store,
            "--redis-prefix",
            f"t{uuid.uuid4().hex[:8]}",
            "--sink",
            f"jsonl:{tmp_path / 'alerts.jsonl'}",
            "--metrics-port",
            "-1",
            *args,
        ],
        capture_output=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize("given", ["a wrong password", "no password"])
def test_a_redis_store_that_refuses_our_password_stops_the_detector(
    tmp_path: Path, private_redis: Callable[..., PrivateRedis], given: str
) -> None:
    """Wrong or missing password: exit 1 at once naming the store, never the password (not retried forever)."""
    server = private_redis("--requirepass", "the-right-pa55", password="the-right-pa55")
    env = {"RMMWATCH_REDIS_PASSWORD": "a-wr0ng-pa55"} if given == "a wrong password" else {}
    result = _run_on_redis(tmp_path, server.url, env=env)
    stderr = _text(result)
    assert result.returncode == 1, stderr[-3000:]
    assert server.url in stderr and "authentication" in stderr
    assert "a-wr0ng-pa55" not in stderr and "the-right-pa55" not in stderr and "Traceback" not in stderr
    right = _run_on_redis(tmp_path, server.url, env={"RMMWATCH_REDIS_PASSWORD": "the-right-pa55"})
    assert right.returncode == 0, _text(right)[-3000:]


def test_a_redis_store_whose_certificate_our_ca_does_not_sign_stops_the_detector(
    tmp_path: Path, private_redis: Callable[..., PrivateRedis], tls_files: dict[str, Path]
) -> None:
    """rediss:// with a CA file of another CA: exit 1 with the TLS reason; with the right CA it runs."""
    server = private_redis(
        "--tls-cert-file",
        str(tls_files["server"]),
        "--tls-key-file",
        str(tls_files["server_key"]),
        "--tls-ca-cert-file",
        str(tls_files["ca"]),
        "--tls-auth-clients",
        "no",
        tls_ca=tls_files["ca"],
    )
    result = _run_on_redis(tmp_path, server.url, "--redis-ca-file", str(tls_files["other_ca"]))
    stderr = _text(result)
    assert result.returncode == 1, stderr[-3000:]
    assert server.url in stderr and "TLS" in stderr and "CERTIFICATE_VERIFY_FAILED" in stderr
    assert "Traceback" not in stderr
    right = _run_on_redis(tmp_path, server.url, "--redis-ca-file", str(tls_files["ca"]))
    assert right.returncode == 0, _text(right)[-3000:]


def test_a_redis_ca_file_with_a_plain_redis_url_is_a_configuration_error(tmp_path: Path) -> None:
    """``--redis-ca-file`` with ``redis://``: exit 2 naming both (no TypeError traceback)."""
    ca = tmp_path / "ca.pem"
    ca.write_text("not used\n")
    result = _run_on_redis(tmp_path, "redis://127.0.0.1:9/0", "--redis-ca-file", str(ca))
    stderr = _text(result)
    assert result.returncode == 2, stderr[-3000:]
    assert "--redis-ca-file" in stderr and "rediss://" in stderr and "Traceback" not in stderr
