"""Sinks: where alerts are delivered (stdout, JSON lines file, webhook, Kafka), and dead letters."""

from __future__ import annotations

import os

from rmmwatch.config import RunConfig
from rmmwatch.sinks.base import Sink
from rmmwatch.sinks.deadletter import DeadLetterSink, JsonlDeadLetters, LogOnlyDeadLetters


def open_sinks(config: RunConfig) -> list[Sink]:
    """Sinks for the ``stdout``, ``jsonl:PATH``, ``webhook:URL``, ``kafka:TOPIC`` specs of ``config``."""
    sinks: list[Sink] = []
    for spec in config.sinks:
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
                    token=os.environ.get(config.webhook_token_env) or None,
                    timeout_s=config.webhook_timeout,
                    retries=config.webhook_retries,
                )
            )
        elif spec.startswith("kafka:"):
            from rmmwatch.kafka_client import settings_from_config  # noqa: PLC0415
            from rmmwatch.sinks.kafka import KafkaSink  # noqa: PLC0415

            sinks.append(KafkaSink(settings_from_config(config), spec.removeprefix("kafka:")))
        else:
            raise ValueError(
                f"unknown sink {spec.split(':', 1)[0]!r}: use stdout, jsonl:PATH, webhook:URL or kafka:TOPIC"
            )
    if [s.name for s in sinks].count("stdout") > 1:
        raise ValueError("stdout is listed twice")
    return sinks


def open_dead_letters(config: RunConfig) -> DeadLetterSink:
    """The dead-letter destination: ``log``, ``jsonl:PATH`` or ``kafka:TOPIC``."""
    spec = config.dead_letter
    if spec == "log":
        return LogOnlyDeadLetters()
    if spec.startswith("jsonl:"):
        return JsonlDeadLetters(spec.removeprefix("jsonl:"))
    if spec.startswith("kafka:"):
        from rmmwatch.kafka_client import settings_from_config  # noqa: PLC0415
        from rmmwatch.sinks.kafka import KafkaDeadLetters  # noqa: PLC0415

        return KafkaDeadLetters(settings_from_config(config), spec.removeprefix("kafka:"))
    raise ValueError(f"unknown dead-letter destination {spec!r}: use log, jsonl:PATH or kafka:TOPIC")
