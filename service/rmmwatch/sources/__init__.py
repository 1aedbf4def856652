"""Sources: where raw messages come from (synthetic, file/stdin replay, Kafka, Event Hubs)."""

from __future__ import annotations

import os

from rmmwatch.config import RunConfig
from rmmwatch.metrics import Metrics
from rmmwatch.sources.base import Source
from rmmwatch.synthetic import GeneratorConfig


def open_source(config: RunConfig, metrics: Metrics | None = None) -> Source:
    """The source named by ``config.source``."""
    spec = config.source
    if spec == "synthetic":
        from rmmwatch.sources.synthetic import SyntheticSource  # noqa: PLC0415

        generator = GeneratorConfig(
            seed=config.synthetic_seed,
            devices=config.synthetic_devices,
            netsupport_ratio=config.synthetic_netsupport_ratio,
        )
        return SyntheticSource(
            generator,
            rate=config.synthetic_rate,
            count=config.synthetic_count,
            max_messages=config.batch_max_messages,
        )
    if spec == "stdin" or spec.startswith("file:"):
        from rmmwatch.sources.file import FileSource  # noqa: PLC0415

        path = "-" if spec == "stdin" else spec.removeprefix("file:")
        checkpoint = config.checkpoint
        if checkpoint is None and path != "-" and config.store != "memory":
            checkpoint = os.path.join(config.data_dir, "file-offset.json")
        return FileSource(path, follow=config.follow, checkpoint=checkpoint, max_messages=config.batch_max_messages)
    if spec == "kafka":
        from rmmwatch.kafka_client import settings_from_config  # noqa: PLC0415

        settings = settings_from_config(config)
        topics = config.kafka_topics or ([settings.default_topic] if settings.default_topic else [])
        kafka_source: type[Source]
        if config.kafka_client == "confluent":
            from rmmwatch.sources.kafka_confluent import ConfluentKafkaSource  # noqa: PLC0415

            kafka_source = ConfluentKafkaSource
        else:
            from rmmwatch.sources.kafka import KafkaSource  # noqa: PLC0415

            kafka_source = KafkaSource
        return kafka_source(
            settings,
            topics,
            group_id=config.kafka_group_id,
            start=config.kafka_start,
            max_messages=config.batch_max_messages,
            rebalance_wait_s=config.kafka_rebalance_wait,
            metrics=metrics,
            exclusive=config.store_url().startswith("sqlite:"),
        )
    if spec == "eventhub":
        from rmmwatch.sources.eventhub import EventHubSource, eventhub_settings  # noqa: PLC0415

        return EventHubSource(
            eventhub_settings(config),
            max_messages=config.batch_max_messages,
            metrics=metrics,
            exclusive=config.store_url().startswith("sqlite:"),
        )
    raise ValueError(f"unknown source {spec!r}: use synthetic, stdin, file:PATH, kafka or eventhub")
