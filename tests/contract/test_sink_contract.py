"""The sink contract, against every sink: stdout, jsonl file, webhook (a real local HTTP server), Kafka,
and the dead-letter destinations (jsonl file, Kafka topic), which are sinks of dead letters.

Clauses: ``send`` delivers every item, in order, byte for byte; a failed delivery raises
``SinkError`` (never another exception, never a silent drop); sending the same alerts
again is harmless for the receiver to deduplicate (same bytes, same idempotency key).
"""

from __future__ import annotations

import asyncio
import io
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest

from rmmwatch.alerts import Alert
from rmmwatch.events import Detector
from rmmwatch.kafka_settings import KafkaSettings
from rmmwatch.model import DeadLetter
from rmmwatch.sinks.base import Sink, SinkError
from rmmwatch.sinks.deadletter import JsonlDeadLetters, dead_letter_document
from rmmwatch.sinks.kafka import KafkaDeadLetters, KafkaSink
from rmmwatch.sinks.log import LogAlertSink
from rmmwatch.sinks.stream import JsonlSink, StdoutSink
from rmmwatch.sinks.webhook import WebhookSink
from rmmwatch.stores.memory import MemoryStore
from tests.helpers import T0, matches, row, seed_rule, service_env


@dataclass
class Receiver:
    """A local HTTP endpoint that records what it is sent and can be told to fail."""

    bodies: list[bytes] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    fail_next: int = 0
    status_when_failing: int = 503
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/alerts"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if state.fail_next > 0:
                state.fail_next -= 1
                self.send_response(state.status_when_failing)
                self.end_headers()
                return
            state.bodies.append(body)
            state.headers.append(dict(self.headers.items()))
            self.send_response(202)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.server = server
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


async def _alerts(count: int) -> list[Alert]:
    rule = seed_rule()
    store = MemoryStore([rule])
    detector = Detector([rule])
    for i in range(count):
        await store.apply(matches(detector, [row(device=f"d{i}", ticks=T0)]), T0 + i)
    return await store.pending_alerts(100)


def _letters(count: int) -> list[DeadLetter]:
    return [
        DeadLetter("malformed_json", f"bad {i}", {"source": "test", "message": i}, None, b'{"records": [' + bytes([i]))
        for i in range(count)
    ]


@dataclass
class SinkCase:
    """One sink under test: what it takes, how to read what it delivered (as the bytes each item should
    become), and how to make it fail."""

    sink: Sink[Any]
    items: Callable[[int], Awaitable[list[Any]]]
    encode: Callable[[Any], bytes]
    delivered: Callable[[], Awaitable[list[bytes]]]
    break_it: Callable[[], None]


async def _alert_items(count: int) -> list[Any]:
    return list(await _alerts(count))


async def _letter_items(count: int) -> list[Any]:
    return list(_letters(count))


def _payload(alert: Alert) -> bytes:
    return alert.payload


async def stdout_case(tmp_path: Path, receiver: Receiver) -> SinkCase:
    stream = io.BytesIO()

    async def lines() -> list[bytes]:
        return stream.getvalue().splitlines()

    return SinkCase(StdoutSink(stream), _alert_items, _payload, lines, stream.close)


def _jsonl_case(sink: JsonlSink | JsonlDeadLetters, path: Path, items: Any, encode: Any) -> SinkCase:
    def break_file() -> None:
        assert sink._file is not None
        sink._file.close()
        sink._file = open(path, "rb")  # noqa: SIM115  (a read-only handle: writes fail)

    async def file_lines() -> list[bytes]:
        return path.read_bytes().splitlines()

    return SinkCase(sink, items, encode, file_lines, break_file)


async def log_case(tmp_path: Path, receiver: Receiver) -> SinkCase:
    """The shadow sink's default: one structured log line per alert, the whole document under ``alert``."""
    lines: list[tuple[str, dict[str, Any]]] = []
    broken: list[bool] = []

    def emit(event: str, **fields: Any) -> None:
        if broken:
            raise ValueError("I/O operation on closed file")
        lines.append((event, fields))

    async def logged() -> list[bytes]:
        assert {event for event, _ in lines} <= {"shadow_alert"}
        return [orjson.dumps(fields["alert"]) for _, fields in lines]

    return SinkCase(LogAlertSink(emit=emit), _alert_items, _payload, logged, lambda: broken.append(True))


async def jsonl_case(tmp_path: Path, receiver: Receiver) -> SinkCase:
    path = tmp_path / "out" / "alerts.jsonl"
    return _jsonl_case(JsonlSink(str(path)), path, _alert_items, _payload)


async def webhook_case(tmp_path: Path, receiver: Receiver) -> SinkCase:
    sink = WebhookSink(receiver.url, token="s3cr3t-token-value", retries=1, backoff_s=0.01, timeout_s=2)

    def refuse() -> None:
        receiver.fail_next = 100

    async def bodies() -> list[bytes]:
        return list(receiver.bodies)

    return SinkCase(sink, _alert_items, _payload, bodies, refuse)


async def _kafka_case(make: Callable[[KafkaSettings, str], Any], items: Any, encode: Any) -> SinkCase:
    from tests.integration.kafka_tools import create_topic, read_all

    bootstrap = service_env("RMMWATCH_TEST_KAFKA_BOOTSTRAP")
    topic = f"sink-{uuid.uuid4().hex[:10]}"
    await create_topic(bootstrap, topic, 1)
    kafka = make(KafkaSettings(bootstrap_servers=bootstrap), topic)

    async def consumed() -> list[bytes]:
        return [r.value for r in await read_all(bootstrap, topic, timeout_s=5)]

    def close_producer() -> None:
        # The producer gone: the sink must raise SinkError, not crash or drop.
        kafka._producer = None

    return SinkCase(kafka, items, encode, consumed, close_producer)


async def kafka_case(tmp_path: Path, receiver: Receiver) -> SinkCase:
    return await _kafka_case(KafkaSink, _alert_items, _payload)


async def dead_letters_jsonl_case(tmp_path: Path, receiver: Receiver) -> SinkCase:
    path = tmp_path / "out" / "dead.jsonl"
    return _jsonl_case(JsonlDeadLetters(str(path)), path, _letter_items, dead_letter_document)


async def dead_letters_kafka_case(tmp_path: Path, receiver: Receiver) -> SinkCase:
    def payload(letter: DeadLetter) -> bytes:
        return letter.payload

    return await _kafka_case(KafkaDeadLetters, _letter_items, payload)


#: Every sink, alert sinks and dead-letter destinations alike: adding a sink is one factory and one line here.
CASES: dict[str, tuple[Callable[[Path, Receiver], Awaitable[SinkCase]], bool]] = {
    # name: (factory, needs the real services)
    "stdout": (stdout_case, False),
    "jsonl": (jsonl_case, False),
    "log": (log_case, False),
    "webhook": (webhook_case, False),
    "kafka": (kafka_case, True),
    "dead-letters-jsonl": (dead_letters_jsonl_case, False),
    "dead-letters-kafka": (dead_letters_kafka_case, True),
}


@pytest.fixture(
    params=[pytest.param(name, marks=[pytest.mark.integration] if real else []) for name, (_, real) in CASES.items()]
)
async def case(request: pytest.FixtureRequest, tmp_path: Path, receiver: Receiver) -> AsyncIterator[SinkCase]:
    factory, _ = CASES[request.param]
    made = await factory(tmp_path, receiver)
    await made.sink.open()
    yield made
    await made.sink.close()


async def test_send_delivers_every_item_in_order(case: SinkCase) -> None:
    """Every item arrives, in order, with exactly the bytes it stands for (an alert's outbox payload)."""
    items = await case.items(3)
    await case.sink.send(items)
    assert await case.delivered() == [case.encode(i) for i in items]


async def test_resending_delivers_the_same_bytes(case: SinkCase) -> None:
    """At-least-once: a re-send after a crash is the same document, for downstream dedup."""
    items = await case.items(1)
    await case.sink.send(items)
    await case.sink.send(items)
    assert await case.delivered() == [case.encode(items[0]), case.encode(items[0])]


async def test_failure_raises_sink_error(case: SinkCase) -> None:
    """A sink that cannot deliver raises SinkError, so the loop keeps the items (outbox, uncommitted)."""
    items = await case.items(1)
    case.break_it()
    with pytest.raises(SinkError):
        await case.sink.send(items)


async def test_webhook_retries_transient_failures(receiver: Receiver) -> None:
    """A 503 then success: delivered once, with the idempotency key and the bearer token."""
    receiver.fail_next = 1
    sink = WebhookSink(receiver.url, token="s3cr3t-token-value", retries=3, backoff_s=0.01)
    await sink.open()
    alerts = await _alerts(1)
    await sink.send(alerts)
    await sink.close()
    assert receiver.bodies == [alerts[0].payload]
    headers = receiver.headers[0]
    assert headers["Idempotency-Key"] == f"{alerts[0].alert_id}:0"
    assert headers["Authorization"] == "Bearer s3cr3t-token-value"


async def test_webhook_does_not_retry_a_client_error(receiver: Receiver) -> None:
    """A 400 is permanent for that request: one attempt, then SinkError naming the status."""
    receiver.fail_next = 5
    receiver.status_when_failing = 400
    sink = WebhookSink(receiver.url, retries=3, backoff_s=0.01)
    await sink.open()
    with pytest.raises(SinkError, match="HTTP 400"):
        await sink.send(await _alerts(1))
    await sink.close()
    assert receiver.fail_next == 4


async def test_webhook_gives_up_at_its_deadline() -> None:
    """An unreachable endpoint fails within the deadline instead of holding the loop."""
    sink = WebhookSink("http://127.0.0.1:9/alerts", retries=50, backoff_s=0.05, timeout_s=0.5, deadline_s=0.5)
    await sink.open()
    with pytest.raises(SinkError):
        await asyncio.wait_for(sink.send(await _alerts(1)), timeout=10)
    await sink.close()


async def test_webhook_error_does_not_carry_the_token(receiver: Receiver) -> None:
    """The bearer token never appears in an error message."""
    receiver.fail_next = 10
    sink = WebhookSink(receiver.url, token="s3cr3t-token-value", retries=0)
    await sink.open()
    with pytest.raises(SinkError) as error:
        await sink.send(await _alerts(1))
    await sink.close()
    assert "s3cr3t" not in str(error.value)
