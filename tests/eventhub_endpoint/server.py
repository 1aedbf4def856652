"""A test-only Azure Event Hubs endpoint speaking AMQP 1.0, for the real ``azure-eventhub`` SDK.

It implements the part of the Event Hubs protocol that ``azure-eventhub`` 5.15 (its pure-Python
``_pyamqp`` stack) uses over plain AMQP, i.e. with a ``UseDevelopmentEmulator=true`` connection
string (``amqp://host:port``, no TLS):

* SASL ANONYMOUS (the SDK's ``_CBSAuth`` credential), then claims-based security: a ``$cbs``
  request/response link pair where the client does ``put-token`` with a SAS token, answered with
  ``status-code`` 202; tokens are checked against the configured key (401 otherwise) and a link
  to an entity the connection holds no token for is refused with ``amqp:unauthorized-access``;
* the ``$management`` node: ``READ`` of ``com.microsoft:eventhub`` (hub properties) and
  ``com.microsoft:partition`` (partition properties), with the body shapes the SDK parses in
  ``_client_base_async._get_eventhub_properties_async`` / ``_get_partition_properties_async``;
* send links to ``<hub>`` and ``<hub>/Partitions/<id>`` (``EventHubProducerClient``), with single
  messages and batch messages (format ``0x80013700``);
* receive links on ``<hub>/ConsumerGroups/<group>/Partitions/<id>`` (``EventHubConsumerClient``):
  the ``apache.org:selector-filter:string`` starting position, link credit, the ``x-opt-*``
  message annotations, the ``com.microsoft:epoch`` link property (owner level: a receiver with an
  equal or higher epoch takes the partition over, the old one is detached with
  ``amqp:link:stolen``, as the service does) and the
  ``com.microsoft:enable-receiver-runtime-metric`` capability (last-enqueued-event delivery
  annotations for ``track_last_enqueued_event_properties``).

Design: an asyncio server on a background thread; each client connection drives its own proton
engine (``Transport``/``Connection``/``Collector``, the event API) and the bytes in between pass
through :mod:`.frames` (see there for why).  All broker state lives on that thread; the public
:class:`EventHubEndpoint` methods hop onto it, so they are safe to call from any thread.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import hashlib
import hmac
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Final, TypeVar
from urllib.parse import parse_qsl, quote_plus, unquote, urlparse

from proton import (
    UNDESCRIBED,
    Array,
    Collector,
    Condition,
    Connection,
    Data,
    Delivery,
    Endpoint,
    Event,
    EventType,
    Link,
    Message,
    ProtonException,
    Receiver,
    Sender,
    Session,
    Transport,
    int32,
    symbol,
    timestamp,
)

from .frames import IncomingSniffer, OutgoingNormalizer
from .messages import (
    DELIVERY_ANNOTATIONS,
    MESSAGE_ANNOTATIONS,
    PARTITION_KEY,
    ParsedMessage,
    encode_annotations,
    encode_event,
    parse_delivery,
    parse_message,
)
from .store import EventHubStore, EventPosition, Partition, StoredEvent, to_millis

__all__ = [
    "DEFAULT_CONSUMER_GROUP",
    "DEFAULT_KEY",
    "DEFAULT_KEY_NAME",
    "MAX_MESSAGE_SIZE",
    "EventHubEndpoint",
    "ReceiverInfo",
    "StoredEvent",
    "verify_sas_token",
]

_LOG: Final = logging.getLogger(__name__)
_T = TypeVar("_T")

DEFAULT_KEY_NAME: Final = "RootManageSharedAccessKey"
DEFAULT_KEY: Final = "SAS_KEY_VALUE"
DEFAULT_CONSUMER_GROUP: Final = "$Default"
MAX_MESSAGE_SIZE: Final = 1024 * 1024
"""Largest message a send link accepts (the Standard tier's 1 MB): advertised as the link's
max-message-size (the SDK sizes batches by it) and enforced by rejecting larger deliveries."""

_CBS_NODE: Final = "$cbs"
_MANAGEMENT_NODE: Final = "$management"
_NODES: Final = {_CBS_NODE, _MANAGEMENT_NODE}
_SAS_TOKEN_TYPE: Final = "servicebus.windows.net:sastoken"
_SAS_PREFIX: Final = "SharedAccessSignature "
_SELECTOR_FILTER: Final = "apache.org:selector-filter:string"
_EPOCH: Final = symbol("com.microsoft:epoch")
_RUNTIME_METRIC: Final = "com.microsoft:enable-receiver-runtime-metric"
_INCOMING_CREDIT: Final = 1000

_LINK_STOLEN: Final = "amqp:link:stolen"
_NOT_FOUND: Final = "amqp:not-found"
_UNAUTHORIZED: Final = "amqp:unauthorized-access"
_INVALID_FIELD: Final = "amqp:invalid-field"
_DECODE_ERROR: Final = "amqp:decode-error"
_MESSAGE_SIZE_EXCEEDED: Final = "amqp:link:message-size-exceeded"

_SEQUENCE_NUMBER: Final = symbol("x-opt-sequence-number")
_OFFSET: Final = symbol("x-opt-offset")
_ENQUEUED_TIME: Final = symbol("x-opt-enqueued-time")
_LAST_SEQUENCE_NUMBER: Final = symbol("last_enqueued_sequence_number")
_LAST_OFFSET: Final = symbol("last_enqueued_offset")
_LAST_ENQUEUED_TIME: Final = symbol("last_enqueued_time_utc")
_RETRIEVAL_TIME: Final = symbol("runtime_info_retrieval_time_utc")


@dataclass(frozen=True)
class ReceiverInfo:
    """A receive link currently attached to a partition (see :meth:`EventHubEndpoint.receivers`)."""

    link_name: str
    connection_id: int
    consumer_group: str
    epoch: int | None
    runtime_metrics: bool
    next_sequence_number: int


class _Refusal(Exception):
    """An AMQP error condition with its description, as the service words it."""

    def __init__(self, condition: str, description: str) -> None:
        super().__init__(f"{condition}: {description}")
        self.condition = condition
        self.description = description


class _LinkRefused(_Refusal):
    """An attach the service would refuse: the link is attached, then detached with this error."""


class _Rejected(_Refusal):
    """A published message the service would reject (``rejected`` outcome with this error)."""


def _segments(address: str | None) -> list[str]:
    """Path segments of a link address; the SDK sends URLs (``amqps://host/hub/...``) or bare names."""
    if not address:
        return []
    parsed = urlparse(address)
    path = parsed.path if parsed.scheme else address
    return [unquote(part) for part in path.strip("/").split("/") if part]


def _path(url_or_path: str) -> str:
    """Lower-cased entity path of a URL or path, for comparing token audiences with addresses."""
    parsed = urlparse(url_or_path)
    path = parsed.path if parsed.scheme else url_or_path
    return "/" + path.strip("/").lower()


def _covers(scope: str, path: str) -> bool:
    """Whether a token scoped to entity path ``scope`` grants access to entity path ``path``."""
    return scope in ("/", path) or path.startswith(scope + "/")


def verify_sas_token(token: str, audience: str, key_name: str, key: str) -> str | None:
    """Check a SAS token the way the service does; ``None`` if valid, else the error description.

    Tokens are ``SharedAccessSignature sr=<uri>&sig=<sig>&se=<expiry>&skn=<key name>`` with
    ``sig = base64(HMAC-SHA256(key, quote_plus(uri) + "\\n" + expiry))``
    (``azure.eventhub._pyamqp.utils.generate_sas_token``); the token's ``sr`` must cover the
    audience the client puts the token for.
    """
    if not token.startswith(_SAS_PREFIX):
        return "InvalidToken: only SharedAccessSignature tokens are accepted"
    fields = dict(parse_qsl(token[len(_SAS_PREFIX) :], keep_blank_values=True))
    resource, signature, expiry, name = (fields.get(k) for k in ("sr", "sig", "se", "skn"))
    if resource is None or signature is None or expiry is None or not expiry.isdigit():
        return "InvalidToken: the token is missing sr, sig or se"
    if name != key_name:
        return f"InvalidSignature: unknown SharedAccessKeyName {name!r}"
    expected = base64.b64encode(
        hmac.new(key.encode(), f"{quote_plus(resource)}\n{expiry}".encode(), hashlib.sha256).digest()
    ).decode()
    if not hmac.compare_digest(expected, signature):
        return "InvalidSignature: The token has an invalid signature."
    if int(expiry) < time.time():
        return "ExpiredToken: The token is expired."
    if not _covers(_path(resource), _path(audience)):
        return f"InvalidAudience: the token's audience {resource!r} does not cover {audience!r}"
    return None


def _response(request: Message, status: int, description: str, body: dict[str, Any] | None = None) -> Message:
    """A management/CBS response: ``status-code``/``status-description`` application properties."""
    return Message(
        correlation_id=request.id,
        properties={"status-code": int32(status), "status-description": description},
        body=body,
    )


def _context(endpoint: _T | None) -> _T:
    """The connection/session/link/delivery an engine event is about (always set for its type)."""
    if endpoint is None:
        raise ProtonException("engine event without its context")
    return endpoint


def _send_presettled(link: Sender, tag: int, payload: bytes) -> None:
    """Send one pre-settled delivery, as the service does on its receive and response links."""
    delivery = link.delivery(str(tag))
    link.stream(payload)
    link.advance()
    delivery.settle()


def _take_delivery(link: Receiver, delivery: Delivery, sniffer: IncomingSniffer) -> tuple[bytes, int] | None:
    """Payload and message format of a delivery the client finished sending, else ``None``
    (still arriving, or aborted by the client: an aborted delivery is settled and dropped)."""
    if delivery.aborted:
        sniffer.next_message_format(link.name)
        delivery.settle()
        link.flow(1)
        return None
    if delivery.partial or not delivery.readable:
        return None
    payload = link.recv(delivery.pending) or b""
    link.advance()
    return payload, sniffer.next_message_format(link.name)


class _LinkHandler:
    """Behaviour of one attached link; the defaults ignore what a link kind does not use."""

    def on_flow(self) -> None:
        """The client granted credit (sender links) or updated its flow state."""

    def on_delivery(self, delivery: Delivery) -> None:
        """A delivery arrived (receiver links) or its remote state changed."""

    def release(self) -> None:
        """The link is gone (detached, or its session or connection ended)."""


class _ResponseLink(_LinkHandler):
    """Server -> client half of a ``$cbs``/``$management`` request/response pair."""

    def __init__(self, link: Sender, node: str, connection: _ClientConnection) -> None:
        self.link = link
        self.node = node
        self._connection = connection
        self._queue: deque[bytes] = deque()
        self._tags = itertools.count()

    def send(self, payload: bytes) -> None:
        """Queue a response; it goes out as soon as the client has granted credit."""
        self._queue.append(payload)
        self.on_flow()

    def on_flow(self) -> None:
        if self._queue and self.link.credit > 0:
            while self._queue and self.link.credit > 0:
                _send_presettled(self.link, next(self._tags), self._queue.popleft())
            self._connection.schedule_flush()


class _RequestLink(_LinkHandler):
    """Client -> server half of a ``$cbs``/``$management`` pair: runs each request, replies."""

    def __init__(self, link: Receiver, node: str, connection: _ClientConnection, broker: _Broker) -> None:
        self.link = link
        self.node = node
        self._connection = connection
        self._broker = broker

    def on_delivery(self, delivery: Delivery) -> None:
        received = _take_delivery(self.link, delivery, self._connection.sniffer)
        if received is None:
            return
        payload, _message_format = received
        request = Message()
        request.decode(payload)
        if self.node == _CBS_NODE:
            response = self._broker.put_token(self._connection, request)
        else:
            response = self._broker.management(self._connection, request)
        delivery.update(Delivery.ACCEPTED)
        delivery.settle()
        self.link.flow(1)
        self._connection.respond(self.link.session, self.node, request.reply_to, response.encode())

    def release(self) -> None:
        self._connection.sniffer.forget(self.link.name)


class _PublishLink(_LinkHandler):
    """A producer's send link: every delivery becomes one or more events in a partition."""

    def __init__(
        self, link: Receiver, partition_id: str | None, connection: _ClientConnection, broker: _Broker
    ) -> None:
        self.link = link
        self.partition_id = partition_id
        self._connection = connection
        self._broker = broker

    def on_delivery(self, delivery: Delivery) -> None:
        received = _take_delivery(self.link, delivery, self._connection.sniffer)
        if received is None:
            return
        payload, message_format = received
        try:
            if len(payload) > MAX_MESSAGE_SIZE:
                raise _Rejected(
                    _MESSAGE_SIZE_EXCEEDED,
                    f"The received message (size: {len(payload)} bytes) exceeds the limit "
                    f"({MAX_MESSAGE_SIZE} bytes) currently allowed on the link.",
                )
            try:
                events = parse_delivery(payload, message_format)
            except (ValueError, ProtonException) as error:
                raise _Rejected(_DECODE_ERROR, f"cannot decode the message: {error}") from None
        except _Rejected as rejection:
            delivery.local.condition = Condition(rejection.condition, rejection.description)
            delivery.update(Delivery.REJECTED)
        else:
            self._broker.publish(self.partition_id, events)
            delivery.update(Delivery.ACCEPTED)
        delivery.settle()
        self.link.flow(1)

    def release(self) -> None:
        self._connection.sniffer.forget(self.link.name)


class _ReceiverLink(_LinkHandler):
    """A consumer's receive link on one partition: streams events as credit allows."""

    def __init__(
        self,
        *,
        link: Sender,
        connection: _ClientConnection,
        broker: _Broker,
        partition: Partition,
        consumer_group: str,
        epoch: int | None,
        runtime_metrics: bool,
        start_index: int,
    ) -> None:
        self.link = link
        self.connection = connection
        self.partition = partition
        self.consumer_group = consumer_group
        self.epoch = epoch
        self.runtime_metrics = runtime_metrics
        self.next_index = start_index
        self._broker = broker
        self._tags = itertools.count()

    def info(self) -> ReceiverInfo:
        """Public snapshot of this receiver."""
        return ReceiverInfo(
            link_name=self.link.name,
            connection_id=self.connection.connection_id,
            consumer_group=self.consumer_group,
            epoch=self.epoch,
            runtime_metrics=self.runtime_metrics,
            next_sequence_number=self.next_index,
        )

    def on_flow(self) -> None:
        self.pump()

    def pump(self) -> None:
        """Send the next events while the client has credit left."""
        events = self.partition.events
        sent = False
        while self.link.credit > 0 and self.next_index < len(events):
            _send_presettled(self.link, next(self._tags), self._payload(events[self.next_index]))
            self.next_index += 1
            sent = True
        if sent:
            self.connection.schedule_flush()

    def _payload(self, event: StoredEvent) -> bytes:
        """The event as the service delivers it: the producer's message plus the broker annotations."""
        annotations: dict[object, object] = dict(event.message.annotations)
        annotations[_SEQUENCE_NUMBER] = event.sequence_number
        annotations[_OFFSET] = str(event.offset)
        annotations[_ENQUEUED_TIME] = timestamp(event.enqueued_millis)
        if event.partition_key is not None:
            annotations[PARTITION_KEY] = event.partition_key
        sections = [event.message.header]
        last = self.partition.last
        if self.runtime_metrics and last is not None:
            metrics: dict[object, object] = {
                _LAST_SEQUENCE_NUMBER: last.sequence_number,
                _LAST_OFFSET: str(last.offset),
                _LAST_ENQUEUED_TIME: timestamp(last.enqueued_millis),
                _RETRIEVAL_TIME: timestamp(to_millis(datetime.now(UTC))),
            }
            sections.append(encode_annotations(DELIVERY_ANNOTATIONS, metrics))
        sections.append(encode_annotations(MESSAGE_ANNOTATIONS, annotations))
        sections.append(event.message.bare)
        return b"".join(sections)

    def release(self) -> None:
        self._broker.unregister_receiver(self)


class _ClientConnection(asyncio.Protocol):
    """One client TCP connection, driving a server-mode proton engine through the event API."""

    def __init__(self, broker: _Broker, connection_id: int) -> None:
        self.connection_id = connection_id
        self.sniffer = IncomingSniffer()
        self.authorized_paths: list[str] = []
        self._broker = broker
        self._normalizer = OutgoingNormalizer()
        self._socket: asyncio.Transport | None = None
        self._input = bytearray()
        self._links: dict[Link, _LinkHandler] = {}
        self._flush_scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self._transport = Transport(Transport.SERVER)
        self._transport.sasl().allowed_mechs("ANONYMOUS")
        self._connection = Connection()
        self._collector = Collector()
        self._connection.collect(self._collector)
        self._transport.bind(self._connection)
        self._handlers: dict[EventType, Callable[[Event], None]] = {
            Event.CONNECTION_REMOTE_OPEN: self._on_connection_remote_open,
            Event.CONNECTION_REMOTE_CLOSE: self._on_connection_remote_close,
            Event.SESSION_REMOTE_OPEN: self._on_session_remote_open,
            Event.SESSION_REMOTE_CLOSE: self._on_session_remote_close,
            Event.LINK_REMOTE_OPEN: self._on_link_remote_open,
            Event.LINK_REMOTE_CLOSE: self._on_link_remote_close,
            Event.LINK_REMOTE_DETACH: self._on_link_remote_detach,
            Event.LINK_FLOW: self._on_link_flow,
            Event.DELIVERY: self._on_delivery,
        }

    # asyncio.Protocol -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._socket = transport
        self._broker.connections.add(self)
        self._process()

    def data_received(self, data: bytes) -> None:
        try:
            self.sniffer.feed(data)
        except (ValueError, ProtonException) as error:
            _LOG.warning("connection %d: malformed input (%s); dropping it", self.connection_id, error)
            self.abort()
            return
        self._input.extend(data)
        self._process()

    def eof_received(self) -> bool:
        self._transport.close_tail()
        self._process()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._shut()

    # driving the engine -----------------------------------------------------------------------

    def schedule_flush(self) -> None:
        """Run the engine soon (after the current event) to write what other links queued."""
        if not self._flush_scheduled and not self._closed:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._process)

    def abort(self) -> None:
        """Drop the TCP connection at once, without an AMQP close (a network failure)."""
        if self._socket is not None:
            self._socket.abort()
        self._shut()

    def _shut(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        for link in list(self._links):
            self._release(link)
        self._broker.connections.discard(self)

    def _process(self) -> None:
        self._flush_scheduled = False
        if self._closed or self._socket is None:
            return
        try:
            while self._input and self._transport.capacity() > 0:
                chunk = bytes(self._input[: self._transport.capacity()])
                del self._input[: len(chunk)]
                self._transport.push(chunk)
            deadline = self._transport.tick(asyncio.get_running_loop().time())
            self._dispatch_events()
            self._write_output()
        except ProtonException as error:
            _LOG.warning("connection %d: AMQP engine error (%s); dropping it", self.connection_id, error)
            self.abort()
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if deadline > 0 and not self._closed:
            self._timer = asyncio.get_running_loop().call_at(deadline, self._process)

    def _dispatch_events(self) -> None:
        while (event := self._collector.peek()) is not None:
            try:
                handler = self._handlers.get(event.type)
                if handler is not None:
                    handler(event)
            finally:
                self._collector.pop()

    def _write_output(self) -> None:
        assert self._socket is not None
        while True:
            pending = self._transport.pending()
            if pending < 0:  # the engine closed its output: the AMQP connection is over
                self._socket.close()
                return
            if pending == 0:
                return
            data = self._transport.peek(pending) or b""
            self._transport.pop(len(data))
            self._socket.write(self._normalizer.feed(data))

    # AMQP events ------------------------------------------------------------------------------

    def _on_connection_remote_open(self, event: Event) -> None:
        connection = _context(event.connection)
        if connection.state & Endpoint.LOCAL_UNINIT:
            connection.container = "eventhub-test-endpoint"
            connection.open()

    def _on_connection_remote_close(self, event: Event) -> None:
        connection = _context(event.connection)
        for link in list(self._links):
            self._release(link)
        if not connection.state & Endpoint.LOCAL_CLOSED:
            connection.close()

    def _on_session_remote_open(self, event: Event) -> None:
        session = _context(event.session)
        if session.state & Endpoint.LOCAL_UNINIT:
            session.open()

    def _on_session_remote_close(self, event: Event) -> None:
        session = _context(event.session)
        for link in [link for link in self._links if link.session == session]:
            self._release(link)
        if not session.state & Endpoint.LOCAL_CLOSED:
            session.close()

    def _on_link_remote_open(self, event: Event) -> None:
        link = _context(event.link)
        if not link.state & Endpoint.LOCAL_UNINIT:
            return
        link.source.copy(link.remote_source)
        link.target.copy(link.remote_target)
        try:
            handler = self._attach(link)
        except _LinkRefused as refusal:
            _LOG.info("connection %d: refusing link %s: %s", self.connection_id, link.name, refusal)
            self.sniffer.forget(link.name)
            link.open()
            link.condition = Condition(refusal.condition, refusal.description)
            link.close()
            return
        self._links[link] = handler
        link.open()
        if isinstance(link, Receiver):
            link.flow(_INCOMING_CREDIT)

    def _on_link_remote_close(self, event: Event) -> None:
        link = _context(event.link)
        self._release(link)
        if not link.state & Endpoint.LOCAL_CLOSED:
            link.close()

    def _on_link_remote_detach(self, event: Event) -> None:
        link = _context(event.link)
        self._release(link)
        if not link.state & Endpoint.LOCAL_CLOSED:
            link.detach()

    def _on_link_flow(self, event: Event) -> None:
        handler = self._links.get(_context(event.link))
        if handler is not None:
            handler.on_flow()

    def _on_delivery(self, event: Event) -> None:
        delivery = _context(event.delivery)
        handler = self._links.get(delivery.link)
        if handler is not None:
            handler.on_delivery(delivery)

    # links ------------------------------------------------------------------------------------

    def _attach(self, link: Link) -> _LinkHandler:
        """Route an attaching link to its node or entity; raises :class:`_LinkRefused`."""
        if isinstance(link, Receiver):
            segments = _segments(link.remote_target.address)
            node = self._node(segments)
            if node is not None:
                return _RequestLink(link, node, self, self._broker)
            partition_id = self._broker.publish_target(segments)
            self._check_authorized(segments, "Send")
            link.max_message_size = MAX_MESSAGE_SIZE
            return _PublishLink(link, partition_id, self, self._broker)
        assert isinstance(link, Sender)
        segments = _segments(link.remote_source.address)
        node = self._node(segments)
        if node is not None:
            return _ResponseLink(link, node, self)
        self._check_authorized(segments, "Listen")
        link.snd_settle_mode = Link.SND_SETTLED
        return self._broker.open_receiver(self, link, segments)

    @staticmethod
    def _node(segments: list[str]) -> str | None:
        if len(segments) == 1 and segments[0].lower() in _NODES:
            return segments[0].lower()
        return None

    def _check_authorized(self, segments: list[str], claim: str) -> None:
        path = "/" + "/".join(segments).lower()
        if self._broker.verify_tokens and not any(_covers(scope, path) for scope in self.authorized_paths):
            raise _LinkRefused(
                _UNAUTHORIZED, f"Unauthorized access. '{claim}' claim(s) are required to perform this operation."
            )

    def detach(self, link: Link, condition: str, description: str) -> None:
        """Close ``link`` from the server side with an error, as the service does."""
        self._release(link)
        link.condition = Condition(condition, description)
        link.close()
        self.schedule_flush()

    def respond(self, session: Session, node: str, reply_to: str | None, payload: bytes) -> None:
        """Send a response on the client's response link for ``node`` (by reply-to, else same session)."""
        links = [h for h in self._links.values() if isinstance(h, _ResponseLink) and h.node == node]
        by_address = [h for h in links if reply_to and h.link.remote_target.address == reply_to]
        in_session = [h for h in links if h.link.session == session]
        for handler in by_address or in_session:
            handler.send(payload)
            return
        _LOG.warning("connection %d: no response link for %s; response dropped", self.connection_id, node)

    def _release(self, link: Link) -> None:
        handler = self._links.pop(link, None)
        if handler is not None:
            handler.release()


class _Broker:
    """Event Hub semantics shared by all connections; used only on the endpoint's thread."""

    def __init__(
        self,
        store: EventHubStore,
        key_name: str,
        key: str,
        consumer_groups: frozenset[str] | None,
        verify_tokens: bool,
    ) -> None:
        self.store = store
        self.verify_tokens = verify_tokens
        self.connections: set[_ClientConnection] = set()
        self._key_name = key_name
        self._key = key
        self._consumer_groups = consumer_groups
        self._receivers: dict[tuple[str, str], list[_ReceiverLink]] = {}
        self._connection_ids = itertools.count(1)

    def new_connection(self) -> _ClientConnection:
        """asyncio protocol factory."""
        return _ClientConnection(self, next(self._connection_ids))

    # claims-based security and management -----------------------------------------------------

    def put_token(self, connection: _ClientConnection, request: Message) -> Message:
        """``$cbs`` ``put-token``: authorize the connection for the token's audience."""
        properties: Mapping[str, object] = request.properties or {}
        if properties.get("operation") != "put-token":
            return _response(request, 400, f"unsupported $cbs operation {properties.get('operation')!r}")
        audience = str(properties.get("name", ""))
        if self.verify_tokens:
            if properties.get("type") != _SAS_TOKEN_TYPE:
                return _response(request, 401, f"unsupported token type {properties.get('type')!r}")
            error = verify_sas_token(str(request.body), audience, self._key_name, self._key)
            if error is not None:
                return _response(request, 401, error)
        connection.authorized_paths.append(_path(audience))
        return _response(request, 202, "Accepted")

    def management(self, connection: _ClientConnection, request: Message) -> Message:
        """``$management`` ``READ`` of the hub or of one partition."""
        properties: Mapping[str, object] = request.properties or {}
        operation, entity_type = properties.get("operation"), properties.get("type")
        name = str(properties.get("name", ""))
        if operation != "READ":
            return _response(request, 501, f"unsupported management operation {operation!r}")
        if name.lower() != self.store.name.lower():
            return _response(request, 404, f"The messaging entity '{name}' could not be found.")
        if self.verify_tokens and not any(_covers(s, _path(name)) for s in connection.authorized_paths):
            return _response(request, 401, "Unauthorized access. 'Listen' claim(s) are required.")
        if entity_type == "com.microsoft:eventhub":
            ids = self.store.partition_ids
            body = {
                "name": self.store.name,
                "type": entity_type,
                "created_at": timestamp(to_millis(self.store.created_at)),
                "partition_count": int32(len(ids)),
                # proton's stubs type UNDESCRIBED as a plain Constant, though Array takes it
                "partition_ids": Array(UNDESCRIBED, Data.STRING, *ids),  # type: ignore[arg-type]
            }
            return _response(request, 200, "OK", body)
        if entity_type == "com.microsoft:partition":
            partition = self.store.partitions.get(str(properties.get("partition")))
            if partition is None:
                return _response(request, 404, f"Partition {properties.get('partition')!r} does not exist.")
            last = partition.last
            body = {
                "name": self.store.name,
                "type": entity_type,
                "partition": partition.partition_id,
                "begin_sequence_number": 0,
                "last_enqueued_sequence_number": -1 if last is None else last.sequence_number,
                "last_enqueued_offset": "-1" if last is None else str(last.offset),
                "last_enqueued_time_utc": timestamp(0 if last is None else last.enqueued_millis),
                "is_partition_empty": last is None,
            }
            return _response(request, 200, "OK", body)
        return _response(request, 400, f"unsupported management type {entity_type!r}")

    # producers --------------------------------------------------------------------------------

    def publish_target(self, segments: list[str]) -> str | None:
        """The partition a send link targets (``None`` = the hub routes); raises :class:`_LinkRefused`."""
        if segments and segments[0].lower() == self.store.name.lower():
            if len(segments) == 1:
                return None
            if len(segments) == 3 and segments[1].lower() == "partitions":
                if segments[2] not in self.store.partitions:
                    raise _LinkRefused(_NOT_FOUND, f"Partition '{segments[2]}' does not exist.")
                return segments[2]
        raise _LinkRefused(_NOT_FOUND, f"The messaging entity '{'/'.join(segments)}' could not be found.")

    def publish(self, partition_id: str | None, messages: list[ParsedMessage]) -> None:
        """Enqueue one delivery's events in one partition (stamped with one enqueued time)."""
        if not messages:
            return
        if partition_id is None:
            partition = self.store.route(messages[0].partition_key)
        else:
            partition = self.store.partitions[partition_id]
        first = partition.append(messages[0])
        for message in messages[1:]:
            partition.append(message, first.enqueued_time)
        self.pump(partition.partition_id)

    def pump(self, partition_id: str) -> None:
        """Let every receiver of a partition send what it has credit for."""
        for (_group, pid), receivers in list(self._receivers.items()):
            if pid == partition_id:
                for receiver in list(receivers):
                    receiver.pump()

    # consumers --------------------------------------------------------------------------------

    def open_receiver(self, connection: _ClientConnection, link: Sender, segments: list[str]) -> _ReceiverLink:
        """Validate a receive link, apply the owner-level (epoch) rules, and register it."""
        lowered = [s.lower() for s in segments]
        if not (
            len(segments) == 5
            and lowered[0] == self.store.name.lower()
            and lowered[1] == "consumergroups"
            and lowered[3] == "partitions"
        ):
            raise _LinkRefused(_NOT_FOUND, f"The messaging entity '{'/'.join(segments)}' could not be found.")
        group, partition = segments[2], self.store.partitions.get(segments[4])
        if self._consumer_groups is not None and group.lower() not in self._consumer_groups:
            raise _LinkRefused(_NOT_FOUND, f"The consumer group '{group}' could not be found.")
        if partition is None:
            raise _LinkRefused(_NOT_FOUND, f"Partition '{segments[4]}' does not exist.")
        position = self._position(link)
        epoch = self._epoch(link)
        key = (group.lower(), partition.partition_id)
        current = self._receivers.setdefault(key, [])
        epochs = [r.epoch for r in current if r.epoch is not None]
        if epoch is None and epochs:
            raise _LinkRefused(
                _LINK_STOLEN,
                f"At least one receiver for the endpoint is created with epoch of '{max(epochs)}', and so "
                "non-epoch receiver is not allowed. Either reconnect with a higher epoch, or make sure all "
                "epoch receivers are closed or disconnected.",
            )
        if epoch is not None and epochs and max(epochs) > epoch:
            raise _LinkRefused(
                _LINK_STOLEN,
                f"Receiver with a higher epoch '{max(epochs)}' already exists. A receiver with epoch '{epoch}' "
                "cannot be created. Make sure you are creating receiver with increasing epoch value to ensure "
                "connectivity, or ensure all old epoch receivers are closed or disconnected.",
            )
        if epoch is not None:
            for old in list(current):
                old.connection.detach(
                    old.link,
                    _LINK_STOLEN,
                    f"New receiver with higher epoch of '{epoch}' is created hence current receiver with epoch "
                    f"'{old.epoch}' is getting disconnected. If you are recreating the receiver, make sure a "
                    "higher epoch is used.",
                )
        receiver = _ReceiverLink(
            link=link,
            connection=connection,
            broker=self,
            partition=partition,
            consumer_group=group,
            epoch=epoch,
            runtime_metrics=_RUNTIME_METRIC in connection.sniffer.desired_capabilities(link.name),
            start_index=position.start_index(partition),
        )
        current.append(receiver)
        return receiver

    @staticmethod
    def _position(link: Sender) -> EventPosition:
        """The starting position from the source's selector filter (no filter: the start)."""
        filter_set = link.remote_source.filter
        filter_set.rewind()
        filters = filter_set.get_object() if filter_set.next() is not None else None
        if not filters:
            return EventPosition.parse("amqp.annotation.x-opt-offset > '-1'")
        if not isinstance(filters, Mapping):
            raise _LinkRefused(_INVALID_FIELD, "the source filter set is not a map")
        for value in filters.values():
            descriptor = getattr(value, "descriptor", None)
            if str(descriptor) == _SELECTOR_FILTER:
                try:
                    return EventPosition.parse(str(value.value))
                except ValueError as error:
                    raise _LinkRefused(_INVALID_FIELD, str(error)) from None
        raise _LinkRefused(_INVALID_FIELD, f"expected an {_SELECTOR_FILTER} source filter")

    @staticmethod
    def _epoch(link: Sender) -> int | None:
        properties = link.remote_properties or {}
        epoch = properties.get(_EPOCH)
        return None if epoch is None else int(epoch)

    def unregister_receiver(self, receiver: _ReceiverLink) -> None:
        """Forget a receive link that went away."""
        receivers = self._receivers.get((receiver.consumer_group.lower(), receiver.partition.partition_id), [])
        if receiver in receivers:
            receivers.remove(receiver)

    def receivers(self, partition_id: str, consumer_group: str) -> list[ReceiverInfo]:
        """Snapshots of the receive links attached to a partition in a consumer group."""
        return [r.info() for r in self._receivers.get((consumer_group.lower(), partition_id), [])]


class EventHubEndpoint:
    """An Event Hubs namespace with one hub, served over plain AMQP on a background thread.

    Use it as a context manager or call :meth:`start` / :meth:`stop`.  ``port=0`` binds a free
    port (see :attr:`port`).  Clients connect with :attr:`connection_string`
    (``UseDevelopmentEmulator=true``: the SDK then uses ``amqp://`` without TLS on that port).
    ``consumer_groups=None`` accepts any consumer group name, a collection restricts them (a
    receiver for another group is refused with ``amqp:not-found``).  ``verify_tokens=False``
    accepts any CBS token and skips all authorization.
    """

    def __init__(
        self,
        hub: str = "defender",
        partitions: int = 4,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        key_name: str = DEFAULT_KEY_NAME,
        key: str = DEFAULT_KEY,
        consumer_groups: Iterable[str] | None = None,
        verify_tokens: bool = True,
    ) -> None:
        self.hub = hub
        self.host = host
        self.key_name = key_name
        self.key = key
        self._requested_port = port
        self._store = EventHubStore(hub, partitions)
        groups = None if consumer_groups is None else frozenset(g.lower() for g in consumer_groups)
        self._broker = _Broker(self._store, key_name, key, groups, verify_tokens)
        self._port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # lifecycle --------------------------------------------------------------------------------

    def start(self) -> EventHubEndpoint:
        """Start serving; returns once the port accepts connections."""
        if self._thread is not None:
            raise RuntimeError("the endpoint is already running")
        started: concurrent.futures.Future[int] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._serve, args=(started,), name="eventhub-endpoint", daemon=True)
        self._thread.start()
        try:
            self._port = started.result(timeout=10)
        except BaseException:
            self._thread.join(timeout=10)
            self._thread = None
            raise
        _LOG.info("Event Hubs test endpoint for %r listening on %s:%d", self.hub, self.host, self._port)
        return self

    def stop(self) -> None:
        """Drop every connection, stop listening and end the background thread."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        self._thread = None
        self._loop = None

    def __enter__(self) -> EventHubEndpoint:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _serve(self, started: concurrent.futures.Future[int]) -> None:
        loop = asyncio.new_event_loop()
        try:
            server = loop.run_until_complete(
                loop.create_server(self._broker.new_connection, self.host, self._requested_port)
            )
        except OSError as error:
            started.set_exception(error)
            loop.close()
            return
        self._loop = loop
        port = int(server.sockets[0].getsockname()[1])
        loop.call_soon(started.set_result, port)  # set once the loop runs: from then on _call hops
        try:
            loop.run_forever()
        finally:
            server.close()
            for connection in list(self._broker.connections):
                connection.abort()
            loop.run_until_complete(server.wait_closed())
            loop.close()

    def _call(self, function: Callable[[], _T]) -> _T:
        """Run ``function`` on the endpoint's thread (directly when not running) and return its result."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or threading.current_thread() is thread:
            return function()
        result: concurrent.futures.Future[_T] = concurrent.futures.Future()

        def run() -> None:
            try:
                result.set_result(function())
            except BaseException as error:
                result.set_exception(error)

        loop.call_soon_threadsafe(run)
        return result.result(timeout=10)

    # connection details -----------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The TCP port being served (known once started)."""
        if self._port is None:
            raise RuntimeError("the endpoint has not been started")
        return self._port

    @property
    def namespace_connection_string(self) -> str:
        """Connection string for the namespace (pass ``eventhub_name=`` to the SDK)."""
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        return (
            f"Endpoint=sb://{host}:{self.port};SharedAccessKeyName={self.key_name};"
            f"SharedAccessKey={self.key};UseDevelopmentEmulator=true"
        )

    @property
    def connection_string(self) -> str:
        """Connection string for the hub (``EntityPath=<hub>``)."""
        return f"{self.namespace_connection_string};EntityPath={self.hub}"

    @property
    def partition_ids(self) -> list[str]:
        """The hub's partition ids."""
        return self._store.partition_ids

    # events -----------------------------------------------------------------------------------

    def append(
        self,
        partition_id: str,
        body: bytes,
        properties: Mapping[str, object] | None = None,
        *,
        partition_key: str | None = None,
        enqueued_time: datetime | None = None,
    ) -> StoredEvent:
        """Enqueue an event directly (no SDK involved); attached receivers get it right away.

        ``enqueued_time`` defaults to now; an explicit one must not precede the partition's last event.
        """
        message = parse_message(encode_event(body, properties, partition_key))

        def append_event() -> StoredEvent:
            partition = self._store.partitions[partition_id]
            event = partition.append(message, enqueued_time)
            self._broker.pump(partition_id)
            return event

        return self._call(append_event)

    def partition_events(self, partition_id: str) -> list[StoredEvent]:
        """Every event stored in a partition, in order."""
        return self._call(lambda: list(self._store.partitions[partition_id].events))

    # observation and faults -------------------------------------------------------------------

    def receivers(self, partition_id: str, consumer_group: str = DEFAULT_CONSUMER_GROUP) -> list[ReceiverInfo]:
        """The receive links attached to a partition in a consumer group."""
        return self._call(lambda: self._broker.receivers(partition_id, consumer_group))

    @property
    def connection_count(self) -> int:
        """Number of open client connections."""
        return self._call(lambda: len(self._broker.connections))

    def drop_connections(self) -> int:
        """Abort every client TCP connection (no AMQP close), as a network failure would; returns how many."""

        def drop() -> int:
            connections = list(self._broker.connections)
            for connection in connections:
                connection.abort()
            return len(connections)

        return self._call(drop)
