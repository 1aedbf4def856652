"""``rmmwatch run`` options beyond Kafka security, each tried through the command (subprocesses) on real services.

Sources (``--source stdin``, ``--checkpoint``), rules and input (``--no-exclusions``, ``--max-message-bytes`` with a
``jsonl`` dead letter, the synthetic source's options, ``--shutdown-timeout``), state (``--sqlite-synchronous``; the
TLS redis-server of ``scripts/services/redis.sh`` with ``rediss://``, ``--redis-ca-file``, an ACL user restricted
to a key prefix, ``--redis-password`` and its ``_FILE``), the alert policy driven by ``run``'s tick (a throttled
``update``, then ``end``), sinks (the webhook's token variable, retries and timeout against a local HTTP receiver;
stdout), ``--max-pending-alerts`` and its bound, operations (``--log-format``, ``--log-level``, ``--metrics-host``,
``--metrics-port`` 0 and -1, ``--prefilter``), and Event Hubs over AMQP with its secrets read from files, its own
consumer group and balanced load balancing (the test endpoint and Azurite).
"""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from pathlib import Path

import orjson
import pytest
import redis
from azure.core.exceptions import ResourceNotFoundError
from azure.eventhub.extensions.checkpointstoreblobaio import BlobCheckpointStore

from rmmwatch.kql.datetimes import TICKS_PER_DAY, TICKS_PER_SECOND, format_datetime, parse_datetime
from rmmwatch.rules import load_rules
from rmmwatch.wiring import store_for
from tests.eventhub_endpoint.server import EventHubEndpoint
from tests.helpers import envelope, row, service_env
from tests.integration.conftest import RMMWATCH, DetectorFactory, free_port, rmmwatch, wait_until
from tests.integration.eventhub_tools import append_round_robin, container_name, namespace
from tests.integration.options_tools import run_config, secret_file, webhook_receiver
from tests.integration.streams import generate_stream, hunt_and_state

BUNDLED_RULE = Path(__file__).resolve().parents[2] / "service/rmmwatch/rules/netsupport.yaml"


def _run(
    *args: str, stdin: bytes | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """``rmmwatch run`` with the NetSupport rule alone unless ``args`` name rules (what these tests count is it)."""
    rules = [] if "--rule" in args else ["--rule", "bundled:netsupport"]
    return subprocess.run([*RMMWATCH, "run", "--metrics-port", "-1", *rules, *args], input=stdin, capture_output=True,
                          timeout=180, env={**os.environ, **(env or {})}, check=False)  # fmt: skip


def _events(stderr: bytes) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in stderr.splitlines() if line.startswith(b"{")]


def _stopped(stderr: bytes) -> dict[str, object]:
    """The ``stopped`` event's counters (batches, messages, matches, alerts)."""
    [stopped] = [e for e in _events(stderr) if e.get("event") == "stopped"]
    return stopped


def _alerting(count: int, *, prefix: str = "dev", age_s: int = 600) -> list[bytes]:
    """``count`` NetSupport launches on ``count`` devices, ``age_s`` old: one ``new`` alert each."""
    now = time.time_ns() // 100
    return [envelope(row(device=f"{prefix}-{i}", ticks=now - age_s * TICKS_PER_SECOND)) for i in range(count)]


def _alerts(path: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


# -- sources ---------------------------------------------------------------------------------------------------------


def test_stdin_source_through_run_equals_hunt(tmp_path: Path) -> None:
    """--source stdin reads NDJSON to its end, exits 0, and leaves the state hunt prints for the same input."""
    stream = tmp_path / "stream.ndjson"
    generate_stream(stream, 300, seed=201, duplicate=0.01)
    data = tmp_path / "state"
    result = _run("--source", "stdin", "--data-dir", str(data), "--sink", f"jsonl:{tmp_path / 'a.jsonl'}",
                  stdin=stream.read_bytes())  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert _stopped(result.stderr)["messages"] == 300
    expected, state = hunt_and_state(stream, data)
    assert expected and state == expected
    assert {d["group"]["DeviceId"] for d in _alerts(tmp_path / "a.jsonl")} == {r["DeviceId"] for r in expected}


def test_checkpoint_option_keeps_the_offset_where_told(tmp_path: Path) -> None:
    """--checkpoint PATH holds the file source's offset: a rerun reads nothing, then only what was appended."""
    source, checkpoint, data = tmp_path / "in.ndjson", tmp_path / "elsewhere" / "offset.json", tmp_path / "data"
    checkpoint.parent.mkdir()
    source.write_bytes(b"".join(m + b"\n" for m in _alerting(7, prefix="first")))
    args = ["--source", f"file:{source}", "--checkpoint", str(checkpoint), "--data-dir", str(data),
            "--sink", f"jsonl:{tmp_path / 'a.jsonl'}"]  # fmt: skip
    first = _run(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    assert _stopped(first.stderr)["messages"] == 7
    assert orjson.loads(checkpoint.read_bytes())["offset"] == source.stat().st_size
    assert not (data / "file-offset.json").exists(), "the default place is not used"
    again = _run(*args)
    assert _stopped(again.stderr)["messages"] == 0
    with source.open("ab") as handle:
        handle.write(b"".join(m + b"\n" for m in _alerting(3, prefix="second")))
    third = _run(*args)
    assert _stopped(third.stderr)["messages"] == 3
    assert sorted(d["group"]["DeviceId"] for d in _alerts(tmp_path / "a.jsonl")) == sorted(
        [f"first-{i}" for i in range(7)] + [f"second-{i}" for i in range(3)]
    )


# -- rules, input limits, the synthetic source, shutdown -------------------------------------------------------------


def test_no_exclusions_alerts_on_what_the_rules_exclude(tmp_path: Path) -> None:
    """A launch the bundled rule excludes ('report' mode) is counted and logged by default, alerted with
    --no-exclusions."""
    source = tmp_path / "in.ndjson"
    now = time.time_ns() // 100
    source.write_bytes(envelope(row(device="dev-x", ticks=now - 600 * TICKS_PER_SECOND,
                                    command='"C:\\ProgramData\\x\\client32.exe" /report')) + b"\n")  # fmt: skip
    kept = _run("--source", f"file:{source}", "--store", "memory", "--sink", f"jsonl:{tmp_path / 'kept.jsonl'}")
    assert kept.returncode == 0, kept.stderr[-3000:]
    assert _alerts(tmp_path / "kept.jsonl") == []
    [excluded] = [e for e in _events(kept.stderr) if e.get("event") == "excluded"]
    assert excluded["exclusion"] == "System monitoring and reporting"
    bare = _run("--source", f"file:{source}", "--store", "memory", "--no-exclusions",
                "--sink", f"jsonl:{tmp_path / 'bare.jsonl'}")  # fmt: skip
    assert bare.returncode == 0, bare.stderr[-3000:]
    assert [d["group"]["DeviceId"] for d in _alerts(tmp_path / "bare.jsonl")] == ["dev-x"]


def test_max_message_bytes_dead_letters_oversized_input_to_a_jsonl_file(tmp_path: Path) -> None:
    """A message above --max-message-bytes is logged as 'oversized' (--dead-letter log, the default) or written to
    --dead-letter jsonl:PATH; a replayed line that long and one JSON object is split into its elements (an Event
    Hubs body with many records would be), and its one record, over the limit too, is kept as its first limit + 1
    bytes (an element is held only up to the limit), with its real size in the detail; the messages around it are
    still read and alerted."""
    small = _alerting(2, prefix="ok")
    large = envelope(row(device="big", ticks=time.time_ns() // 100, AccountName="x" * 3000))
    limit = max(len(m) for m in small) + 100
    assert len(large) > limit
    source, letters = tmp_path / "in.ndjson", tmp_path / "dead.jsonl"
    source.write_bytes(b"".join(m + b"\n" for m in (small[0], large, small[1])))
    logged = _run("--source", f"file:{source}", "--store", "memory", "--max-message-bytes", str(limit))
    assert logged.returncode == 0, logged.stderr[-3000:]  # --dead-letter log, the default: counted and logged
    bad = [e for e in _events(logged.stderr) if e.get("event") == "bad_input"]
    assert [(e["reason"], e["line"]) for e in bad] == [("oversized", 2)]
    result = _run("--source", f"file:{source}", "--store", "memory", "--max-message-bytes", str(limit),
                  "--dead-letter", f"jsonl:{letters}", "--sink", f"jsonl:{tmp_path / 'a.jsonl'}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    [letter] = [orjson.loads(line) for line in letters.read_bytes().splitlines()]
    assert letter["reason"] == "oversized"
    record = large[len(b'{"records":[') : -len(b"]}")]
    assert record.startswith(b'{"time":') and record.endswith(b"}}"), "the record, as the line holds it"
    assert base64.b64decode(letter["payload_base64"]) == record[: limit + 1]
    assert f"{len(record)} bytes is over the {limit}-byte limit" in letter["detail"]
    assert sorted(d["group"]["DeviceId"] for d in _alerts(tmp_path / "a.jsonl")) == ["ok-0", "ok-1"]


def _synthetic(tmp_path: Path, name: str, *options: str) -> tuple[dict[str, object], list[dict[str, object]]]:
    alerts = tmp_path / f"{name}.jsonl"
    result = _run("--source", "synthetic", "--synthetic-count", "400", "--synthetic-rate", "0", "--store", "memory",
                  "--sink", f"jsonl:{alerts}", *options)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return _stopped(result.stderr), _alerts(alerts)


def test_synthetic_options_shape_the_generated_stream(tmp_path: Path) -> None:
    """--synthetic-seed makes the stream repeatable, --synthetic-netsupport-ratio sets how much matches,
    --synthetic-devices bounds the population, --synthetic-count ends the run."""
    base = ("--synthetic-seed", "7", "--synthetic-netsupport-ratio", "0.05", "--synthetic-devices", "3")
    stats, alerts = _synthetic(tmp_path, "a", *base)
    again_stats, again = _synthetic(tmp_path, "b", *base)
    other_stats, _ = _synthetic(tmp_path, "c", "--synthetic-seed", "8", *base[2:])
    _, none = _synthetic(tmp_path, "d", "--synthetic-seed", "7", "--synthetic-netsupport-ratio", "0")

    def counts(stats: dict[str, object]) -> tuple[object, ...]:
        return stats["messages"], stats["matches"], stats["alerts"]

    def devices(alerts: list[dict[str, object]]) -> list[object]:
        return sorted(a["group"]["DeviceId"] for a in alerts)  # type: ignore[index]

    assert stats["messages"] == 400 and stats["matches"] > 0  # type: ignore[operator]
    # Timestamps follow the wall clock; the records do not: same counts, same devices.
    assert (counts(stats), devices(alerts)) == (counts(again_stats), devices(again))
    assert counts(other_stats) != counts(stats)
    assert 1 <= len(set(devices(alerts))) <= 3
    assert none == []


def test_shutdown_timeout_bounds_the_drain_of_undeliverable_alerts(tmp_path: Path) -> None:
    """At the end of a replay whose sink keeps failing, run drains for --shutdown-timeout (1 s, not the default
    25 s), exits 1 and says the alerts stay in the outbox."""
    source = tmp_path / "in.ndjson"
    source.write_bytes(_alerting(1, prefix="stuck")[0] + b"\n")
    with webhook_receiver(default=503) as receiver:
        started = time.monotonic()
        result = _run("--source", f"file:{source}", "--data-dir", str(tmp_path / "data"), "--shutdown-timeout", "1",
                      "--sink", f"webhook:{receiver.url}", "--webhook-retries", "0")  # fmt: skip
        elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stderr[-3000:]
    assert [e["pending"] for e in _events(result.stderr) if e.get("event") == "undelivered_alerts"] == [1]
    assert elapsed < 20, f"took {elapsed:.0f} s: the 25 s default was used"


# -- state -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "pragma"), [("full", 2), ("normal", 1), ("extra", 3)])
async def test_sqlite_synchronous_sets_the_pragma(value: str, pragma: int, tmp_path: Path) -> None:
    """--sqlite-synchronous reaches SQLite: the store's connection runs with that synchronous level."""
    config = run_config("--data-dir", str(tmp_path), "--sqlite-synchronous", value)
    store = store_for(config, load_rules(None))  # as run builds it
    await store.open()
    try:
        assert store._db.execute("PRAGMA synchronous").fetchone()[0] == pragma  # type: ignore[attr-defined]
    finally:
        await store.close()


def test_sqlite_synchronous_extra_through_run(tmp_path: Path) -> None:
    """``extra`` (absent from the README until now) is accepted by run and keeps the state hunt prints."""
    stream = tmp_path / "stream.ndjson"
    generate_stream(stream, 200, seed=211)
    data = tmp_path / "state"
    result = _run("--source", f"file:{stream}", "--data-dir", str(data), "--sqlite-synchronous", "extra",
                  "--sink", f"jsonl:{tmp_path / 'a.jsonl'}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    expected, state = hunt_and_state(stream, data)
    assert expected and state == expected


def _redis_state(url: str, env: dict[str, str]) -> list[dict[str, object]]:
    state = subprocess.run([*RMMWATCH, "state", "--store", url, "--now", format_datetime(time.time_ns() // 100),
                            "--format", "json"], capture_output=True, timeout=120, env={**os.environ, **env},
                           check=False)  # fmt: skip
    assert state.returncode == 0, state.stderr[-3000:]
    return list(orjson.loads(state.stdout))


@pytest.mark.parametrize("who", ["ACL user, password file", "default user, --redis-password"])
def test_redis_over_tls_with_credentials(who: str, tmp_path: Path) -> None:
    """rediss:// with --redis-ca-file, as an ACL user restricted to a key prefix or the default user: state == hunt.

    The ACL user may touch only keys starting with ``{rmmwatch-acl:``: running to the end with it proves the store
    keeps every key under --redis-prefix. No password reaches the logs.
    """
    url, ca = service_env("RMMWATCH_TEST_REDIS_TLS_URL"), service_env("RMMWATCH_TEST_REDIS_TLS_CA")
    admin_password = service_env("RMMWATCH_TEST_REDIS_TLS_PASSWORD")
    acl_user, acl_password = (
        service_env("RMMWATCH_TEST_REDIS_ACL_USERNAME"),
        service_env("RMMWATCH_TEST_REDIS_ACL_PASSWORD"),
    )
    prefix = f"{service_env('RMMWATCH_TEST_REDIS_ACL_PREFIX')}:{uuid.uuid4().hex[:8]}"
    if who.startswith("ACL"):
        args = ["--redis-username", acl_user]
        env = {"RMMWATCH_REDIS_PASSWORD_FILE": secret_file(tmp_path, "redis-password", acl_password)}
        state_env = {"RMMWATCH_REDIS_USERNAME": acl_user, "RMMWATCH_REDIS_PASSWORD": acl_password}
    else:
        args, env = ["--redis-password", admin_password], {}
        state_env = {"RMMWATCH_REDIS_PASSWORD": admin_password}
    stream = tmp_path / "stream.ndjson"
    generate_stream(stream, 300, seed=221, duplicate=0.01)
    common = {"RMMWATCH_REDIS_CA_FILE": ca, "RMMWATCH_REDIS_PREFIX": prefix}
    result = _run("--source", f"file:{stream}", "--store", url, "--redis-ca-file", ca, "--redis-prefix", prefix,
                  *args, "--data-dir", str(tmp_path / "data"), "--sink", f"jsonl:{tmp_path / 'a.jsonl'}",
                  "--tick-interval", "0.2", env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    for secret in (acl_password, admin_password):
        assert secret.encode() not in result.stderr
    hunted = rmmwatch("hunt", "--now", format_datetime(time.time_ns() // 100), "--format", "json", "--quiet",
                      str(stream))  # fmt: skip
    expected = orjson.loads(hunted.stdout)
    assert expected and _redis_state(url, {**common, **state_env}) == expected
    admin = redis.Redis.from_url(url, password=admin_password, ssl_ca_certs=ca)
    try:
        keys = [k.decode() for k in admin.scan_iter(match=f"*{prefix}*", count=1000)]
        assert keys and all(k.startswith("{" + prefix + ":") for k in keys), keys[:5]
    finally:
        admin.close()
    restricted = redis.Redis.from_url(url, username=acl_user, password=acl_password, ssl_ca_certs=ca)
    try:
        with pytest.raises(redis.exceptions.NoPermissionError):
            restricted.set(f"outside-{prefix}", b"1")  # the ACL user really is held to its prefix
    finally:
        restricted.close()


# -- the alert policy, driven by run's tick --------------------------------------------------------------------------


def test_throttled_update_and_end_come_from_runs_tick(tmp_path: Path, detectors: DetectorFactory) -> None:
    """With ``update: throttle`` (4 s) and ``end: true``: new, then the held-back update when the interval ends,
    then end when the last event ages out of the 5-day window, all for one alert_id, delivered by the tick."""
    rule = tmp_path / "rule.yaml"
    rule.write_text(
        BUNDLED_RULE.read_text().replace("updateInterval: 15m\n  end: false", "updateInterval: 4s\n  end: true")
    )
    source, alerts = tmp_path / "in.ndjson", tmp_path / "alerts.jsonl"
    source.write_bytes(b"")
    detector = detectors("--rule", str(rule), "--source", f"file:{source}", "--follow", "--data-dir",
                         str(tmp_path / "data"), "--sink", f"jsonl:{alerts}", "--tick-interval", "0.2")  # fmt: skip
    wait_until(detector.ready, 60, "the detector to be ready")

    def append(report: int) -> int:
        """One launch on dev-tick that leaves the window 9 s from now; its Timestamp in ticks."""
        ticks = time.time_ns() // 100 - 5 * TICKS_PER_DAY + 9 * TICKS_PER_SECOND
        with source.open("ab") as handle:
            handle.write(envelope(row(device="dev-tick", ticks=ticks, report=report)) + b"\n")
        return ticks

    append(1)
    wait_until(lambda: len(_alerts(alerts)) >= 1, 30, "the new alert")
    last = append(2)  # inside the 4 s throttle interval: held back
    wait_until(lambda: len(_alerts(alerts)) >= 3, 60, "the update and the end alerts")
    assert detector.stop() == 0, detector.logs()[-3000:]
    new, update, end = _alerts(alerts)
    assert [(a["kind"], a["revision"]) for a in (new, update, end)] == [("new", 0), ("update", 1), ("end", 2)]
    assert new["alert_id"] == update["alert_id"] == end["alert_id"]
    assert update["summary"]["Count"] == 2  # type: ignore[index]

    def at(alert: dict[str, object], name: str) -> int:
        return parse_datetime(alert["times"][name])  # type: ignore[index]

    # Throttled: written when the interval after 'new' ended, well after the second event was read.
    assert at(update, "alerted") >= at(new, "alerted") + 4 * TICKS_PER_SECOND
    assert at(update, "alerted") > at(update, "seen") + TICKS_PER_SECOND
    # End: once the second event left the window, not before.
    assert at(end, "alerted") >= last + 5 * TICKS_PER_DAY


# -- sinks: the webhook's options, stdout ----------------------------------------------------------------------------


@pytest.mark.parametrize(("retries", "sink_failures"), [(2, 0), (1, 1)])
def test_webhook_token_variable_and_retries_through_run(retries: int, sink_failures: int, tmp_path: Path) -> None:
    """--webhook-token-env names the variable whose token is sent as a bearer; --webhook-retries N makes N+1
    attempts per delivery: two 503s are absorbed with 2 retries, and fail one delivery (retried later) with 1."""
    source = tmp_path / "in.ndjson"
    source.write_bytes(_alerting(1, prefix="hook")[0] + b"\n")
    token = f"tok-{uuid.uuid4().hex}"
    with webhook_receiver(answers=[503, 503]) as receiver:
        result = _run("--source", f"file:{source}", "--store", "memory", "--sink", f"webhook:{receiver.url}",
                      "--webhook-token-env", "MY_HOOK_TOKEN", "--webhook-retries", str(retries),
                      env={"MY_HOOK_TOKEN": token})  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    [document] = receiver.delivered()
    key = f"{document['alert_id']}:{document['revision']}"
    assert receiver.attempts(key) == 3
    assert {r.authorization for r in receiver.requests} == {f"Bearer {token}"}
    events = _events(result.stderr)
    assert sum(1 for e in events if e.get("event") == "sink_failed") == sink_failures
    assert sum(1 for e in events if e.get("event") == "webhook_retry") == 2 - sink_failures
    assert token.encode() not in result.stderr


def test_webhook_timeout_through_run(tmp_path: Path) -> None:
    """--webhook-timeout ends an attempt the endpoint holds: the retry is answered while the first is still held."""
    source = tmp_path / "in.ndjson"
    source.write_bytes(_alerting(1, prefix="slow")[0] + b"\n")
    with webhook_receiver(answers=["stall"], stall_s=20) as receiver:
        result = _run("--source", f"file:{source}", "--store", "memory", "--sink", f"webhook:{receiver.url}",
                      "--webhook-timeout", "0.5", "--webhook-retries", "1")  # fmt: skip
        held_while_retried = receiver.seen_while_holding
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(receiver.delivered()) == 1
    assert held_while_retried == 1, "the second attempt came before the held one was answered"


def test_stdout_sink_prints_one_alert_per_line() -> None:
    """The default sink, stdout: one JSON alert per line, as many as the run delivered."""
    result = _run("--source", "synthetic", "--synthetic-count", "200", "--synthetic-rate", "0", "--store", "memory",
                  "--synthetic-netsupport-ratio", "0.05", "--synthetic-devices", "20")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    alerts = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert alerts and len(alerts) == _stopped(result.stderr)["alerts"]
    assert {a["kind"] for a in alerts} <= {"new", "update"}


# -- backpressure ----------------------------------------------------------------------------------------------------

#: Batches that may still be applied once the outbox is full (app.py's pipeline): the one whose alerts filled it, up
#: to two more applied with it in one group commit, two queued between the stages, one decoded and waiting for the
#: queue, one prefetched. Measured here: at most 6 (in the --batch-max-messages and limit pairs tried).
IN_FLIGHT_BATCHES = 7


@pytest.mark.parametrize(("limit", "batch", "messages"), [(5, 10, 300), (600, 50, 1700)])
def test_max_pending_alerts_pauses_reading_within_its_bound(
    limit: int, batch: int, messages: int, tmp_path: Path, detectors: DetectorFactory
) -> None:
    """While the sink fails, reading stops once --max-pending-alerts wait: the outbox holds at most that many minus
    one plus IN_FLIGHT_BATCHES batches' alerts (one alert per message here); when the sink recovers, all go."""
    source = tmp_path / "in.ndjson"
    source.write_bytes(b"".join(m + b"\n" for m in _alerting(messages, prefix="bp")))
    bound = limit - 1 + IN_FLIGHT_BATCHES * batch
    with webhook_receiver(default=503) as receiver:
        detector = detectors("--source", f"file:{source}", "--data-dir", str(tmp_path / "data"),
                             "--sink", f"webhook:{receiver.url}", "--webhook-retries", "0",
                             "--max-pending-alerts", str(limit), "--batch-max-messages", str(batch),
                             "--tick-interval", "0.2")  # fmt: skip
        wait_until(lambda: detector.metric("rmmwatch_outbox_alerts_total") >= limit, 60, "the outbox to fill")
        time.sleep(2)  # a reader that does not pause reads on meanwhile (here: everything, in well under 2 s)
        created, read = detector.metric("rmmwatch_outbox_alerts_total"), detector.metric("rmmwatch_messages_total")
        assert limit <= created <= bound, (created, bound)
        assert read < messages
        receiver.default = 200
        wait_until(lambda: detector.process.poll() is not None, 120, "the replay to finish once the sink recovers")
    assert detector.process.returncode == 0, detector.logs()[-3000:]
    assert len({f"{d['alert_id']}" for d in receiver.delivered()}) == messages


# -- operations ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_log_format(fmt: str) -> None:
    """--log-format json writes one JSON object per line; console writes readable lines, none of them JSON."""
    result = _run("--source", "synthetic", "--synthetic-count", "20", "--synthetic-rate", "0", "--store", "memory",
                  "--log-format", fmt)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stderr.decode().splitlines() if line.strip()]
    assert any("started" in line for line in lines)
    parsed = []
    for line in lines:
        try:
            parsed.append(isinstance(orjson.loads(line), dict))
        except orjson.JSONDecodeError:
            parsed.append(False)
    assert all(parsed) if fmt == "json" else not any(parsed), lines[:5]


def _status(url: str) -> int | str:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.URLError as exc:
        return str(exc.reason)
    except OSError as exc:
        return str(exc)


def test_metrics_host_is_the_address_served(tmp_path: Path) -> None:
    """--metrics-host 127.0.0.2 serves /healthz, /readyz, /metrics there and nothing on 127.0.0.1."""
    port = free_port()
    log = tmp_path / "detector.log"
    with open(log, "wb") as handle:
        process = subprocess.Popen([*RMMWATCH, "run", "--source", "synthetic", "--store", "memory",
                                    "--metrics-host", "127.0.0.2", "--metrics-port", str(port)],
                                   stdout=subprocess.DEVNULL, stderr=handle)  # fmt: skip
    try:
        wait_until(lambda: _status(f"http://127.0.0.2:{port}/healthz") == 200, 60, "/healthz on 127.0.0.2")
        assert _status(f"http://127.0.0.2:{port}/metrics") == 200
        assert _status(f"http://127.0.0.1:{port}/healthz") != 200
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, log.read_text()[-3000:]


def test_prefilter_engines_give_the_same_alerts(tmp_path: Path) -> None:
    """--prefilter auto, hyperscan and python: each engine is the one used, and the alerts are identical."""
    stream = tmp_path / "stream.ndjson"
    generate_stream(stream, 300, seed=231)
    seen: dict[str, list[str]] = {}
    for engine, used in (("auto", "hyperscan"), ("hyperscan", "hyperscan"), ("python", "python")):
        alerts = tmp_path / f"{engine}.jsonl"
        result = _run("--source", f"file:{stream}", "--store", "memory", "--prefilter", engine,
                      "--sink", f"jsonl:{alerts}")  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        [started] = [e for e in _events(result.stderr) if e.get("event") == "started"]
        assert str(started["prefilter"]).startswith(f"{used}: ")
        seen[engine] = sorted(str(d["alert_id"]) for d in _alerts(alerts))
    assert seen["auto"] and seen["auto"] == seen["hyperscan"] == seen["python"]


# -- operations: the metrics port, the log level ---------------------------------------------------------------------


def test_metrics_port_zero_picks_one_and_minus_one_serves_none() -> None:
    """--metrics-port 0 listens on a free port it logs (and serves there); -1 starts no server at all."""
    args = ("--source", "synthetic", "--synthetic-count", "5", "--synthetic-rate", "0", "--store", "memory")
    anywhere = subprocess.run([*RMMWATCH, "run", *args, "--metrics-port", "0", "--metrics-host", "127.0.0.1"],
                              capture_output=True, timeout=120, check=False)  # fmt: skip
    assert anywhere.returncode == 0, anywhere.stderr[-3000:]
    [listening] = [e for e in _events(anywhere.stderr) if e.get("event") == "http_listening"]
    assert isinstance(listening["port"], int) and listening["port"] > 0
    none = _run(*args)  # _run passes --metrics-port -1
    assert none.returncode == 0, none.stderr[-3000:]
    assert not [e for e in _events(none.stderr) if e.get("event") == "http_listening"]


def test_log_level_warning_leaves_out_info_events() -> None:
    """--log-level warning: the info events (started, stopped) are not written; with info they are."""
    args = ("--source", "synthetic", "--synthetic-count", "5", "--synthetic-rate", "0", "--store", "memory")
    events = {}
    for level in ("warning", "info"):
        result = _run(*args, "--log-level", level)
        assert result.returncode == 0, result.stderr[-3000:]
        events[level] = {str(e.get("event")) for e in _events(result.stderr)}
    assert {"started", "stopped"} <= events["info"]
    assert not {"started", "stopped"} & events["warning"]


# -- Event Hubs (AMQP) secrets from files ----------------------------------------------------------------------------


CONSUMER_GROUP = "rmmwatch-options"


def _checkpointed(azurite: str, container: str, endpoint: EventHubEndpoint) -> int:
    """Events covered by the checkpoints of CONSUMER_GROUP (the blob names hold the consumer group)."""

    async def read() -> int:
        async with BlobCheckpointStore.from_connection_string(azurite, container) as store:
            try:
                found = await store.list_checkpoints(namespace(endpoint), endpoint.hub, CONSUMER_GROUP)
            except ResourceNotFoundError:
                return 0
        return sum(int(c["sequence_number"]) + 1 for c in found)

    return asyncio.run(read())


def test_eventhub_secrets_from_files(tmp_path: Path, detectors: DetectorFactory) -> None:
    """RMMWATCH_EVENTHUB_CONNECTION_STRING_FILE and RMMWATCH_EVENTHUB_CHECKPOINT_CONNECTION_STRING_FILE are read:
    the hub is consumed in the --eventhub-consumer-group given (every partition, claimed one per interval with
    --eventhub-load-balancing balanced) and checkpointed under that group in Azurite; neither secret is logged."""
    azurite = service_env("RMMWATCH_TEST_AZURITE_CONNECTION_STRING")
    messages: Sequence[bytes] = _alerting(40, prefix="eh")
    with EventHubEndpoint(hub="defender", partitions=2) as endpoint:
        append_round_robin(endpoint, messages)
        container = container_name()
        env = {
            "RMMWATCH_EVENTHUB_CONNECTION_STRING_FILE": secret_file(tmp_path, "eh", endpoint.connection_string),
            "RMMWATCH_EVENTHUB_CHECKPOINT_CONNECTION_STRING_FILE": secret_file(tmp_path, "blob", azurite),
        }
        detector = detectors("--source", "eventhub", "--eventhub-checkpoint-container", container, "--data-dir",
                             str(tmp_path / "data"), "--sink", f"jsonl:{tmp_path / 'a.jsonl'}",
                             "--eventhub-consumer-group", CONSUMER_GROUP, "--tick-interval", "0.2",
                             "--eventhub-load-balancing", "balanced", "--eventhub-load-balancing-interval", "1",
                             env=env)  # fmt: skip
        wait_until(lambda: _checkpointed(azurite, container, endpoint) == len(messages), 90, "checkpoints")
        assert detector.stop() == 0, detector.logs()[-3000:]
        logs = detector.logs()
        assert endpoint.key not in logs
        assert azurite.split("AccountKey=")[1].split(";")[0] not in logs
    assert len(_alerts(tmp_path / "a.jsonl")) == len(messages)
