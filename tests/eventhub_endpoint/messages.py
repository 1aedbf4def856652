"""AMQP 1.0 message sections as Event Hubs handles them (proton's codec, section by section).

proton's ``Message`` keeps a single body section, while the SDK's ``EventDataBatch`` is one AMQP
message whose body is a sequence of ``data`` sections, each holding a whole encoded event
(message format ``0x80013700``).  So messages are split into their sections here and the bare
message (properties, application properties, body, footer) is kept byte for byte, the way the
service stores it: what a consumer receives is exactly what the producer sent, with the broker's
``x-opt-*`` message annotations merged in (and delivery annotations when the receiver asked for
runtime metrics).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from proton import Data, Described, Message, symbol, ulong

BATCH_MESSAGE_FORMAT: Final = 0x80013700
"""Message format of a batch delivery (``azure.eventhub._pyamqp.message.BatchMessage._code``)."""

HEADER: Final = 0x70
DELIVERY_ANNOTATIONS: Final = 0x71
MESSAGE_ANNOTATIONS: Final = 0x72
PROPERTIES: Final = 0x73
APPLICATION_PROPERTIES: Final = 0x74
DATA: Final = 0x75
AMQP_SEQUENCE: Final = 0x76
AMQP_VALUE: Final = 0x77
FOOTER: Final = 0x78
_KNOWN_SECTIONS: Final = frozenset(range(HEADER, FOOTER + 1))

PARTITION_KEY: Final = symbol("x-opt-partition-key")


@dataclass(frozen=True)
class ParsedMessage:
    """One event's AMQP message, split the way the broker needs it.

    ``header`` is the raw header section (may be empty), ``annotations`` the decoded message
    annotations, ``bare`` the raw properties / application-properties / body / footer sections in
    their original order; ``application_properties`` and ``body`` are decoded views of ``bare``
    (``body`` joins the data sections; it is ``b""`` for an amqp-value or amqp-sequence body).
    """

    header: bytes
    annotations: dict[object, object]
    bare: bytes
    application_properties: dict[str, object]
    body: bytes
    size: int

    @property
    def partition_key(self) -> str | None:
        """The ``x-opt-partition-key`` message annotation the producer set, if any."""
        value = self.annotations.get(PARTITION_KEY)
        return None if value is None else str(value)


def _sections(payload: bytes) -> list[tuple[int, bytes, object]]:
    """Split an encoded message into (section code, raw bytes, decoded section value)."""
    sections: list[tuple[int, bytes, object]] = []
    data = Data()
    position = 0
    while position < len(payload):
        data.clear()
        consumed = data.decode(payload[position:])
        section = data.get_object()
        if not isinstance(section, Described) or not isinstance(section.descriptor, int):
            raise ValueError(f"not an AMQP message section at byte {position}")
        code = int(section.descriptor)
        if code not in _KNOWN_SECTIONS:
            raise ValueError(f"unknown AMQP message section 0x{code:x} at byte {position}")
        value: object = section.value
        if isinstance(value, memoryview):  # proton lends binary values from its own buffer
            value = value.tobytes()
        sections.append((code, payload[position : position + consumed], value))
        position += consumed
    return sections


def parse_message(payload: bytes) -> ParsedMessage:
    """Parse one encoded AMQP message (a single event)."""
    header = b""
    annotations: dict[object, object] = {}
    bare: list[bytes] = []
    application_properties: dict[str, object] = {}
    body: list[bytes] = []
    for code, raw, value in _sections(payload):
        if code == HEADER:
            header = raw
        elif code == MESSAGE_ANNOTATIONS:
            annotations = dict(value) if isinstance(value, Mapping) else {}
        elif code == DELIVERY_ANNOTATIONS:
            continue  # hop-by-hop: never stored nor forwarded
        else:
            bare.append(raw)
            if code == APPLICATION_PROPERTIES and isinstance(value, Mapping):
                application_properties = {str(key): item for key, item in value.items()}
            elif code == DATA and isinstance(value, bytes):
                body.append(value)
    return ParsedMessage(
        header=header,
        annotations=annotations,
        bare=b"".join(bare),
        application_properties=application_properties,
        body=b"".join(body),
        size=len(payload),
    )


def parse_delivery(payload: bytes, message_format: int) -> list[ParsedMessage]:
    """Parse a delivery from a producer into its events.

    A batch delivery (:data:`BATCH_MESSAGE_FORMAT`) carries one encoded event per data section;
    the envelope's ``x-opt-partition-key`` (set by ``create_batch(partition_key=...)``) applies to
    every event that has none of its own.
    """
    if message_format != BATCH_MESSAGE_FORMAT:
        return [parse_message(payload)]
    envelope = parse_message(payload)
    events: list[ParsedMessage] = []
    for code, _raw, value in _sections(envelope.bare):
        if code != DATA or not isinstance(value, bytes):
            continue
        event = parse_message(value)
        if event.partition_key is None and envelope.partition_key is not None:
            event = ParsedMessage(
                header=event.header,
                annotations={**event.annotations, PARTITION_KEY: envelope.partition_key},
                bare=event.bare,
                application_properties=event.application_properties,
                body=event.body,
                size=event.size,
            )
        events.append(event)
    return events


def encode_event(body: bytes, properties: Mapping[str, object] | None, partition_key: str | None) -> bytes:
    """Encode an event the way the SDK's producer does: one data section, optional app properties."""
    message = Message(body=body, properties=dict(properties) if properties else None)
    message.inferred = True  # bytes body -> data section, as EventData(body=bytes) produces
    if partition_key is not None:
        message.annotations = {PARTITION_KEY: partition_key}
    return bytes(message.encode())


def encode_annotations(code: int, annotations: Mapping[Any, Any]) -> bytes:
    """Encode a message- or delivery-annotations section (symbol keys, any AMQP values)."""
    data = Data()
    data.put_object(Described(ulong(code), dict(annotations)))
    return data.encode()
