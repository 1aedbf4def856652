"""The three tables through the ``rmmwatch`` command: generate, run, state and hunt, as users run them.

Proves that a generated stream of process, network and certificate events (RMM stories and near
misses included) replayed by ``run`` with a rule per table leaves a state equal to ``hunt``'s answer
over the same file, with rows of every table, and that each rule's alerts carry the key fields of
its own table (the connection's RemoteUrl and port; the file's Signer and trust).
"""

from __future__ import annotations

import time
from pathlib import Path

import orjson

from rmmwatch.kql.datetimes import format_datetime
from rmmwatch.synthetic import RMM_TOOLS
from tests.e2e.test_cli import rmmwatch

TOOL = RMM_TOOLS[0]  # AnyDesk
QUERIES = {
    "process": f"DeviceProcessEvents\n| where ProcessVersionInfoCompanyName has '{TOOL.company}'",
    "network": f"DeviceNetworkEvents\n| where RemoteUrl has '{TOOL.domain}'",
    "certificate": f"DeviceFileCertificateInfo\n| where Signer has '{TOOL.signer}'",
}


def _rule_files(directory: Path) -> list[str]:
    args: list[str] = []
    for name, query in QUERIES.items():
        path = directory / f"{name}.yaml"
        body = "".join(f"  {line}\n" for line in query.splitlines())
        path.write_text(
            f"id: anydesk-{name}\nname: AnyDesk {name}\nquery: |\n  let Time_start = now(-5d);\n{body}"
            "  | where Timestamp > Time_start\n"
            "  | summarize FirstSeen=min(Timestamp), LastSeen=max(Timestamp), Count=count() by DeviceId, DeviceName\n"
        )
        args += ["--rule", str(path)]
    return args


def test_run_over_three_tables_leaves_the_state_hunt_prints(tmp_path: Path) -> None:
    """generate (three tables, RMM stories), run with a rule per table into SQLite, then state == hunt, with
    rows of every rule; alerts of each rule carry their table's trigger fields."""
    data = tmp_path / "stream.ndjson"
    generated = rmmwatch(
        "generate", "--count", "400", "--seed", "21", "--clock", format_datetime(time.time_ns() // 100),
        "--step-ms", "1", "--max-records", "10", "--rmm-ratio", "0.05", "--rmm-devices", "8",
        "--near-miss-ratio", "0.02", "--output", str(data),
    )  # fmt: skip
    assert generated.returncode == 0, generated.stderr
    rules = _rule_files(tmp_path)
    alerts = tmp_path / "alerts.jsonl"
    state_dir = tmp_path / "state"
    ran = rmmwatch(
        "run", "--source", f"file:{data}", "--data-dir", str(state_dir), "--sink", f"jsonl:{alerts}",
        "--metrics-port", "-1", "--tick-interval", "0.2", *rules,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-2000:]
    at = format_datetime(time.time_ns() // 100)
    state = rmmwatch("state", "--data-dir", str(state_dir), "--now", at, "--format", "json", *rules)
    hunted = rmmwatch("hunt", "--now", at, "--format", "json", "--quiet", str(data), *rules)
    assert state.returncode == hunted.returncode == 0, (state.stderr, hunted.stderr)
    expected = orjson.loads(hunted.stdout)
    assert orjson.loads(state.stdout) == expected
    assert {row["RuleId"] for row in expected} == {f"anydesk-{name}" for name in QUERIES}

    documents = [orjson.loads(line) for line in alerts.read_bytes().splitlines()]
    triggers = {d["rule"]["id"]: d["trigger"] for d in documents if d["kind"] == "new"}
    assert TOOL.domain in triggers["anydesk-network"]["RemoteUrl"].lower()
    assert isinstance(triggers["anydesk-network"]["RemotePort"], int)
    assert "FileName" not in triggers["anydesk-network"]
    assert triggers["anydesk-certificate"]["Signer"] == TOOL.signer
    assert isinstance(triggers["anydesk-certificate"]["IsTrusted"], bool)
    assert triggers["anydesk-process"]["ProcessVersionInfoCompanyName"] == TOOL.company


def test_hunt_table_says_the_table_of_bare_rows(tmp_path: Path) -> None:
    """A bare row that carries only columns several tables share cannot say its table; --table says it."""
    rule = tmp_path / "net.yaml"
    rule.write_text(
        "id: net-rule\nname: net\nquery: |\n  DeviceNetworkEvents\n  | where Timestamp between (ago(5d)..now())\n"
        "  | where InitiatingProcessVersionInfoCompanyName has 'netsupport'\n"
        "  | summarize Count=count() by DeviceId\n"
    )
    shared = {"Timestamp": "2026-11-20T11:00:00Z", "DeviceId": "d1", "DeviceName": "d1.corp", "ReportId": 7,
              "InitiatingProcessVersionInfoCompanyName": "NetSupport Ltd"}  # fmt: skip
    rows = tmp_path / "rows.ndjson"
    rows.write_bytes(orjson.dumps(shared) + b"\n")

    def hunt(*extra: str) -> list[dict[str, object]]:
        result = rmmwatch("hunt", "--rule", str(rule), "--now", "2026-11-20T12:00:00Z", "--format", "json", *extra,
                          str(rows))  # fmt: skip
        assert result.returncode == 0, result.stderr
        return list(orjson.loads(result.stdout))

    assert hunt("--table", "DeviceNetworkEvents") == [{"DeviceId": "d1", "Count": 1}]
    assert hunt("--table", "DeviceProcessEvents") == []
