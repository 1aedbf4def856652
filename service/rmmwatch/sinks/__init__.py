"""Sinks: where alerts are delivered (stdout, JSON lines file, webhook, Kafka)."""

from __future__ import annotations

import os
from collections.abc import Sequence

from rmmwatch.sinks.base import Sink
from rmmwatch.sinks.deadletter import DeadLetterSink, JsonlDeadLetters, LogOnlyDeadLetters


def open_sinks(
    specs: Sequence[str],
    *,
    webhook_token_env: str = "RMMWATCH_WEBHOOK_TOKEN",
    webhook_timeout_s: float = 5.0,
    webhook_retries: int = 3,
) -> list[Sink]:
    """Sinks for ``stdout``, ``jsonl:PATH``, ``webhook:URL`` specs."""
    sinks: list[Sink] = []
    for spec in specs:
        if spec == "stdout":
            from rmmwatch.sinks.stream import StdoutSink  # noqa: PLC0415

            sinks.append(StdoutSink())
        elif spec.startswith("jsonl:"):
            from rmmwatch.sinks.stream import JsonlSink  # noqa: PLC0415

            sinks.append(JsonlSink(spec.removeprefix("jsonl:")))
        elif spec.startswith("webhook:"):
            from rmmwatch.sinks.webhook import WebhookSink  # noqa: PLC0415

            sinks.append(
                WebhookSink(
                    spec.removeprefix("webhook:"),
                    token=os.environ.get(webhook_token_env) or None,
                    timeout_s=webhook_timeout_s,
                    retries=webhook_retries,
                )
            )
        else:
            raise ValueError(f"unknown sink {spec.split(':', 1)[0]!r}: use stdout, jsonl:PATH or webhook:URL")
    names = [s.name for s in sinks]
    if len(set(names)) != len(names) and names.count("stdout") > 1:
        raise ValueError("stdout is listed twice")
    return sinks


def open_dead_letters(spec: str) -> DeadLetterSink:
    if spec == "log":
        return LogOnlyDeadLetters()
    if spec.startswith("jsonl:"):
        return JsonlDeadLetters(spec.removeprefix("jsonl:"))
    raise ValueError(f"unknown dead-letter destination {spec!r}: use log or jsonl:PATH")
