"""In-memory Event Hub: partitions as append-only logs, positions, and partition-key routing.

Mirrors what the Event Hubs service does with published events:

* every partition numbers its events with a sequence number starting at 0 and a byte offset
  (the running total of the encoded event sizes, starting at 0), and stamps an enqueued time
  (UTC, millisecond precision, never going backwards);
* a receiver's ``apache.org:selector-filter:string`` filter (built by the SDK's
  ``azure.eventhub._utils.event_position_selector``) picks the first event to deliver;
* events sent to the hub itself go to the partition chosen by hashing their partition key
  (Jenkins lookup3, as the service and the SDKs' buffered producers do) or, without a key, to the
  partitions in turn (round robin).

Nothing is ever evicted (no retention), so an event's sequence number is also its index.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Final

from .messages import ParsedMessage

EARLIEST_OFFSET: Final = "-1"
LATEST_OFFSET: Final = "@latest"


def to_millis(moment: datetime) -> int:
    """Milliseconds since the Unix epoch, the unit of ``x-opt-enqueued-time`` (AMQP timestamp)."""
    return int(moment.timestamp() * 1000)


@dataclass(frozen=True)
class StoredEvent:
    """One event as a partition keeps it.

    ``body`` joins the event's data sections; ``properties`` are its application properties.
    The SDK reports ``offset`` as a string (``EventData.offset == str(stored.offset)``).
    """

    partition_id: str
    sequence_number: int
    offset: int
    enqueued_time: datetime
    body: bytes
    properties: dict[str, object]
    partition_key: str | None
    message: ParsedMessage = field(repr=False)

    @property
    def enqueued_millis(self) -> int:
        """The enqueued time as the service puts it on the wire (ms since the epoch)."""
        return to_millis(self.enqueued_time)


class Partition:
    """An append-only log of events with the lookups a receiver's starting position needs."""

    def __init__(self, partition_id: str) -> None:
        self.partition_id = partition_id
        self.events: list[StoredEvent] = []
        self._offsets: list[int] = []
        self._times: list[int] = []
        self._next_offset = 0

    def append(self, message: ParsedMessage, enqueued_time: datetime | None = None) -> StoredEvent:
        """Store ``message`` as the next event.

        ``enqueued_time`` defaults to now (or the last event's time, should that be later); an
        explicit one must not precede the last event's.
        """
        last_millis = self._times[-1] if self._times else None
        if enqueued_time is None:
            millis = max(to_millis(datetime.now(UTC)), last_millis or 0)
        else:
            millis = to_millis(enqueued_time)
            if last_millis is not None and millis < last_millis:
                raise ValueError("enqueued_time must not go backwards within a partition")
        event = StoredEvent(
            partition_id=self.partition_id,
            sequence_number=len(self.events),
            offset=self._next_offset,
            enqueued_time=datetime.fromtimestamp(millis / 1000, UTC),
            body=message.body,
            properties=message.application_properties,
            partition_key=message.partition_key,
            message=message,
        )
        self.events.append(event)
        self._offsets.append(event.offset)
        self._times.append(millis)
        self._next_offset += message.size
        return event

    @property
    def last(self) -> StoredEvent | None:
        """The last enqueued event, ``None`` while the partition is empty."""
        return self.events[-1] if self.events else None

    def first_index_after_offset(self, offset: int, inclusive: bool) -> int:
        """Index of the first event whose offset is > (or >=) ``offset``."""
        search = bisect.bisect_left if inclusive else bisect.bisect_right
        return search(self._offsets, offset)

    def first_index_after_time(self, millis: int, inclusive: bool) -> int:
        """Index of the first event enqueued after (or at) ``millis``."""
        search = bisect.bisect_left if inclusive else bisect.bisect_right
        return search(self._times, millis)


class PositionKind(Enum):
    """The annotation a selector filter compares against."""

    OFFSET = "x-opt-offset"
    SEQUENCE_NUMBER = "x-opt-sequence-number"
    ENQUEUED_TIME = "x-opt-enqueued-time"


_SELECTOR: Final = re.compile(
    r"^\s*amqp\.annotation\.(?P<kind>x-opt-offset|x-opt-sequence-number|x-opt-enqueued-time)"
    r"\s*(?P<op>>=|>)\s*'(?P<value>[^']*)'\s*$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class EventPosition:
    """A receiver's starting position, parsed from its selector filter.

    The SDK sends ``amqp.annotation.<annotation> <op> '<value>'`` where ``op`` is ``>`` or
    ``>=`` (``starting_position_inclusive``) and the value is an offset (``-1`` = the start of
    the partition, ``@latest`` = only events enqueued after the link attached), a sequence number,
    or an enqueued time in ms since the epoch.
    """

    kind: PositionKind
    value: str
    inclusive: bool

    @classmethod
    def parse(cls, expression: str) -> EventPosition:
        """Parse a selector expression; raises ``ValueError`` for anything else."""
        match = _SELECTOR.match(expression)
        if match is None:
            raise ValueError(f"unsupported selector filter expression: {expression!r}")
        kind = PositionKind(match["kind"].lower())
        value = match["value"]
        if not (kind is PositionKind.OFFSET and value in (EARLIEST_OFFSET, LATEST_OFFSET)):
            try:
                int(value)
            except ValueError:
                raise ValueError(f"invalid {kind.value} value in selector filter: {value!r}") from None
        return cls(kind=kind, value=value, inclusive=match["op"] == ">=")

    def start_index(self, partition: Partition) -> int:
        """Index (== sequence number) of the first event to deliver; may be past the current end."""
        if self.kind is PositionKind.OFFSET:
            if self.value == EARLIEST_OFFSET:
                return 0
            if self.value == LATEST_OFFSET:
                return len(partition.events)
            return partition.first_index_after_offset(int(self.value), self.inclusive)
        if self.kind is PositionKind.SEQUENCE_NUMBER:
            return max(0, int(self.value) + (0 if self.inclusive else 1))
        return partition.first_index_after_time(int(self.value), self.inclusive)


def _rotate(value: int, count: int) -> int:
    return ((value << count) | (value >> (32 - count))) & 0xFFFFFFFF


def _lookup3(data: bytes) -> tuple[int, int]:
    """Bob Jenkins' lookup3 ``hashlittle2`` with both seeds 0; returns (primary, secondary)."""
    mask = 0xFFFFFFFF
    a = b = c = (0xDEADBEEF + len(data)) & mask

    def mix(a: int, b: int, c: int) -> tuple[int, int, int]:
        for x_shift, y_shift, z_shift in ((4, 6, 8), (16, 19, 4)):
            a = ((a - c) & mask) ^ _rotate(c, x_shift)
            c = (c + b) & mask
            b = ((b - a) & mask) ^ _rotate(a, y_shift)
            a = (a + c) & mask
            c = ((c - b) & mask) ^ _rotate(b, z_shift)
            b = (b + a) & mask
        return a, b, c

    def final(a: int, b: int, c: int) -> tuple[int, int, int]:
        c = ((c ^ b) - _rotate(b, 14)) & mask
        a = ((a ^ c) - _rotate(c, 11)) & mask
        b = ((b ^ a) - _rotate(a, 25)) & mask
        c = ((c ^ b) - _rotate(b, 16)) & mask
        a = ((a ^ c) - _rotate(c, 4)) & mask
        b = ((b ^ a) - _rotate(a, 14)) & mask
        c = ((c ^ b) - _rotate(b, 24)) & mask
        return a, b, c

    remaining = data
    while len(remaining) > 12:
        a = (a + int.from_bytes(remaining[0:4], "little")) & mask
        b = (b + int.from_bytes(remaining[4:8], "little")) & mask
        c = (c + int.from_bytes(remaining[8:12], "little")) & mask
        a, b, c = mix(a, b, c)
        remaining = remaining[12:]
    if not remaining:
        return c, b
    tail = remaining.ljust(12, b"\0")
    a = (a + int.from_bytes(tail[0:4], "little")) & mask
    b = (b + int.from_bytes(tail[4:8], "little")) & mask
    c = (c + int.from_bytes(tail[8:12], "little")) & mask
    a, b, c = final(a, b, c)
    return c, b


def partition_key_hash(partition_key: str) -> int:
    """The service's 16-bit signed partition-key hash: ``(short)(primary ^ secondary)`` of lookup3
    over the key's UTF-8 bytes (the SDK's ``_partition_resolver.generate_hash_code``)."""
    primary, secondary = _lookup3(partition_key.encode("utf-8"))
    hash16 = (primary ^ secondary) & 0xFFFF
    return hash16 - 0x10000 if hash16 >= 0x8000 else hash16


def partition_for_key(partition_key: str, partition_count: int) -> int:
    """Index of the partition a partition key maps to: ``abs(hash % count)`` with the remainder
    taking the dividend's sign (C# semantics, as the service computes it)."""
    return abs(partition_key_hash(partition_key)) % partition_count


class EventHubStore:
    """All partitions of one Event Hub, with the routing of events sent to the hub itself."""

    def __init__(self, name: str, partition_count: int) -> None:
        if partition_count < 1:
            raise ValueError("an Event Hub has at least one partition")
        self.name = name
        self.created_at = datetime.now(UTC)
        self.partitions: dict[str, Partition] = {str(i): Partition(str(i)) for i in range(partition_count)}
        self._round_robin = 0

    @property
    def partition_ids(self) -> list[str]:
        """Partition ids in order: ``"0"`` .. ``"n-1"``."""
        return list(self.partitions)

    def route(self, partition_key: str | None) -> Partition:
        """The partition for an event sent to the hub (no partition in the link address)."""
        ids = self.partition_ids
        if partition_key is not None:
            return self.partitions[ids[partition_for_key(partition_key, len(ids))]]
        partition = self.partitions[ids[self._round_robin % len(ids)]]
        self._round_robin += 1
        return partition
