"""What every peer job shares: the NetSupport predicate as a framework user would write it, and the result.

The predicate is the bundled rule written by hand, the way an engineer porting the hunting query to a
stream processor would: the envelope's records of ``AdvancedHunting-DeviceProcessEvents``, ``Timestamp``
within the last 5 days, ``ProcessVersionInfoCompanyName has 'netsupport'`` as a case-insensitive *term*
match (a regular expression: ``netsupport`` not preceded or followed by a letter or digit, which is KQL's
term rule; ``_`` is a delimiter in KQL, so it is one here too), and the rule's five named exclusions
(``=~`` as a lowercase comparison, ``contains`` as a lowercase substring test). The per-device state
is what the query summarizes: Count, FirstSeen, LastSeen and the set of ReportIds. ``Count`` counts events
applied (KQL ``count()`` over a table without duplicate rows: the bench stream has none).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import time
from typing import Any

CATEGORY = "AdvancedHunting-DeviceProcessEvents"
_TERM = re.compile(r"(?<![^\W_])netsupport(?![^\W_])", re.IGNORECASE)
WINDOW = dt.timedelta(days=5)


def _kql_time(value: dt.datetime) -> str:
    """KQL's 7-digit form, which orders like the Timestamps of the stream (compared as text)."""
    return f"{value:%Y-%m-%dT%H:%M:%S}.{value.microsecond:06d}0Z"


class Predicate:
    """The hunting query's filter and exclusions, evaluated on one envelope record."""

    def __init__(self, now: dt.datetime | None = None) -> None:
        end = now or dt.datetime.now(dt.UTC)
        self.start = _kql_time(end - WINDOW)
        self.end = _kql_time(end)

    def match(self, record: dict[str, Any]) -> dict[str, Any] | None:
        """The record's properties if the query keeps it (after exclusions), else None."""
        if record.get("category", CATEGORY) != CATEGORY:
            return None
        row: dict[str, Any] = record.get("properties", record)
        company = row.get("ProcessVersionInfoCompanyName")
        if not isinstance(company, str) or not _TERM.search(company):
            return None
        stamp = row.get("Timestamp")
        if not isinstance(stamp, str) or not self.start <= stamp <= self.end:
            return None
        if excluded(row):
            return None
        return row


def excluded(row: dict[str, Any]) -> bool:
    """The bundled rule's five benign scenarios."""
    parent = (row.get("InitiatingProcessFileName") or "").lower()
    command = (row.get("ProcessCommandLine") or "").lower()
    account = (row.get("AccountName") or "").lower()
    return (
        parent == "schtasks.exe"
        or "schtasks" in command
        or "itsupportuser" in account
        or "remotesupport" in command
        or parent == "gpupdate.exe"
        or "grouppolicy" in command
        or "monitor" in command
        or "report" in command
        or parent == "taskscheduler"
        or "taskscheduler" in command
    )


def project(row: dict[str, Any]) -> dict[str, Any]:
    """What the per-device state needs of a matched event."""
    return {
        "DeviceId": row.get("DeviceId"),
        "DeviceName": row.get("DeviceName"),
        "Timestamp": row["Timestamp"],
        "ReportId": row.get("ReportId"),
    }


def fold(state: dict[str, Any] | None, event: dict[str, Any]) -> dict[str, Any]:
    """The device's summary after ``event``: Count, FirstSeen, LastSeen, the ReportId set (sorted list)."""
    if state is None:
        return {"DeviceName": event["DeviceName"], "Count": 1, "FirstSeen": event["Timestamp"],
                "LastSeen": event["Timestamp"], "Report": [event["ReportId"]]}  # fmt: skip
    reports = state["Report"]
    if event["ReportId"] not in reports:
        reports = sorted([*reports, event["ReportId"]])
    return {
        "DeviceName": state["DeviceName"],
        "Count": state["Count"] + 1,
        "FirstSeen": min(state["FirstSeen"], event["Timestamp"]),
        "LastSeen": max(state["LastSeen"], event["Timestamp"]),
        "Report": reports,
    }


def peak_rss() -> int:
    """This process's peak resident set (VmHWM), bytes."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


class Clock:
    """First-record-to-last-record timing of wall and CPU time (``process_time`` covers every thread)."""

    def __init__(self) -> None:
        self.first = 0.0
        self.cpu_first = 0.0
        self.last = 0.0
        self.cpu_last = 0.0

    def start(self) -> None:
        if not self.first:
            self.first, self.cpu_first = time.perf_counter(), time.process_time()

    def stop(self) -> None:
        self.last, self.cpu_last = time.perf_counter(), time.process_time()


def write_result(path: str, clock: Clock, **fields: Any) -> None:
    """The job's one output: timings, peak RSS and what it computed (written atomically)."""
    result = {
        "seconds": clock.last - clock.first,
        "cpu": clock.cpu_last - clock.cpu_first,
        "peak_rss": peak_rss(),
        **fields,
    }
    temp = f"{path}.tmp"
    with open(temp, "w", encoding="utf-8") as out:
        json.dump(result, out)
    os.replace(temp, path)
