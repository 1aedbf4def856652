"""Sources: where raw messages come from (synthetic, file/stdin replay, Kafka, Event Hubs)."""

from __future__ import annotations

import os

from rmmwatch.config import RunConfig
from rmmwatch.sources.base import Source
from rmmwatch.synthetic import GeneratorConfig


def open_source(config: RunConfig) -> Source:
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
    if spec in ("kafka", "eventhub"):
        raise ValueError(f"the {spec} source is not available in this build yet")
    raise ValueError(f"unknown source {spec!r}: use synthetic, stdin, file:PATH, kafka or eventhub")
