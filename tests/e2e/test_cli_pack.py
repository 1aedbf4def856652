"""Pointing the ``rmmwatch`` command at a rule pack (subprocesses): rules check, hunt, state, run, pack_check.

The pack is tests/fixtures/pack/ (fixtures written for these tests, in the shapes and with the
defect classes of the public RMM pack). It proves: ``rules check DIR`` prints one line per file
and a summary and exits 2 when any file is refused, while a single file keeps the detailed
output; ``--rule`` takes directories and globs in hunt, state and run; an AHQ rule's constant
column is in hunt's and state's rows and in alerts; ``run`` refuses to start on a refused rule
(naming each) unless ``--skip-invalid-rules``, which logs and counts each skipped file; and
``python -m load.pack_check`` reports per kind and maps refusals to the Markdown lines.
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import orjson

from rmmwatch.kql.datetimes import format_datetime
from tests.e2e.test_cli import RMMWATCH, rmmwatch
from tests.helpers import FIXTURES, ndjson, row

PACK = FIXTURES / "pack"
PUBLISHED = PACK / "published"
REFUSED = PACK / "refused"
ACME = PUBLISHED / "AcmeRemote"
REPO = Path(__file__).resolve().parents[2]


def _lines(result: subprocess.CompletedProcess[bytes]) -> list[str]:
    return result.stdout.decode().splitlines()


# -- rules check ---------------------------------------------------------------------------------


def test_rules_check_of_a_directory_prints_one_line_per_file_and_a_summary() -> None:
    """Compiled files with id and table, warnings with file:line:column, the counts; exit 0 when none is refused."""
    result = rmmwatch("rules", "check", str(PUBLISHED))
    assert result.returncode == 0, result.stderr
    lines = _lines(result)
    compiled = [line for line in lines if line.startswith("compiled: ")]
    assert compiled == [  # each line ends with the rule's mode
        f"compiled: {ACME / 'ahq_process.yaml'} {_ahq_id()} DeviceProcessEvents live",
        f"compiled: {ACME / 'rmm_AcmeRemote_createproc.yaml'} 0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0 "
        "DeviceProcessEvents live",
        f"compiled: {ACME / 'rmm_AcmeRemote_filesig.yaml'} 1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d "
        "DeviceFileCertificateInfo live",
        f"compiled: {PUBLISHED / 'BoltDesk' / 'rmm_BoltDesk_createproc.yml'} 2b3c4d5e-6f70-4819-9a2b-3c4d5e6f7081 "
        "DeviceProcessEvents live",
        f"compiled: {PUBLISHED / 'CometView' / 'rmm_CometView_netconn.yaml'} 3c4d5e6f-7081-4a2b-8c3d-4e5f60718293 "
        "DeviceNetworkEvents live",
    ]
    warnings = [line for line in lines if line.startswith("warning: ")]
    assert [w.split(": ")[1] for w in warnings] == [
        f"{ACME / 'rmm_AcmeRemote_createproc.yaml'}:8:5",
        f"{ACME / 'rmm_AcmeRemote_filesig.yaml'}:7:5",
        f"{PUBLISHED / 'CometView' / 'rmm_CometView_netconn.yaml'}:5:5",
        f"{PUBLISHED / 'CometView' / 'rmm_CometView_netconn.yaml'}:17:11",
    ]
    assert lines[-1] == "5 compiled, 0 refused, 3 repaired/warned"


def _ahq_id() -> str:
    from rmmwatch.rules import load_rule_set

    (file,) = [f for f in load_rule_set([str(PUBLISHED)]).files if f.source.relative == "AcmeRemote/ahq_process.yaml"]
    assert file.rule is not None
    return file.rule.id


def test_rules_check_of_a_directory_with_refusals_exits_2_naming_each() -> None:
    """Each refused file is one line ``refused: file:line:column: reason``; the summary counts them; exit 2."""
    result = rmmwatch("rules", "check", str(PACK))
    assert result.returncode == 2
    lines = _lines(result)
    refused = {line.split(": ")[1] for line in lines if line.startswith("refused: ")}
    assert refused == {
        f"{PACK / 'duplicate' / 'second.yaml'}:2:5",
        f"{REFUSED / 'data_types_defect_and_another.yaml'}:8:6",
        f"{REFUSED / 'inline_datatable.yaml'}:4:15",
        f"{REFUSED / 'missing_where.yaml'}:6:5",
        f"{REFUSED / 'network_account_upn.yaml'}:8:7",
        f"{REFUSED / 'not_the_data_types_defect.yaml'}:5:5",
        f"{REFUSED / 'trailing_comma.yaml'}:8:32",
        f"{REFUSED / 'two_operators.yaml'}:13:30",
        f"{REFUSED / 'unclosed_paren.yaml'}:5:11",
    }
    assert lines[-1] == "6 compiled, 9 refused, 5 repaired/warned"


def test_rules_check_takes_a_glob() -> None:
    """A quoted glob (expanded by rmmwatch, not the shell) lists the files it matches."""
    result = rmmwatch("rules", "check", str(PUBLISHED / "*" / "rmm_*_createproc.y*ml"))
    assert result.returncode == 0
    assert [line.split()[1] for line in _lines(result) if line.startswith("compiled: ")] == [
        str(ACME / "rmm_AcmeRemote_createproc.yaml"),
        str(PUBLISHED / "BoltDesk" / "rmm_BoltDesk_createproc.yml"),
    ]


def test_rules_check_of_one_file_keeps_the_detailed_output_and_prints_its_warning() -> None:
    """A single file: what it compiles to on stdout (as before), its repair warning on stderr, exit 0."""
    result = rmmwatch("rules", "check", str(ACME / "rmm_AcmeRemote_createproc.yaml"))
    assert result.returncode == 0
    text = result.stdout.decode()
    assert "group by  DeviceId, DeviceName, AccountUpn" in text
    assert "tactics   CommandAndControl; techniques T1219" in text
    stderr = result.stderr.decode()
    assert (
        f"rmmwatch: warning: {ACME / 'rmm_AcmeRemote_createproc.yaml'}:8:5: invalid YAML repaired in memory" in stderr
    )


def test_rules_check_of_an_ahq_rule_describes_its_constant_column() -> None:
    """The AHQ form's extend after summarize is shown as a constant of every row."""
    result = rmmwatch("rules", "check", str(ACME / "ahq_process.yaml"))
    assert result.returncode == 0
    assert "then      extend rmmProcessName = 'AcmeRemote' (the same in every row)" in result.stdout.decode()


def test_rules_check_of_one_refused_file_exits_2_with_its_position_and_warning() -> None:
    """The refusal on stderr with file:line:column and hint; the repair warning too."""
    path = REFUSED / "two_operators.yaml"
    result = rmmwatch("rules", "check", str(path))
    assert result.returncode == 2
    stderr = result.stderr.decode()
    assert f"rmmwatch: error: {path}:13:30: KQL: two operators in a row" in stderr
    assert f"rmmwatch: warning: {path}:5:5:" in stderr
    assert result.stdout == b""


# -- hunt, state, run with a pack --------------------------------------------------------------------


def _acme_events(now: int) -> bytes:
    return ndjson(
        [
            row(
                device="a", ticks=now - 10_000_000, company="AcmeRemote Inc", ProcessVersionInfoProductName="Acme Agent"
            ),
            row(device="a", ticks=now - 20_000_000, company="AcmeRemote Inc"),
            row(device="b", ticks=now - 30_000_000, company="Contoso"),
        ]
    )


def test_hunt_with_an_ahq_rule_prints_the_constant_column() -> None:
    """hunt's rows end with the extend's column, in json and in the table."""
    now = time.time_ns() // 100
    events = _acme_events(now)
    at = format_datetime(now)
    result = rmmwatch(
        "hunt", "--rule", str(ACME / "ahq_process.yaml"), "--now", at, "--format", "json", "-", stdin=events
    )
    assert result.returncode == 0, result.stderr
    (only,) = orjson.loads(result.stdout)
    assert list(only)[-1] == "rmmProcessName"
    assert (only["DeviceId"], only["Count"], only["rmmProcessName"]) == ("a", 2, "AcmeRemote")
    table = rmmwatch("hunt", "--rule", str(ACME / "ahq_process.yaml"), "--now", at, "-", stdin=events)
    assert table.stdout.decode().splitlines()[0].split()[-1] == "rmmProcessName"


def test_hunt_refuses_a_directory_with_a_refused_rule_naming_each(tmp_path: Path) -> None:
    """hunt (like state) stops with exit 2 when any rule it was given is refused, listing every one."""
    result = rmmwatch("hunt", "--rule", str(REFUSED), "-", stdin=b"")
    assert result.returncode == 2
    stderr = result.stderr.decode()
    assert stderr.count("rmmwatch: error: ") == 9  # 8 refused files and the count
    assert "8 of 8 rule files refused" in stderr


def test_run_over_a_pack_directory_then_state_equals_hunt_with_the_constant_column(tmp_path: Path) -> None:
    """run --rule DIR with sqlite: state prints hunt's rows, the AHQ rule's constant column included."""
    now = time.time_ns() // 100
    data = tmp_path / "events.ndjson"
    data.write_bytes(_acme_events(now))
    alerts = tmp_path / "alerts.jsonl"
    ran = rmmwatch(
        "run", "--rule", str(PUBLISHED), "--source", f"file:{data}", "--data-dir", str(tmp_path / "state"),
        "--sink", f"jsonl:{alerts}", "--metrics-port", "-1", "--tick-interval", "0.2",
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-2000:]
    at = format_datetime(time.time_ns() // 100)
    common = ("--rule", str(PUBLISHED), "--now", at, "--format", "json")
    state = rmmwatch("state", "--data-dir", str(tmp_path / "state"), *common)
    hunted = rmmwatch("hunt", *common, str(data))
    assert state.returncode == hunted.returncode == 0, state.stderr + hunted.stderr
    expected = orjson.loads(hunted.stdout)
    assert orjson.loads(state.stdout) == expected
    ahq = [r for r in expected if r.get("rmmProcessName") == "AcmeRemote"]
    assert [(r["RuleId"], r["DeviceId"], r["Count"]) for r in ahq] == [(_ahq_id(), "a", 2)]
    documents = [orjson.loads(line) for line in alerts.read_bytes().splitlines()]
    assert {d["rule"]["id"] for d in documents} == {_ahq_id(), "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0"}
    (alert,) = [d for d in documents if d["rule"]["id"] == _ahq_id()]
    assert alert["summary"]["rmmProcessName"] == "AcmeRemote"


def test_run_refuses_to_start_on_a_refused_rule_naming_each(tmp_path: Path) -> None:
    """run --rule DIR exits 2 before reading anything, naming every refused file:line:column."""
    result = rmmwatch(
        "run", "--rule", str(PUBLISHED), "--rule", str(REFUSED), "--source", "stdin", "--store", "memory",
        "--metrics-port", "-1",
    )  # fmt: skip
    assert result.returncode == 2
    stderr = result.stderr.decode()
    for position in ("two_operators.yaml:13:30:", "missing_where.yaml:6:5:", "unclosed_paren.yaml:5:11:"):
        assert position in stderr
    assert stderr.count("rmmwatch: error: ") == 10  # 8 files, the count, the way out
    assert "8 of 13 rule files refused" in stderr
    assert "--skip-invalid-rules" in stderr


def test_run_with_skip_invalid_rules_logs_each_skipped_rule_and_runs_the_rest(tmp_path: Path) -> None:
    """Each refused file is logged once (file, line, column, reason); the other rules match and alert."""
    now = time.time_ns() // 100
    data = tmp_path / "events.ndjson"
    data.write_bytes(_acme_events(now))
    alerts = tmp_path / "alerts.jsonl"
    result = rmmwatch(
        "run", "--rule", str(PUBLISHED), "--rule", str(REFUSED), "--skip-invalid-rules", "--source", f"file:{data}",
        "--store", "memory", "--sink", f"jsonl:{alerts}", "--metrics-port", "-1", "--tick-interval", "0.2",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    logs = [orjson.loads(line) for line in result.stderr.splitlines() if line.startswith(b"{")]
    skipped = [entry for entry in logs if entry.get("event") == "rule_skipped"]
    assert sorted((Path(e["file"]).name, e["line"], e["column"], e["reason"]) for e in skipped) == [
        ("data_types_defect_and_another.yaml", 8, 6, "yaml"),
        ("inline_datatable.yaml", 4, 15, "kql"),
        ("missing_where.yaml", 6, 5, "kql"),
        ("network_account_upn.yaml", 8, 7, "kql"),
        ("not_the_data_types_defect.yaml", 5, 5, "yaml"),
        ("trailing_comma.yaml", 8, 32, "kql"),
        ("two_operators.yaml", 13, 30, "kql"),
        ("unclosed_paren.yaml", 5, 11, "kql"),
    ]
    warned = [entry for entry in logs if entry.get("event") == "rule_warning"]
    assert len(warned) == len({(e["file"], e["line"], e["column"]) for e in warned}) == 6
    started = next(entry for entry in logs if entry.get("event") == "started")
    assert len(started["rules"]) == 5
    assert any(orjson.loads(line)["rule"]["id"] == _ahq_id() for line in alerts.read_bytes().splitlines())


def test_run_with_skip_invalid_rules_and_nothing_left_exits_2() -> None:
    """Skipping every rule leaves nothing to run: a configuration error, not an idle service."""
    result = rmmwatch(
        "run", "--rule", str(REFUSED), "--skip-invalid-rules", "--source", "stdin", "--store", "memory",
        "--metrics-port", "-1",
    )  # fmt: skip
    assert result.returncode == 2
    assert b"no rule left to run" in result.stderr


def test_skipped_rules_are_counted_by_reason_on_the_metrics_endpoint(tmp_path: Path) -> None:
    """rmmwatch_rules_skipped_total{reason} counts the skipped files (6 KQL, 2 YAML) while the service runs."""
    command = [
        *RMMWATCH, "run", "--rule", str(PUBLISHED), "--rule", str(REFUSED), "--skip-invalid-rules",
        "--source", "stdin", "--store", "memory", "--metrics-host", "127.0.0.1", "--metrics-port", "0",
    ]  # fmt: skip
    process = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=os.environ.copy()
    )
    stderr = process.stderr
    assert stderr is not None
    lines: queue.Queue[bytes] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in stderr], daemon=True)
    reader.start()
    try:
        port = None
        deadline = time.monotonic() + 60
        while port is None:
            line = lines.get(timeout=max(deadline - time.monotonic(), 0.1))
            if line.startswith(b"{") and orjson.loads(line).get("event") == "http_listening":
                port = orjson.loads(line)["port"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
            text = response.read().decode()
        assert 'rmmwatch_rules_skipped_total{reason="kql"} 6.0' in text
        assert 'rmmwatch_rules_skipped_total{reason="yaml"} 2.0' in text
    finally:
        assert process.stdin is not None
        process.stdin.close()  # stdin's end is the source's end: the service drains and stops
        try:
            code = process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert code == 0


# -- load/pack_check ------------------------------------------------------------------------------


def _pack_check(pack: Path, env: dict[str, str] | None = None) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-m", "load.pack_check", str(pack)],
        capture_output=True,
        timeout=120,
        cwd=REPO,
        env={**os.environ, **(env or {})},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.decode().splitlines()


def test_pack_check_counts_per_kind_and_maps_refusals_to_the_markdown(tmp_path: Path) -> None:
    """YAML rules per kind, AHQ blocks per section, prose and empty blocks apart, refusals at the .md's line."""
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    lines = _pack_check(PUBLISHED, {"TMPDIR": str(temporary)})
    assert lines[:11] == [
        f"Sentinel rules (*.yaml, *.yml) under {PUBLISHED}, as published:",
        "  createproc             2 of   2 compile",
        "  filesig                1 of   1 compile",
        "  netconn                1 of   1 compile",
        "  other                  1 of   1 compile",
        "AHQ blocks (RMM_AHQ_*.md), each given verbatim as a rule's query:",
        "  Create Process         1 of   2 compile",
        "  File Signature         1 of   1 compile",
        "  Network Connection     1 of   2 compile",
        "  not queries (empty or prose), skipped: 2",
        f"    {PUBLISHED / 'BoltDesk' / 'RMM_AHQ_BoltDesk.md'}:18: (File Signature) ''",
    ]
    refused = lines[lines.index("refused: 2") + 1 : lines.index("refused: 2") + 3]
    assert [line.split(": ")[0].strip() for line in refused] == [
        f"{ACME / 'RMM_AHQ_AcmeRemote.md'}:50:5",
        f"{PUBLISHED / 'BoltDesk' / 'RMM_AHQ_BoltDesk.md'}:8:9",
    ]
    assert "'AccountUpn'; did you mean 'InitiatingProcessAccountUpn'?" in refused[0]
    assert "unclosed '('" in refused[1]
    assert f"  {PUBLISHED / 'CometView' / 'RMM_AHQ_CometView.md'}:10:9: KQL: adjacent string literals" in "\n".join(
        lines
    )
    assert "repaired in memory: 3 file(s) with 'dataTypes:' indented like '- connectorId:'" in lines
    assert list(temporary.iterdir()) == [], "nothing of the pack is left behind"


def test_pack_check_positions_hold_for_crlf_files(tmp_path: Path) -> None:
    """The published pack's files are CRLF: the same counts and the same line:column."""
    copy = tmp_path / "pack"
    shutil.copytree(PUBLISHED, copy)
    for path in copy.rglob("*"):
        if path.is_file():
            path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    lf = [line.replace(str(PUBLISHED), "PACK") for line in _pack_check(PUBLISHED)]
    crlf = [line.replace(str(copy), "PACK") for line in _pack_check(copy)]
    assert crlf == lf
