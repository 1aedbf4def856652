"""Alerts: what they say, how they are identified, and the outbox record that carries them.

An *episode* is a period during which a group's row exists (its window holds at least one
event). Its ``alert_id`` is a UUIDv5 of (rule id, group key, episode start), where the
start is the Timestamp of the event that opened the episode. The same episode gives the
same ``alert_id`` on every replica and after every crash or replay, so sinks and SIEMs
deduplicate on it. Each message about an episode has a ``kind`` (``new``, ``update``,
``end``) and a ``revision`` (0 for ``new``, then 1, 2, ...): ``(alert_id, revision)``
identifies one message, and a re-delivered message is byte-for-byte the same. A shadow rule's
alerts carry ``"mode": "shadow"`` (live ones carry no ``mode``: their documents are unchanged).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from rmmwatch.kql.compiled import render_value
from rmmwatch.kql.datetimes import format_datetime
from rmmwatch.rules import Rule
from rmmwatch.window import render_row

AlertKind = Literal["new", "update", "end"]

#: The namespace of alert ids (a fixed, random UUID: never change it, ids would change).
ALERT_NAMESPACE = uuid.UUID("6f0e7a57-5d2b-4c8e-9a51-3f4d1c2b7e90")

#: Sentinel tactic names to MITRE ATT&CK tactic ids (attack.mitre.org/tactics/enterprise).
MITRE_TACTICS: dict[str, str] = {
    "Reconnaissance": "TA0043",
    "ResourceDevelopment": "TA0042",
    "InitialAccess": "TA0001",
    "Execution": "TA0002",
    "Persistence": "TA0003",
    "PrivilegeEscalation": "TA0004",
    "DefenseEvasion": "TA0005",
    "CredentialAccess": "TA0006",
    "Discovery": "TA0007",
    "LateralMovement": "TA0008",
    "Collection": "TA0009",
    "CommandAndControl": "TA0011",
    "Exfiltration": "TA0010",
    "Impact": "TA0040",
}


def alert_id(rule_id: str, group_key: str, episode_start_ticks: int) -> str:
    """The deterministic id of an episode's alert."""
    return str(uuid.uuid5(ALERT_NAMESPACE, f"{rule_id}\x1f{group_key}\x1f{episode_start_ticks}"))


@dataclass(frozen=True, slots=True)
class Alert:
    """One outbox message: an alert (new), a change to it (update) or its end."""

    alert_id: str
    revision: int
    kind: AlertKind
    rule_id: str
    group_key: str
    created_ticks: int
    event_ticks: int
    seen_ticks: int
    payload: bytes  # the JSON document delivered to sinks, fixed at creation

    @property
    def key(self) -> tuple[str, int]:
        return (self.alert_id, self.revision)

    def document(self) -> dict[str, Any]:
        parsed: dict[str, Any] = orjson.loads(self.payload)
        return parsed


def build_alert(
    *,
    rule: Rule,
    kind: AlertKind,
    group: list[Any],
    group_key: str,
    episode_start_ticks: int,
    revision: int,
    values: list[Any],
    trigger: dict[str, Any] | None,
    event_ticks: int,
    seen_ticks: int,
    now: int,
) -> Alert:
    """Make an outbox alert whose payload carries the summary row, the rule and the times."""
    identifier = alert_id(rule.id, group_key, episode_start_ticks)
    query = rule.query
    if values:
        summary = render_row(query, group, values)
    else:
        # An end alert has no aggregates left; its summary is the group and the row's constants.
        summary = {name: value for name, value in zip(query.group_by, group, strict=True)}
        summary.update((c.name, render_value(c.value, c.type)) for c in query.row_constants)
    document = {
        "alert_id": identifier,
        "revision": revision,
        "kind": kind,
        "rule": {
            "id": rule.id,
            "name": rule.name,
            "severity": rule.severity,
            "tactics": list(rule.tactics),
            "tactic_ids": [MITRE_TACTICS[t] for t in rule.tactics if t in MITRE_TACTICS],
            "techniques": list(rule.techniques),
        },
        "group": {name: summary.get(name) for name in query.group_by},
        "summary": summary,
        "trigger": trigger,
        "episode": {"start": format_datetime(episode_start_ticks)},
        "times": {
            "event": format_datetime(event_ticks),
            "seen": format_datetime(seen_ticks),
            "alerted": format_datetime(now),
        },
    }
    if rule.mode == "shadow":
        # Only shadow alerts carry it: a live alert's bytes stay what they were (re-sends, downstream dedup).
        document["mode"] = "shadow"
    return Alert(
        alert_id=identifier,
        revision=revision,
        kind=kind,
        rule_id=rule.id,
        group_key=group_key,
        created_ticks=now,
        event_ticks=event_ticks,
        seen_ticks=seen_ticks,
        payload=orjson.dumps(document),
    )
