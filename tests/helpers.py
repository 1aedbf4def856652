"""Shared test helpers: event rows in the real Advanced Hunting shape, and the run path."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson

from rmmwatch.events import Detector
from rmmwatch.kql.datetimes import (
    TICKS_PER_DAY,
    TICKS_PER_MINUTE,
    TICKS_PER_SECOND,
    format_datetime,
    parse_datetime,
)
from rmmwatch.model import Match
from rmmwatch.rules import Rule, parse_rule

FIXTURES = Path(__file__).parent / "fixtures"
SEED_RULE = FIXTURES / "netsupport-rule.yaml"

T0 = parse_datetime("2026-11-20T12:00:00Z")
DAY = TICKS_PER_DAY
MINUTE = TICKS_PER_MINUTE
SECOND = TICKS_PER_SECOND
WINDOW = 5 * DAY

_report_ids = itertools.count(50_000)


def row(
    *,
    ticks: int = T0,
    device: str = "dev-1",
    name: str | None = None,
    report: int | None = None,
    company: str = "NetSupport Ltd",
    command: str = '"C:\\ProgramData\\x\\client32.exe" ',
    parent: str = "powershell.exe",
    account: str = "jdoe",
    **extra: Any,
) -> dict[str, Any]:
    """A DeviceProcessEvents row (the Advanced Hunting shape) with the columns rules read."""
    out: dict[str, Any] = {
        "Timestamp": format_datetime(ticks),
        "DeviceId": device,
        "DeviceName": name if name is not None else f"{device}.corp.example",
        "ActionType": "ProcessCreated",
        "FileName": "client32.exe",
        "FolderPath": "C:\\ProgramData\\x\\client32.exe",
        "ProcessVersionInfoCompanyName": company,
        "ProcessCommandLine": command,
        "InitiatingProcessFileName": parent,
        "AccountName": account,
        "ReportId": next(_report_ids) if report is None else report,
    }
    out.update(extra)
    return out


def network_row(
    *,
    ticks: int = T0,
    device: str = "dev-1",
    name: str | None = None,
    report: int | None = None,
    url: str = "relay-17.net.anydesk.com",
    company: str = "AnyDesk Software GmbH",
    product: str = "AnyDesk",
    **extra: Any,
) -> dict[str, Any]:
    """A DeviceNetworkEvents row (the Advanced Hunting shape): a connection by an RMM tool's process."""
    out: dict[str, Any] = {
        "Timestamp": format_datetime(ticks),
        "DeviceId": device,
        "DeviceName": name if name is not None else f"{device}.corp.example",
        "ActionType": "ConnectionSuccess",
        "RemoteIP": "203.0.113.17",
        "RemotePort": 443,
        "RemoteUrl": url,
        "LocalIP": "10.1.2.3",
        "LocalPort": 50123,
        "Protocol": "Tcp",
        "InitiatingProcessFileName": "AnyDesk.exe",
        "InitiatingProcessVersionInfoCompanyName": company,
        "InitiatingProcessVersionInfoProductName": product,
        "InitiatingProcessAccountName": "jdoe",
        "ReportId": next(_report_ids) if report is None else report,
    }
    out.update(extra)
    return out


def certificate_row(
    *,
    ticks: int = T0,
    device: str = "dev-1",
    name: str | None = None,
    report: int | None = None,
    signer: str = "AnyDesk Software GmbH",
    signed: bool | None = True,
    trusted: bool | None = True,
    **extra: Any,
) -> dict[str, Any]:
    """A DeviceFileCertificateInfo row (the Advanced Hunting shape): a file's signature."""
    out: dict[str, Any] = {
        "Timestamp": format_datetime(ticks),
        "DeviceId": device,
        "DeviceName": name if name is not None else f"{device}.corp.example",
        "SHA1": "4f6b1c7e0d2a9b8c3e5f1a0d7c6b5a4e3d2c1b0a",
        "IsSigned": signed,
        "SignatureType": "Embedded",
        "Signer": signer,
        "Issuer": "DigiCert Trusted G4 Code Signing RSA4096 SHA384 2021 CA1",
        "IsTrusted": trusted,
        "IsRootSignerMicrosoft": False,
        "ReportId": next(_report_ids) if report is None else report,
    }
    out.update(extra)
    return out


PROCESS = "AdvancedHunting-DeviceProcessEvents"
NETWORK = "AdvancedHunting-DeviceNetworkEvents"
CERTIFICATE = "AdvancedHunting-DeviceFileCertificateInfo"


def envelope(*rows: dict[str, Any], category: str = PROCESS) -> bytes:
    """An Event Hubs message body holding ``rows`` as records of one table (DeviceProcessEvents by default)."""
    return orjson.dumps({"records": [{"time": r["Timestamp"], "category": category, "properties": r} for r in rows]})


def mixed(*records: tuple[str, dict[str, Any]]) -> bytes:
    """An Event Hubs message body holding (category, row) records of several tables."""
    return orjson.dumps({"records": [{"time": r["Timestamp"], "category": c, "properties": r} for c, r in records]})


def rule(query: str, rule_id: str = "test-rule", exclusions: str = "") -> Rule:
    """A rule of the given KQL text (and optional YAML ``exclusions:`` block)."""
    body = "".join(f"  {line}\n" for line in query.strip().splitlines())
    return parse_rule(f"id: {rule_id}\nname: {rule_id}\nquery: |\n{body}{exclusions}", rule_id)


def matches(detector: Detector, rows: Iterable[dict[str, Any]]) -> list[Match]:
    """Decode+match rows (one message each) the way ``run`` does."""
    result = detector.process([orjson.dumps(r) for r in rows])
    assert not result.problems, result.problems
    return result.matches


def rule_with_alerting(alerting: str, rule_id: str = "test-rule") -> Rule:
    """The seed query with an ``alerting:`` block (YAML text) and a test id."""
    text = SEED_RULE.read_text().replace("id: 54ce8c70-403e-4659-88f7-8bd63a10fdca", f"id: {rule_id}")
    return parse_rule(text + "\nalerting:\n" + alerting, "test")


def seed_rule(rule_id: str | None = None) -> Rule:
    text = SEED_RULE.read_text()
    if rule_id is not None:
        text = text.replace("id: 54ce8c70-403e-4659-88f7-8bd63a10fdca", f"id: {rule_id}")
    return parse_rule(text, str(SEED_RULE))


def ndjson(rows: Sequence[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in rows)


def service_env(name: str) -> str:
    """A real service's address from the environment, or a test FAILURE saying how to start it.

    Never a skip: a run without its services must not pass by accident.
    """
    import pytest

    value = os.environ.get(name)
    if not value:
        pytest.fail(
            f"{name} is not set: start the test services (scripts/services/all.sh start; "
            "set -a; source .services/env) or run `make test`",
            pytrace=False,
        )
    return value
