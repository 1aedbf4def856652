"""Byte-level glue between proton's AMQP engine and the azure-eventhub ``_pyamqp`` client.

Two things the SDK needs cannot be had through proton's Python API, so this module works on the
raw AMQP 1.0 byte streams (protocol headers and frames, section 2.3 of the AMQP 1.0 spec) of one
client connection:

* :class:`OutgoingNormalizer` (server -> client). proton encodes every performative as a
  described list *without its trailing null fields* (legal AMQP), but ``azure.eventhub._pyamqp``
  indexes performative fields by position without bounds checks: it reads ``open[4]`` and
  ``open[9]``, ``begin[7]``, ``attach[13]``, ``detach[2]``, ``close[0]``, and it takes a transfer's
  payload from ``transfer[11]`` (its frame decoder appends the payload after however many fields
  were sent).  The Event Hubs service (Microsoft.Azure.Amqp) always sends every field, so the
  normalizer pads each performative's list with nulls up to its full field count, exactly as the
  service's encoding looks on the wire.
* :class:`IncomingSniffer` (client -> server). proton's Python binding does not expose a link's
  desired capabilities (the SDK asks for ``com.microsoft:enable-receiver-runtime-metric`` there
  when ``track_last_enqueued_event_properties=True``) nor a delivery's message format (the
  producer sends ``EventDataBatch`` as one delivery of format ``0x80013700``).  The sniffer reads
  both from the attach and transfer frames the client sends, before proton consumes them.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Final

from proton import Array, Data

_PROTOCOL_HEADER_PREFIX: Final = b"AMQP"
_PROTOCOL_HEADER_SIZE: Final = 8
_FRAME_HEADER_SIZE: Final = 8
_AMQP_FRAME: Final = 0
_SASL_FRAME: Final = 1
_NULL: Final = b"\x40"

_ATTACH: Final = 0x12
_TRANSFER: Final = 0x14

# (frame type, performative descriptor code) -> number of fields the AMQP 1.0 spec defines for it.
_FIELD_COUNTS: Final[dict[tuple[int, int], int]] = {
    (_AMQP_FRAME, 0x10): 10,  # open
    (_AMQP_FRAME, 0x11): 8,  # begin
    (_AMQP_FRAME, _ATTACH): 14,  # attach
    (_AMQP_FRAME, 0x13): 11,  # flow
    (_AMQP_FRAME, _TRANSFER): 11,  # transfer
    (_AMQP_FRAME, 0x15): 6,  # disposition
    (_AMQP_FRAME, 0x16): 3,  # detach
    (_AMQP_FRAME, 0x17): 1,  # end
    (_AMQP_FRAME, 0x18): 1,  # close
    (_SASL_FRAME, 0x40): 1,  # sasl-mechanisms
    (_SASL_FRAME, 0x41): 3,  # sasl-init
    (_SASL_FRAME, 0x42): 1,  # sasl-challenge
    (_SASL_FRAME, 0x43): 1,  # sasl-response
    (_SASL_FRAME, 0x44): 2,  # sasl-outcome
}


class _FrameSplitter:
    """Cuts a byte stream into whole units: 8-byte protocol headers and complete frames."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """Append ``data`` and return every unit completed by it, in stream order."""
        self._buffer.extend(data)
        units: list[bytes] = []
        while len(self._buffer) >= _PROTOCOL_HEADER_SIZE:
            if self._buffer[:4] == _PROTOCOL_HEADER_PREFIX:
                size = _PROTOCOL_HEADER_SIZE
            else:
                size = int.from_bytes(self._buffer[:4], "big")
                if size < _FRAME_HEADER_SIZE:
                    raise ValueError(f"malformed AMQP frame size {size}")
            if len(self._buffer) < size:
                break
            units.append(bytes(self._buffer[:size]))
            del self._buffer[:size]
        return units


@dataclass(frozen=True)
class _Performative:
    """Where a frame's performative sits: its descriptor code and its field list's encoding."""

    frame_type: int
    channel: int
    code: int
    body_offset: int  # index of the frame body (after the extended header) in the frame
    list_offset: int  # index of the list constructor, relative to the body
    count: int  # number of fields encoded
    items_offset: int  # index of the first field, relative to the body
    list_end: int  # index just past the list (where a transfer's payload starts), relative to the body


def _performative(frame: bytes) -> _Performative | None:
    """Locate the performative of a frame; ``None`` for heartbeats and anything not recognised."""
    if len(frame) < _FRAME_HEADER_SIZE or frame[:4] == _PROTOCOL_HEADER_PREFIX:
        return None
    body_offset = frame[4] * 4
    body = memoryview(frame)[body_offset:]
    if len(body) < 3 or body[0] != 0x00:
        return None
    if body[1] == 0x53:  # smallulong descriptor
        code, pos = body[2], 3
    elif body[1] == 0x80 and len(body) >= 10:  # ulong descriptor
        code, pos = int.from_bytes(body[2:10], "big"), 10
    else:
        return None
    constructor = body[pos]
    if constructor == 0x45:  # list0
        count, items, end = 0, pos + 1, pos + 1
    elif constructor == 0xC0:  # list8: size (1 byte, counts the count byte), count, items
        count, items, end = body[pos + 2], pos + 3, pos + 2 + body[pos + 1]
    elif constructor == 0xD0:  # list32: size (4 bytes, counts the count field), count, items
        size = int.from_bytes(body[pos + 1 : pos + 5], "big")
        count, items, end = int.from_bytes(body[pos + 5 : pos + 9], "big"), pos + 9, pos + 5 + size
    else:
        return None
    return _Performative(
        frame_type=frame[5],
        channel=int.from_bytes(frame[6:8], "big"),
        code=code,
        body_offset=body_offset,
        list_offset=pos,
        count=count,
        items_offset=items,
        list_end=end,
    )


def _pad_frame(frame: bytes) -> bytes:
    """Return ``frame`` with its performative's field list padded with nulls to the full count."""
    perf = _performative(frame)
    if perf is None:
        return frame
    full = _FIELD_COUNTS.get((perf.frame_type, perf.code))
    if full is None or perf.count >= full:
        return frame
    body = frame[perf.body_offset :]
    items = body[perf.items_offset : perf.list_end] + _NULL * (full - perf.count)
    if len(items) + 1 <= 0xFF:
        new_list = bytes((0xC0, len(items) + 1, full)) + items
    else:
        new_list = b"\xd0" + (len(items) + 4).to_bytes(4, "big") + full.to_bytes(4, "big") + items
    new_body = body[: perf.list_offset] + new_list + body[perf.list_end :]
    return (perf.body_offset + len(new_body)).to_bytes(4, "big") + frame[4 : perf.body_offset] + new_body


class OutgoingNormalizer:
    """Rewrites the server's output stream so every performative carries all of its fields."""

    def __init__(self) -> None:
        self._splitter = _FrameSplitter()

    def feed(self, data: bytes) -> bytes:
        """Take bytes proton produced; return the bytes to put on the wire (whole units only)."""
        return b"".join(_pad_frame(unit) for unit in self._splitter.feed(data))


def _decode_fields(frame: bytes, perf: _Performative) -> list[object]:
    """Decode a performative's fields into Python values (proton's codec)."""
    data = Data()
    data.decode(frame[perf.body_offset + perf.list_offset : perf.body_offset + perf.list_end])
    fields = data.get_object()
    assert isinstance(fields, list)
    return fields


def _as_int(value: object) -> int:
    """A decoded integer field (proton's ``uint``/``ulong`` are ``int`` subclasses)."""
    if not isinstance(value, int):
        raise ValueError(f"expected an integer field, got {value!r}")
    return int(value)


def _symbols(value: object) -> frozenset[str]:
    """A multiple-symbol field (one symbol, an array of symbols, or null) as a set of strings."""
    if value is None:
        return frozenset()
    if isinstance(value, Array):
        return frozenset(str(element) for element in value.elements)
    if isinstance(value, list | tuple):
        return frozenset(str(element) for element in value)
    return frozenset({str(value)})


@dataclass
class _IncomingLink:
    """What the sniffer knows about one link the client attached, by (channel, handle)."""

    name: str
    in_delivery: bool = False  # a multi-frame delivery is being received (last transfer had more=true)


@dataclass
class IncomingSniffer:
    """Reads link capabilities and delivery message formats from the client's frames.

    Feed it every byte received from the client, *before* handing the bytes to proton, so that by
    the time proton raises a link-open or delivery event the matching facts are already known.
    Link names are the key: proton exposes ``Link.name`` and a client never attaches two links
    with the same name and role on one connection.
    """

    _splitter: _FrameSplitter = field(default_factory=_FrameSplitter)
    _links: dict[tuple[int, int], _IncomingLink] = field(default_factory=dict)
    _desired_capabilities: dict[str, frozenset[str]] = field(default_factory=dict)
    _formats: dict[str, deque[int]] = field(default_factory=dict)

    def feed(self, data: bytes) -> None:
        """Inspect the client's bytes; keeps partial frames until they complete."""
        for unit in self._splitter.feed(data):
            perf = _performative(unit)
            if perf is None or perf.frame_type != _AMQP_FRAME or perf.code not in (_ATTACH, _TRANSFER):
                continue
            fields = _decode_fields(unit, perf)
            if perf.code == _ATTACH:
                self._on_attach(perf.channel, fields)
            else:
                self._on_transfer(perf.channel, fields)

    def _on_attach(self, channel: int, fields: list[object]) -> None:
        name, handle, role = str(fields[0]), _as_int(fields[1]), bool(fields[2])
        self._links[(channel, handle)] = _IncomingLink(name)
        desired = fields[12] if len(fields) > 12 else None
        self._desired_capabilities[name] = _symbols(desired)
        if not role:  # role false: the client sends on this link, so its deliveries get formats
            self._formats[name] = deque()

    def _on_transfer(self, channel: int, fields: list[object]) -> None:
        link = self._links.get((channel, _as_int(fields[0])))
        formats = None if link is None else self._formats.get(link.name)
        if link is None or formats is None:  # not a sending link, or one already forgotten
            return
        if not link.in_delivery:
            message_format = fields[3] if len(fields) > 3 and fields[3] is not None else 0
            formats.append(_as_int(message_format))
        link.in_delivery = bool(fields[5]) if len(fields) > 5 else False

    def desired_capabilities(self, link_name: str) -> frozenset[str]:
        """The desired capabilities the client put on its attach of ``link_name``."""
        return self._desired_capabilities.get(link_name, frozenset())

    def next_message_format(self, link_name: str) -> int:
        """Message format of the oldest delivery on ``link_name`` not yet taken (call once per delivery)."""
        return self._formats[link_name].popleft()

    def forget(self, link_name: str) -> None:
        """Drop what is kept for a link that is gone."""
        self._desired_capabilities.pop(link_name, None)
        self._formats.pop(link_name, None)
