"""Alerts to a Kafka topic, and dead letters to a Kafka topic.

Alerts: key = the group's DeviceId (so one device's alerts stay ordered on one partition),
value = the JSON payload, headers ``rmmwatch-rule-id``, ``rmmwatch-alert-kind``,
``rmmwatch-alert-id``, ``rmmwatch-revision``; ``acks=all``, and ``send`` returns only when
the brokers confirmed every record (then the outbox marks them sent).

Dead letters: the original bytes, with headers ``rmmwatch-reason``, ``rmmwatch-detail``,
``rmmwatch-record`` and the origin (``rmmwatch-source-topic``, ``-partition``, ``-offset``).
A payload larger than a record may be (the producer's 1 MiB request, or a smaller limit the
topic sets) is cut, with ``rmmwatch-payload-truncated`` = its full size: an oversized poison
message must not hold its partition forever because its dead letter can never be produced.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from contextlib import suppress
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, UnknownTopicOrPartitionError

from rmmwatch.alerts import Alert
from rmmwatch.kafka_settings import KafkaSettings, describe_error
from rmmwatch.logging import get_logger
from rmmwatch.model import DeadLetter
from rmmwatch.sinks.base import SinkError

log = get_logger("rmmwatch.sinks.kafka")

#: A dead letter's payload is cut to this at first: well under the producer's 1 MiB request
#: (headers and the record batch's framing fit beside it) and under the brokers' default
#: message.max.bytes. A topic that takes less halves it, down to ``_MIN_DEAD_LETTER_BYTES``.
DEAD_LETTER_PAYLOAD_BYTES = 512 * 1024
_MIN_DEAD_LETTER_BYTES = 1024


#: A record to produce: key, value, headers.
Record = tuple[bytes | None, bytes, list[tuple[str, bytes]]]


class RecordTooLarge(SinkError):
    """The producer or the brokers refused a record for its size (retrying it unchanged cannot succeed)."""


class _TopicProducer:
    """An acks=all producer of one topic that reports failures as SinkError.

    Both Kafka sinks are such producers: the alert sink and the dead letters each add a ``send``
    that turns their items into records."""

    name = "kafka"
    #: What error messages call this producer.
    what = "producer"

    def __init__(self, settings: KafkaSettings, topic: str) -> None:
        if not topic:
            raise ValueError(f"the kafka {self.what} needs a topic: kafka:TOPIC")
        self.settings = settings
        self.topic = topic
        self._producer: AIOKafkaProducer | None = None

    async def open(self) -> None:
        producer = AIOKafkaProducer(acks="all", linger_ms=5, **self.settings.client_options())
        # The topic is checked now, at start, not at the first alert or dead letter: a missing one
        # (auto-creation off, as on Event Hubs and most managed clusters) is a configuration error
        # the operator should see before anything is consumed, not a batch stuck mid-run.
        problem = "cannot connect"
        try:
            await producer.start()
            problem = f"topic {self.topic!r}"
            await producer.partitions_for(self.topic)
        except KafkaError as exc:
            with suppress(Exception):
                await producer.stop()
            if isinstance(exc, UnknownTopicOrPartitionError):
                raise SinkError(
                    f"kafka {self.what}: topic {self.topic!r} does not exist and the brokers did not create it "
                    f"within {self.settings.request_timeout_ms} ms; create it (or allow auto.create.topics.enable)"
                ) from None
            raise SinkError(f"kafka {self.what}: {problem}: {describe_error(exc)}") from None
        self._producer = producer

    async def produce(self, records: Sequence[Record]) -> None:
        producer = self._producer
        if producer is None:
            raise SinkError(f"kafka {self.what} is not open")
        try:
            futures = [
                await producer.send(self.topic, value=value, key=key, headers=headers)
                for key, value, headers in records
            ]
            await asyncio.gather(*futures)
        except MessageSizeTooLargeError as exc:
            raise RecordTooLarge(f"kafka {self.what} {self.topic}: {describe_error(exc)}") from None
        except KafkaError as exc:
            raise SinkError(f"kafka {self.what} {self.topic}: {describe_error(exc)}") from None

    async def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with suppress(Exception):
                await producer.stop()


class KafkaSink(_TopicProducer):
    """Alerts to ``topic``."""

    what = "sink"

    async def send(self, alerts: Sequence[Alert]) -> None:
        records = []
        for alert in alerts:
            group: dict[str, Any] = orjson.loads(alert.payload).get("group", {})
            device = group.get("DeviceId")
            key = str(device).encode() if device is not None else alert.group_key.encode()
            headers = [
                ("rmmwatch-rule-id", alert.rule_id.encode()),
                ("rmmwatch-alert-kind", alert.kind.encode()),
                ("rmmwatch-alert-id", alert.alert_id.encode()),
                ("rmmwatch-revision", str(alert.revision).encode()),
            ]
            records.append((key, alert.payload, headers))
        await self.produce(records)


class KafkaDeadLetters(_TopicProducer):
    """Undecodable messages to ``topic``, with the reason and origin as headers."""

    what = "dead-letter topic"

    def __init__(self, settings: KafkaSettings, topic: str) -> None:
        super().__init__(settings, topic)
        self.payload_limit = DEAD_LETTER_PAYLOAD_BYTES

    async def send(self, letters: Sequence[DeadLetter]) -> None:
        try:
            await self.produce(self._records(letters))
        except RecordTooLarge:
            if self.payload_limit <= _MIN_DEAD_LETTER_BYTES:
                raise
            # The topic takes less than the producer (its max.message.bytes): cut more on the retry.
            self.payload_limit = max(_MIN_DEAD_LETTER_BYTES, self.payload_limit // 2)
            log.warning("dead_letter_too_large", topic=self.topic, payload_limit=self.payload_limit)
            raise

    def _records(self, letters: Sequence[DeadLetter]) -> list[Record]:
        records: list[Record] = []
        for letter in letters:
            headers = [
                ("rmmwatch-reason", letter.reason.encode()),
                ("rmmwatch-detail", letter.detail.encode()[:1000]),
            ]
            payload = letter.payload
            if len(payload) > self.payload_limit:
                headers.append(("rmmwatch-payload-truncated", str(len(payload)).encode()))
                payload = payload[: self.payload_limit]
            if letter.record is not None:
                headers.append(("rmmwatch-record", str(letter.record).encode()))
            origin = letter.origin
            if origin.get("source") == "kafka":
                headers += [
                    ("rmmwatch-source-topic", str(origin["topic"]).encode()),
                    ("rmmwatch-source-partition", str(origin["partition"]).encode()),
                    ("rmmwatch-source-offset", str(origin["offset"]).encode()),
                ]
            else:
                headers.append(("rmmwatch-origin", orjson.dumps(origin)))
            records.append((None, payload, headers))
        return records
