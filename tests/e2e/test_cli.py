"""The ``rmmwatch`` command as users run it (subprocesses): hunt, rules check, state, generate, run."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from tests.helpers import FIXTURES, SEED_RULE, T0, envelope, ndjson, row

RMMWATCH = [sys.executable, "-m", "rmmwatch.cli"]
SAMPLES = [
    str(FIXTURES / n)
    for n in ("defender-eventhub-message.json", "defender-storage-export.ndjson", "advanced-hunting-rows.ndjson")
]
NOW = "2026-11-21T00:00:00Z"


def rmmwatch(
    *args: str, stdin: bytes | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*RMMWATCH, *args],
        input=stdin,
        capture_output=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_hunt_prints_the_kql_answer_as_json() -> None:
    """hunt --format json over the three sample shapes: one row, exactly the KQL output."""
    result = rmmwatch("hunt", "--rule", str(SEED_RULE), "--now", NOW, "--format", "json", *SAMPLES)
    assert result.returncode == 0, result.stderr
    assert orjson.loads(result.stdout) == [
        {
            "DeviceId": "9f1c0a6b2e4d8f7a3c5b1e0d9a8c7b6f5e4d3c2b",
            "DeviceName": "fin-ws-042.corp.example",
            "FirstSeen": "2026-11-20T09:14:03.5312209Z",
            "LastSeen": "2026-11-20T09:20:11.0021345Z",
            "Report": [30779, 30811],
            "Count": 2,
        }
    ]


def test_hunt_with_the_bundled_rule_applies_exclusions() -> None:
    """The bundled rule excludes the '/report' launch and says so on stderr; --no-exclusions does not."""
    kept = rmmwatch("hunt", "--rule", "bundled:netsupport", "--now", NOW, "--format", "json", *SAMPLES)
    assert [r["Report"] for r in orjson.loads(kept.stdout)] == [[30779]]
    assert b"System monitoring and reporting: 3" in kept.stderr
    bare = rmmwatch(
        "hunt", "--rule", "bundled:netsupport", "--now", NOW, "--format", "json", "--no-exclusions", *SAMPLES
    )
    assert [r["Report"] for r in orjson.loads(bare.stdout)] == [[30779, 30811]]


def test_hunt_window_is_relative_to_now() -> None:
    """Five days after the first launch only the later one remains; a week later nothing."""
    args = ["hunt", "--rule", str(SEED_RULE), "--format", "json", *SAMPLES]
    edge = rmmwatch(*args, "--now", "2026-11-25T09:14:05Z")
    assert [r["Count"] for r in orjson.loads(edge.stdout)] == [1]
    assert orjson.loads(rmmwatch(*args, "--now", "2026-11-28T00:00:00Z").stdout) == []


@pytest.mark.parametrize("fmt", ["table", "csv"])
def test_hunt_table_and_csv(fmt: str) -> None:
    """The table and CSV renderings carry the same row."""
    result = rmmwatch("hunt", "--rule", str(SEED_RULE), "--now", NOW, "--format", fmt, *SAMPLES)
    assert result.returncode == 0
    text = result.stdout.decode()
    assert "fin-ws-042.corp.example" in text and "2026-11-20T09:20:11.0021345Z" in text
    assert "[30779,30811]" in text


def test_hunt_skips_bad_lines_and_reports_them(tmp_path: Path) -> None:
    """Bad lines are skipped and counted on stderr with their line numbers; exit code 0."""
    path = tmp_path / "mixed.ndjson"
    good = row(ticks=T0)
    path.write_bytes(ndjson([good]) + b"{not json netsupport\n" + ndjson([good | {"ReportId": "x"}]))
    result = rmmwatch("hunt", "--rule", str(SEED_RULE), "--now", "2026-11-20T12:00:00Z", "--format", "json", str(path))
    assert result.returncode == 0
    assert len(orjson.loads(result.stdout)) == 1
    stderr = result.stderr.decode()
    assert "skipped 2 bad" in stderr
    assert f"{path}:2: malformed_json" in stderr
    assert f"{path}:3 record 0: wrong_type" in stderr


def test_hunt_reads_stdin() -> None:
    """- reads NDJSON from stdin."""
    result = rmmwatch(
        "hunt",
        "--rule",
        str(SEED_RULE),
        "--now",
        "2026-11-20T12:00:00Z",
        "--format",
        "json",
        "-",
        stdin=envelope(row(ticks=T0)) + b"\n",
    )
    assert result.returncode == 0, result.stderr
    assert orjson.loads(result.stdout)[0]["Count"] == 1


def test_hunt_unreadable_file_fails(tmp_path: Path) -> None:
    """A missing input file is an error with a non-zero exit code."""
    result = rmmwatch("hunt", str(tmp_path / "nope.ndjson"))
    assert result.returncode == 1
    assert b"cannot open input" in result.stderr


def test_rules_check_prints_the_compiled_rule() -> None:
    """rules check on the published seed: window, predicate, grouping, aggregates, prefilter."""
    result = rmmwatch("rules", "check", str(SEED_RULE))
    assert result.returncode == 0
    text = result.stdout.decode()
    for expected in (
        "Timestamp between (now()-5d .. now()), inclusive",
        "ProcessVersionInfoCompanyName has 'netsupport'",
        "group by  DeviceId, DeviceName",
        "Report = make_set(ReportId)",
        "prefilter 'netsupport'",
    ):
        assert expected in text


@pytest.mark.parametrize(
    ("body", "location", "message"),
    [
        pytest.param(
            "id: x\nname: y\nquery: |\n  DeviceProcessEvents\n  | project FileName\n",
            ":5:5:",
            "unsupported tabular operator 'project'",
            id="KQL error inside the block",
        ),
        pytest.param(
            "id: x\nname: y\nquery: 'DeviceProcessEvents | where Nope has \"a\" | summarize count()'\n",
            ":3:37:",
            "unknown column or name 'Nope'",
            id="KQL error in a quoted scalar",
        ),
        pytest.param("id: x\nname: [y\nquery: q\n", ":3:6:", "invalid YAML", id="malformed YAML"),
        pytest.param("name: y\nquery: q\n", ":1:1:", "missing required key 'id'", id="missing id"),
        pytest.param(
            "id: x\nname: y\nquery: DeviceProcessEvents | summarize count()\nexclusions:\n"
            "  - name: a\n    where: FileNme =~ 'x'\n",
            ":6:12:",
            "did you mean 'FileName'",
            id="unknown column in an exclusion",
        ),
    ],
)
def test_bad_rule_files_name_line_and_column(tmp_path: Path, body: str, location: str, message: str) -> None:
    """A bad rule fails with file:line:column and a message naming the problem (exit 2)."""
    path = tmp_path / "bad.yaml"
    path.write_text(body)
    result = rmmwatch("rules", "check", str(path))
    assert result.returncode == 2
    stderr = result.stderr.decode()
    assert f"{path}{location}" in stderr, stderr
    assert message in stderr


def test_run_refuses_a_bad_rule_at_start(tmp_path: Path) -> None:
    """run stops at once on a bad rule file, with its location, before touching any input."""
    path = tmp_path / "bad.yaml"
    path.write_text("id: x\nname: y\nquery: |\n  DeviceProcessEvents\n  | where X has 'a'\n  | summarize count()\n")
    result = rmmwatch("run", "--rule", str(path), "--store", "memory", "--metrics-port", "-1")
    assert result.returncode == 2
    assert f"{path}:5:11:" in result.stderr.decode()


def test_generate_is_deterministic_with_a_fixed_clock(tmp_path: Path) -> None:
    """generate with --seed and --clock writes the same bytes twice."""
    args = ["generate", "--count", "30", "--seed", "5", "--clock", "2026-11-20T10:00:00Z", "--netsupport-ratio", "0.05"]
    one = rmmwatch(*args, "--output", str(tmp_path / "a.ndjson"))
    two = rmmwatch(*args, "--output", str(tmp_path / "b.ndjson"))
    assert one.returncode == two.returncode == 0
    assert (tmp_path / "a.ndjson").read_bytes() == (tmp_path / "b.ndjson").read_bytes()
    assert len((tmp_path / "a.ndjson").read_bytes().splitlines()) == 30


def test_run_replays_a_file_and_state_equals_hunt(tmp_path: Path) -> None:
    """run over a file with sqlite state ends with the state equal to hunt's answer, alerts in jsonl."""
    data = tmp_path / "stream.ndjson"
    now = time.time_ns() // 100
    from rmmwatch.kql.datetimes import format_datetime

    stamp = format_datetime(now)
    generated = rmmwatch(
        "generate",
        "--count",
        "300",
        "--seed",
        "11",
        "--clock",
        stamp,
        "--step-ms",
        "1",
        "--netsupport-ratio",
        "0.01",
        "--duplicate-ratio",
        "0.01",
        "--future-ratio",
        "0.001",
        "--late-ratio",
        "0.001",
        "--malformed-ratio",
        "0.01",
        "--output",
        str(data),
    )
    assert generated.returncode == 0
    alerts = tmp_path / "alerts.jsonl"
    ran = rmmwatch(
        "run",
        "--rule",
        "bundled:netsupport",
        "--source",
        f"file:{data}",
        "--data-dir",
        str(tmp_path / "state"),
        "--sink",
        f"jsonl:{alerts}",
        "--metrics-port",
        "-1",
        "--tick-interval",
        "0.2",
    )
    assert ran.returncode == 0, ran.stderr[-2000:]
    at = format_datetime(time.time_ns() // 100)
    netsupport = ("--rule", "bundled:netsupport")
    state = rmmwatch("state", *netsupport, "--data-dir", str(tmp_path / "state"), "--now", at, "--format", "json")
    hunted = rmmwatch("hunt", *netsupport, "--now", at, "--format", "json", str(data))
    assert state.returncode == hunted.returncode == 0
    expected = orjson.loads(hunted.stdout)
    assert expected, "the generated stream has NetSupport episodes"
    assert orjson.loads(state.stdout) == expected
    documents = [orjson.loads(line) for line in alerts.read_bytes().splitlines()]
    news = [d for d in documents if d["kind"] == "new"]
    assert len({d["alert_id"] for d in news}) == len(news)
    assert {(d["group"]["DeviceId"], d["group"]["DeviceName"]) for d in news} >= {
        (r["DeviceId"], r["DeviceName"]) for r in expected
    }


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda s: s.name)
def test_run_drains_and_exits_cleanly_on_sigterm(tmp_path: Path, stop_signal: signal.Signals) -> None:
    """SIGTERM (and SIGINT, and SIGHUP until it means "reload") during a followed replay: the loop
    finishes, commits and exits 0."""
    data = tmp_path / "live.ndjson"
    data.write_bytes(envelope(row(ticks=time.time_ns() // 100)) + b"\n")
    alerts = tmp_path / "alerts.jsonl"
    process = subprocess.Popen(
        [
            *RMMWATCH,
            "run",
            "--source",
            f"file:{data}",
            "--follow",
            "--data-dir",
            str(tmp_path / "state"),
            "--sink",
            f"jsonl:{alerts}",
            "--metrics-port",
            "-1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (alerts.exists() and alerts.read_bytes()):
            time.sleep(0.05)
        process.send_signal(stop_signal)
        _, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0, stderr[-2000:]
    assert b'"event": "stopped"' in stderr
    assert (tmp_path / "state" / "file-offset.json").exists()
    assert len(alerts.read_bytes().splitlines()) == 1


def test_second_run_on_the_same_sqlite_is_refused(tmp_path: Path) -> None:
    """Two processes on one sqlite file: the second is refused with an explanation (exit 1)."""
    process = subprocess.Popen(
        [
            *RMMWATCH,
            "run",
            "--data-dir",
            str(tmp_path),
            "--metrics-port",
            "-1",
            "--synthetic-rate",
            "1",
            "--sink",
            f"jsonl:{tmp_path / 'a.jsonl'}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (tmp_path / "rmmwatch.db.lock").exists():
            time.sleep(0.05)
        time.sleep(0.3)
        second = rmmwatch("run", "--data-dir", str(tmp_path), "--metrics-port", "-1")
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
    assert second.returncode == 1
    assert b"single-process" in second.stderr


def test_a_metrics_port_in_use_is_a_clean_configuration_error(tmp_path: Path) -> None:
    """Another process holds the metrics port: exit 2 with the address and the option named, no traceback."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = rmmwatch(
            "run", "--store", "memory", "--synthetic-count", "1", "--metrics-host", "127.0.0.1",
            "--metrics-port", str(port), "--data-dir", str(tmp_path),
        )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"127.0.0.1:{port}".encode() in result.stderr
    assert b"--metrics-port" in result.stderr
    assert b"Traceback" not in result.stderr


def test_redis_cluster_is_refused_until_it_works(tmp_path: Path) -> None:
    """--redis-cluster crashed at the first match on a real Redis Cluster (docs/options.md): refused at start, exit 2,
    before anything is read."""
    result = rmmwatch("run", "--store", "redis://127.0.0.1:9/0", "--redis-cluster", "--synthetic-count", "1",
                      "--metrics-port", "-1", "--data-dir", str(tmp_path))  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert b"--redis-cluster is not supported yet" in result.stderr


# -- no silent loss in hunt and the file source -------------------------------------------------------------


def _hunt_json(path: Path, *extra: str) -> tuple[list[dict[str, object]], str]:
    result = rmmwatch("hunt", "--rule", str(SEED_RULE), "--now", "2026-11-20T12:00:00Z", "--format", "json",
                      *extra, str(path))  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    return orjson.loads(result.stdout), result.stderr.decode()


def _devices(count: int) -> list[dict[str, object]]:
    return [row(ticks=T0 - i, device=f"d{i}") for i in range(count)]


@pytest.mark.parametrize(
    ("name", "encode"),
    [
        ("bom-ndjson", lambda rows: b"\xef\xbb\xbf" + ndjson(rows)),
        ("bom-document", lambda rows: b"\xef\xbb\xbf" + orjson.dumps(rows, option=orjson.OPT_INDENT_2)),
        ("utf16-ndjson", lambda rows: ndjson(rows).decode().replace("\n", "\r\n").encode("utf-16")),
        ("utf16-document", lambda rows: orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode().encode("utf-16")),
        ("large-document", lambda rows: orjson.dumps({"records": [{"category": "AdvancedHunting-DeviceProcessEvents",
                                                                   "properties": r} for r in rows]},
                                                     option=orjson.OPT_INDENT_2)),
    ],
)  # fmt: skip
def test_hunt_reads_every_event_of_an_export_whatever_its_encoding_or_size(
    tmp_path: Path, name: str, encode: object
) -> None:
    """A BOM lost the first event (a pretty-printed one, every event); UTF-16 gave 0 rows and no message; a
    document over 1 MB (an export of 700+ rows) gave 0 rows as 'oversized', exit 0. Every event is counted now."""
    count = 2500 if name == "large-document" else 5
    path = tmp_path / f"{name}.json"
    path.write_bytes(encode(_devices(count)))  # type: ignore[operator]
    if name == "large-document":
        assert path.stat().st_size > 1_048_576
    rows, stderr = _hunt_json(path)
    assert sorted(r["DeviceId"] for r in rows) == sorted(f"d{i}" for i in range(count)), stderr[-1000:]
    assert "skipped" not in stderr


def test_hunt_reports_bad_lines_by_reason_and_strict_reports_those_no_rule_can_match(tmp_path: Path) -> None:
    """Without --strict the prefilter skips, unparsed, lines no rule can match (docs/semantics.md §8); --strict
    parses every line, so every bad one is reported; either way the summary counts them per reason."""
    path = tmp_path / "mixed.ndjson"
    path.write_bytes(ndjson([row(ticks=T0)]) + b"{not json netsupport\n{not json at all\n" + b"[1, 2]\n")
    _, relaxed = _hunt_json(path)
    assert "skipped 1 bad line(s) or record(s) (malformed_json: 1)" in relaxed
    _, strict = _hunt_json(path, "--strict")
    assert "skipped 4 bad line(s) or record(s) (malformed_json: 2, record_not_object: 2)" in strict
    assert f"{path}:3: malformed_json" in strict


def test_run_over_a_finite_file_says_what_it_skipped_by_reason(tmp_path: Path) -> None:
    """The replay's last log line counts the bad input per reason."""
    path = tmp_path / "in.ndjson"
    path.write_bytes(ndjson([row(ticks=time.time_ns() // 100)]) + b"{bad netsupport\n" + b'"netsupport"\n')
    result = rmmwatch("run", "--source", f"file:{path}", "--store", "memory", "--metrics-port", "-1",
                      "--sink", f"jsonl:{tmp_path / 'a.jsonl'}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    stopped = [orjson.loads(line) for line in result.stderr.splitlines() if b'"stopped"' in line][-1]
    assert stopped["bad_input"] == {"malformed_json": 1, "not_object_or_array": 1}


def test_sigterm_stops_a_run_reading_an_idle_stdin(tmp_path: Path) -> None:
    """stdin is a pipe nobody writes to: SIGTERM still ends the run promptly, exit 0. (It logged 'stopped' and
    then hung in the interpreter's exit, waiting for the thread blocked on the pipe.)"""
    read_end, write_end = os.pipe()
    process = subprocess.Popen([*RMMWATCH, "run", "--source", "stdin", "--store", "memory", "--metrics-port", "-1",
                                "--shutdown-timeout", "2"], stdin=read_end, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)  # fmt: skip
    os.close(read_end)
    try:
        deadline = time.monotonic() + 60
        started = False
        assert process.stderr is not None
        while time.monotonic() < deadline and not started:
            line = process.stderr.readline()
            started = b'"started"' in line
        assert started
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        process.kill()
        os.close(write_end)


def test_hunt_does_not_spin_on_an_idle_stdin() -> None:
    """`hunt -` waiting for input sleeps: over 3 s of an idle pipe it uses well under a second of CPU. (It
    polled with a zero timeout: about one CPU second per second.)"""
    read_end, write_end = os.pipe()
    process = subprocess.Popen([*RMMWATCH, "hunt", "--rule", str(SEED_RULE), "-"], stdin=read_end,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    os.close(read_end)
    try:
        time.sleep(1.0)  # interpreter start
        before = _cpu_seconds(process.pid)
        time.sleep(3.0)
        used = _cpu_seconds(process.pid) - before
    finally:
        os.close(write_end)
        process.wait(timeout=30)
    assert used < 1.0, f"{used:.2f} CPU s over 3 s of idle input"


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_run_sends_shadow_alerts_only_to_the_shadow_sink(tmp_path: Path) -> None:
    """One run, a live rule and a shadow one over the same stream: --sink gets only the live rule's alerts,
    --shadow-sink only the shadow rule's (marked "mode": "shadow"), and both rules' state equals hunt's answer."""
    from rmmwatch.kql.datetimes import format_datetime

    data = tmp_path / "stream.ndjson"
    stamp = format_datetime(time.time_ns() // 100)
    generated = rmmwatch(
        "generate", "--count", "300", "--seed", "5", "--clock", stamp, "--step-ms", "1",
        "--netsupport-ratio", "0.02", "--output", str(data),
    )  # fmt: skip
    assert generated.returncode == 0
    trial = tmp_path / "trial"
    trial.mkdir()
    (trial / "copy.yaml").write_text(
        SEED_RULE.read_text().replace("id: 54ce8c70-403e-4659-88f7-8bd63a10fdca", "id: netsupport-trial")
    )
    live, shadow, state_dir = tmp_path / "a.jsonl", tmp_path / "b.jsonl", str(tmp_path / "state")
    listed = rmmwatch("rules", "list", str(SEED_RULE), "--shadow-rule", str(trial))
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.decode().splitlines() == [
        f"{SEED_RULE} live 54ce8c70-403e-4659-88f7-8bd63a10fdca",
        f"{trial / 'copy.yaml'} shadow netsupport-trial",
    ]
    ran = rmmwatch(
        "run", "--rule", str(SEED_RULE), "--shadow-rule", str(trial), "--source", f"file:{data}",
        "--data-dir", state_dir, "--sink", f"jsonl:{live}", "--shadow-sink", f"jsonl:{shadow}",
        "--metrics-port", "-1", "--tick-interval", "0.2",
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-2000:]
    live_docs = [orjson.loads(line) for line in live.read_bytes().splitlines()]
    shadow_docs = [orjson.loads(line) for line in shadow.read_bytes().splitlines()]
    assert live_docs and shadow_docs
    assert {d["rule"]["id"] for d in live_docs} == {"54ce8c70-403e-4659-88f7-8bd63a10fdca"}
    assert all("mode" not in d for d in live_docs)
    assert {d["rule"]["id"] for d in shadow_docs} == {"netsupport-trial"}
    assert {d["mode"] for d in shadow_docs} == {"shadow"}
    # The same events, the same episodes: one alert each way per group.
    assert sorted(d["summary"]["DeviceId"] for d in live_docs) == sorted(d["summary"]["DeviceId"] for d in shadow_docs)
    at = format_datetime(time.time_ns() // 100)
    rules = ("--rule", str(SEED_RULE), "--rule", str(trial))
    state = rmmwatch("state", *rules, "--data-dir", state_dir, "--now", at, "--format", "json")
    hunted = rmmwatch("hunt", *rules, "--now", at, "--format", "json", str(data))
    assert state.returncode == hunted.returncode == 0, state.stderr + hunted.stderr
    expected = orjson.loads(hunted.stdout)
    assert {r["RuleId"] for r in expected} == {"54ce8c70-403e-4659-88f7-8bd63a10fdca", "netsupport-trial"}
    assert orjson.loads(state.stdout) == expected
