"""Kafka connection settings (what the source, the alert sink and the dead-letter producer share), the Event
Hubs connection string, one describer of client errors, and the diagnosis of a refused connection.

Azure Event Hubs' Kafka endpoint (learn.microsoft.com/azure/event-hubs/azure-event-hubs-kafka-overview)
is ``<namespace>.servicebus.windows.net:9093`` over SASL_SSL with mechanism PLAIN, the literal
username ``$ConnectionString`` and the connection string as the password. Microsoft's
recommended client settings: ``session.timeout.ms`` 30000, ``metadata.max.age.ms`` 180000
(idle connections are closed after 240 s, so ``connections.max.idle.ms`` stays below),
``request.timeout.ms`` 60000. ``wiring.py`` builds the preset from one connection string; an
explicit ``--kafka-bootstrap-servers`` still wins (useful behind a private endpoint alias).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import importlib
import os
import socket
import ssl
import struct
import sys
from dataclasses import dataclass, field
from typing import Any

from rmmwatch.config import ConfigError
from rmmwatch.logging import redactor

EVENTHUBS_USERNAME = "$ConnectionString"


class EventHubsConnectionString:
    """The parts of an Event Hubs connection string rmmwatch needs (never printed)."""

    def __init__(self, text: str) -> None:
        parts: dict[str, str] = {}
        for piece in text.strip().split(";"):
            if "=" in piece:
                key, _, value = piece.partition("=")
                parts[key.strip().lower()] = value.strip()
        endpoint = parts.get("endpoint", "")
        if not endpoint.startswith("sb://"):
            raise ConfigError(
                "the Event Hubs connection string has no Endpoint=sb://<namespace>.servicebus.windows.net/"
            )
        self.host = endpoint.removeprefix("sb://").rstrip("/").split("/")[0]
        if not self.host:
            raise ConfigError("the Event Hubs connection string's Endpoint has no host")
        if "sharedaccesskey" not in parts and "sharedaccesssignature" not in parts:
            raise ConfigError("the Event Hubs connection string has no SharedAccessKey or SharedAccessSignature")
        self.entity_path = parts.get("entitypath") or None
        self.use_emulator = parts.get("usedevelopmentemulator", "").lower() == "true"
        self.text = text.strip()
        redactor.register(self.text, parts.get("sharedaccesskey"), parts.get("sharedaccesssignature"))


@dataclass(frozen=True, slots=True)
class KafkaSettings:
    """Connection settings shared by the consumer, the alert producer and the dead-letter producer."""

    bootstrap_servers: str
    client_id: str = "rmmwatch"
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "PLAIN"
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    oauth_token_provider: str | None = None
    ssl_ca_file: str | None = None
    ssl_cert_file: str | None = None
    ssl_key_file: str | None = None
    ssl_check_hostname: bool = True
    session_timeout_ms: int = 10_000
    metadata_max_age_ms: int = 300_000
    request_timeout_ms: int = 40_000
    connections_max_idle_ms: int = 540_000
    default_topic: str | None = None

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments common to AIOKafkaConsumer and AIOKafkaProducer."""
        options: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
            "metadata_max_age_ms": self.metadata_max_age_ms,
            "request_timeout_ms": self.request_timeout_ms,
            "connections_max_idle_ms": self.connections_max_idle_ms,
        }
        if self.security_protocol in ("SSL", "SASL_SSL"):
            options["ssl_context"] = self.ssl_context()
        if self.security_protocol.startswith("SASL"):
            options["sasl_mechanism"] = self.sasl_mechanism
            if self.sasl_mechanism == "OAUTHBEARER":
                options["sasl_oauth_token_provider"] = self.token_provider()
            else:
                if not self.sasl_username or self.sasl_password is None:
                    raise ConfigError(
                        f"SASL {self.sasl_mechanism} needs --kafka-sasl-username and --kafka-sasl-password"
                    )
                options["sasl_plain_username"] = self.sasl_username
                options["sasl_plain_password"] = self.sasl_password
        return options

    def librdkafka_config(self) -> dict[str, Any]:
        """The same settings as librdkafka properties (the ``confluent`` client)."""
        config: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": self.client_id,
            "security.protocol": self.security_protocol.lower(),
            "metadata.max.age.ms": self.metadata_max_age_ms,
            "socket.timeout.ms": self.request_timeout_ms,
            "connections.max.idle.ms": self.connections_max_idle_ms,
        }
        if self.security_protocol in ("SSL", "SASL_SSL"):
            if self.ssl_ca_file:
                config["ssl.ca.location"] = self.ssl_ca_file
            if self.ssl_cert_file:
                config["ssl.certificate.location"] = self.ssl_cert_file
            if self.ssl_key_file:
                config["ssl.key.location"] = self.ssl_key_file
            config["ssl.endpoint.identification.algorithm"] = "https" if self.ssl_check_hostname else "none"
        if self.security_protocol.startswith("SASL"):
            if self.sasl_mechanism == "OAUTHBEARER":
                raise ConfigError(
                    "--kafka-client confluent does not take aiokafka token providers: "
                    "use --kafka-client aiokafka for OAUTHBEARER"
                )
            if not self.sasl_username or self.sasl_password is None:
                raise ConfigError(f"SASL {self.sasl_mechanism} needs --kafka-sasl-username and --kafka-sasl-password")
            config["sasl.mechanism"] = self.sasl_mechanism
            config["sasl.username"] = self.sasl_username
            config["sasl.password"] = self.sasl_password
        return config

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.ssl_ca_file)
        context.check_hostname = self.ssl_check_hostname
        if self.ssl_cert_file:
            try:
                context.load_cert_chain(self.ssl_cert_file, self.ssl_key_file)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"cannot load the Kafka client certificate: {exc}") from None
        return context

    def token_provider(self) -> Any:
        """Instantiate ``module:callable`` (an aiokafka AbstractTokenProvider factory)."""
        if not self.oauth_token_provider or ":" not in self.oauth_token_provider:
            raise ConfigError("OAUTHBEARER needs --kafka-oauth-token-provider module:callable")
        module_name, _, attribute = self.oauth_token_provider.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(
                f"cannot load the OAUTHBEARER token provider {self.oauth_token_provider}: {exc}"
            ) from None
        return factory()


def describe_error(error: object) -> str:
    """An error of either Kafka client, or of the Event Hubs SDK, as one line with secrets redacted.

    The one describer of transport errors: aiokafka's messages can echo configuration, the Azure SDK's span
    lines (and may echo addresses), librdkafka's come as an error object wrapped in ``KafkaException`` (its
    name says more than the wrapper's). So: the librdkafka error's name and text, or the exception's type and
    its text on one line (``no detail`` when it has none), then the redactor.
    """
    librdkafka = sys.modules.get("confluent_kafka")  # not imported: the error cannot be one of its
    if librdkafka is not None:
        wrapped = error.args[0] if isinstance(error, librdkafka.KafkaException) and error.args else error
        if isinstance(wrapped, librdkafka.KafkaError):
            return redactor.redact(f"{wrapped.name()}: {wrapped.str()}")
    text = " ".join(str(error).split()) or "no detail"
    return redactor.redact(f"{type(error).__name__}: {text}")


# -- why a connection failed -----------------------------------------------------------------
#
# Both clients say little when the brokers refuse a connection: aiokafka raises "Unable to
# bootstrap from [...]" whatever the cause, librdkafka reports a refused client certificate as
# a transport failure and a hostname mismatch as "certificate could not be verified". When the
# source cannot start, ``connect_failure`` dials the first bootstrap servers itself with the
# same settings (a TLS handshake with the same context, ApiVersions, SaslHandshake, one
# PLAIN or SCRAM authentication) and names the step that failed. Never a secret: messages are
# built from the settings' public parts and the brokers' answers, then redacted.

#: Seconds for the whole diagnosis (a dead address must not delay the exit for long).
DIAGNOSIS_TIMEOUT_S = 6.0
_STEP_TIMEOUT_S = 3.0

_API_METADATA = 3
_API_SASL_HANDSHAKE = 17
_API_VERSIONS = 18
_API_SASL_AUTHENTICATE = 36
_UNSUPPORTED_SASL_MECHANISM = 33


class _Refused(Exception):
    """The step that failed, as the sentence a user reads."""


class _Wire:
    """Just enough of the Kafka protocol (non-flexible versions, request header v1) to diagnose."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.correlation = 0

    def call(self, api: int, version: int, body: bytes) -> bytes:
        self.correlation += 1
        client = b"rmmwatch-diagnosis"
        header = struct.pack(">hhih", api, version, self.correlation, len(client)) + client
        self.sock.sendall(struct.pack(">i", len(header) + len(body)) + header + body)
        (size,) = struct.unpack(">i", self._read(4))
        if not 4 <= size <= 1 << 26:  # an HTTP or TLS answer read as a Kafka length
            raise _Refused("the listener does not speak the Kafka protocol (is this the Kafka port?)")
        reply = self._read(size)
        if struct.unpack_from(">i", reply)[0] != self.correlation:
            raise _Refused("the broker answered out of turn (is this a Kafka listener?)")
        return reply[4:]

    def _read(self, count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = self.sock.recv(count - len(data))
            if not chunk:
                raise ConnectionResetError("closed")
            data += chunk
        return data


def _string(data: bytes, at: int) -> tuple[str | None, int]:
    (size,) = struct.unpack_from(">h", data, at)
    if size < 0:
        return None, at + 2
    return data[at + 2 : at + 2 + size].decode("utf-8", "replace"), at + 2 + size


def _bytes(value: bytes) -> bytes:
    return struct.pack(">i", len(value)) + value


def _first_servers(bootstrap: str, limit: int = 3) -> list[tuple[str, int]]:
    servers: list[tuple[str, int]] = []
    for item in bootstrap.split(","):
        host, _, port = item.strip().rpartition(":")
        if host and port.isdigit():
            servers.append((host.strip("[]"), int(port)))
    return servers[:limit]


def _tls_alert(exc: ssl.SSLError) -> str | None:
    """The TLS alert a broker sent (``certificate required``, ``bad certificate``...), if that is what this is."""
    text = str(exc)
    marker = "alert "
    if marker not in text:
        return None
    alert = text.split(marker, 1)[1].split("(", 1)[0].split(":", 1)[0].strip(" ]")
    return alert.replace("_", " ") or None


def _refused_by_tls_peer(settings: KafkaSettings, alert: str) -> _Refused:
    if not settings.ssl_cert_file:
        return _Refused(
            "the broker requires a client certificate (mutual TLS; TLS alert: "
            f"{alert}): give --kafka-ssl-cert-file and --kafka-ssl-key-file"
        )
    return _Refused(
        f"the broker refused the client certificate {settings.ssl_cert_file} (TLS alert: {alert}): "
        "it is not signed by a CA the broker trusts, or it has expired"
    )


def _verify_failure(settings: KafkaSettings, host: str, exc: ssl.SSLCertVerificationError) -> _Refused:
    detail = (exc.verify_message or str(exc)).rstrip(".")
    lowered = detail.lower()
    if "mismatch" in lowered or "not valid for" in lowered:
        return _Refused(
            f"TLS hostname mismatch: the broker's certificate is not valid for {host!r} "
            "(dial a name the certificate lists, or set --kafka-ssl-check-hostname false)"
        )
    if "expired" in lowered:
        return _Refused(f"TLS handshake failed: the broker's certificate has expired ({detail})")
    trusted = settings.ssl_ca_file or "the system's trust store (give --kafka-ssl-ca-file)"
    if "issuer" in lowered or "self-signed" in lowered or "self signed" in lowered:
        return _Refused(
            "TLS handshake failed: certificate verify failed (unknown CA): the broker's certificate "
            f"is not signed by a CA in {trusted}"
        )
    return _Refused(f"TLS handshake failed: certificate verify failed ({detail})")


def _scram_authenticate(wire: _Wire, mechanism: str, username: str, password: str) -> None:
    """RFC 5802 client side, up to the broker's verdict on the proof."""
    digest = "sha256" if mechanism == "SCRAM-SHA-256" else "sha512"
    nonce = base64.b64encode(os.urandom(18)).decode()
    user = username.replace("=", "=3D").replace(",", "=2C")
    first_bare = f"n={user},r={nonce}"
    server_first = _sasl_step(wire, ("n,," + first_bare).encode(), mechanism, username)
    fields = dict(item.split("=", 1) for item in server_first.decode().split(",") if "=" in item)
    if not fields.get("r", "").startswith(nonce) or "s" not in fields or "i" not in fields:
        raise _Refused(f"SASL {mechanism}: the broker's first message is not SCRAM")
    salted = hashlib.pbkdf2_hmac(digest, password.encode(), base64.b64decode(fields["s"]), int(fields["i"]))
    client_key = hmac.digest(salted, b"Client Key", digest)
    stored_key = hashlib.new(digest, client_key).digest()
    final_bare = f"c=biws,r={fields['r']}"
    auth_message = f"{first_bare},{server_first.decode()},{final_bare}".encode()
    signature = hmac.digest(stored_key, auth_message, digest)
    proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, signature, strict=True))).decode()
    _sasl_step(wire, f"{final_bare},p={proof}".encode(), mechanism, username)


def _sasl_step(wire: _Wire, token: bytes, mechanism: str, username: str) -> bytes:
    reply = wire.call(_API_SASL_AUTHENTICATE, 1, _bytes(token))
    (error,) = struct.unpack_from(">h", reply)
    message, at = _string(reply, 2)
    if error:
        said = f" (the broker said: {message})" if message else ""
        raise _Refused(
            f"SASL authentication failed: wrong username or password for {username!r} (mechanism {mechanism}){said}"
        )
    (size,) = struct.unpack_from(">i", reply, at)
    return reply[at + 4 : at + 4 + max(0, size)]


def _authenticate(wire: _Wire, settings: KafkaSettings) -> None:
    mechanism = settings.sasl_mechanism
    reply = wire.call(_API_SASL_HANDSHAKE, 1, struct.pack(">h", len(mechanism)) + mechanism.encode())
    (error,) = struct.unpack_from(">h", reply)
    (count,) = struct.unpack_from(">i", reply, 2)
    offered, at = [], 6
    for _ in range(count):
        name, at = _string(reply, at)
        offered.append(name or "")
    if error == _UNSUPPORTED_SASL_MECHANISM:
        raise _Refused(
            f"the broker does not enable SASL mechanism {mechanism} (it offers {', '.join(offered) or 'none'})"
        )
    if error:
        raise _Refused(f"the broker refused the SASL handshake (error code {error})")
    if mechanism == "OAUTHBEARER" or not settings.sasl_username or settings.sasl_password is None:
        return  # a token provider is the client's to call: the mechanism is all this checks
    if mechanism == "PLAIN":
        token = b"\0" + settings.sasl_username.encode() + b"\0" + settings.sasl_password.encode()
        _sasl_step(wire, token, mechanism, settings.sasl_username)
    else:
        _scram_authenticate(wire, mechanism, settings.sasl_username, settings.sasl_password)


def _probe(settings: KafkaSettings, host: str, port: int) -> None:
    """Dial one broker like the clients do; raise :class:`_Refused` naming the step that failed."""
    try:
        raw = socket.create_connection((host, port), timeout=_STEP_TIMEOUT_S)
    except TimeoutError:
        raise _Refused(f"no answer from {host}:{port} within {_STEP_TIMEOUT_S:.0f} s") from None
    except OSError as exc:
        raise _Refused(f"nothing accepts connections at {host}:{port} ({exc.strerror or exc})") from None
    sock: socket.socket = raw
    tls = settings.security_protocol in ("SSL", "SASL_SSL")
    try:
        if tls:
            try:
                sock = settings.ssl_context().wrap_socket(raw, server_hostname=host)
            except ssl.SSLCertVerificationError as exc:
                raise _verify_failure(settings, host, exc) from None
            except ssl.SSLError as exc:
                alert = _tls_alert(exc)
                if alert:
                    raise _refused_by_tls_peer(settings, alert) from None
                if "wrong version number" in str(exc) or "record layer failure" in str(exc):
                    raise _Refused(
                        "the listener does not speak TLS (is its security protocol PLAINTEXT or SASL_PLAINTEXT?)"
                    ) from None
                raise _Refused(f"TLS handshake failed: {exc}") from None
        wire = _Wire(sock)
        try:
            wire.call(_API_VERSIONS, 0, b"")
        except ssl.SSLError as exc:  # TLS 1.3: the broker judges the client certificate after the handshake
            raise _refused_by_tls_peer(settings, _tls_alert(exc) or str(exc)) from None
        except (ConnectionError, struct.error):
            if tls:
                raise _refused_by_tls_peer(settings, "connection closed after the handshake") from None
            raise _Refused(
                "the broker closed the connection before answering: does the listener expect TLS "
                "(security protocol SSL or SASL_SSL)?"
            ) from None
        if settings.security_protocol.startswith("SASL"):
            _authenticate(wire, settings)
            return
        try:  # a SASL listener answers ApiVersions to anyone, then drops an unauthenticated client
            wire.call(_API_METADATA, 1, struct.pack(">i", 0))
        except (ConnectionError, struct.error):
            raise _Refused(
                "the broker closed the connection of an unauthenticated client: the listener requires "
                "SASL (security protocol SASL_PLAINTEXT or SASL_SSL)"
            ) from None
    except TimeoutError:
        raise _Refused(f"{host}:{port} stopped answering (more than {_STEP_TIMEOUT_S:.0f} s)") from None
    except (ConnectionError, struct.error) as exc:
        raise _Refused(f"the broker closed the connection ({type(exc).__name__})") from None
    finally:
        sock.close()
        raw.close()


def diagnose_connection(settings: KafkaSettings) -> str | None:
    """Why the bootstrap servers refuse these settings (blocking, a few seconds at most), or None.

    Up to three bootstrap servers are tried in turn; the first that takes every step ends the
    diagnosis with None (these settings work there, so the client's own error is the better
    description: a topic, a group, a timeout the brokers caused). Otherwise the first refusal.
    """
    first: str | None = None
    for host, port in _first_servers(settings.bootstrap_servers):
        try:
            _probe(settings, host, port)
            return None
        except _Refused as refused:
            reason = str(refused)
        except (OSError, ValueError, ConfigError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
        first = first or redactor.redact(reason)
    return first


def connection_target(settings: KafkaSettings) -> str:
    """Where and as whom a client connects: ``host:port (SASL_SSL, SASL PLAIN as user)``."""
    how = settings.security_protocol
    if how.startswith("SASL"):
        how += f", SASL {settings.sasl_mechanism}"
        if settings.sasl_mechanism != "OAUTHBEARER":
            how += f" as {settings.sasl_username}"
    return f"{settings.bootstrap_servers} ({how})"


async def connect_failure(settings: KafkaSettings, client_error: str) -> str:
    """The message of a source that could not connect: where, as whom, and why.

    ``client_error`` is the client's own description (already redacted); it is the reason given
    when the diagnosis finds every step working.
    """
    try:
        reason = await asyncio.wait_for(asyncio.to_thread(diagnose_connection, settings), DIAGNOSIS_TIMEOUT_S)
    except TimeoutError:
        reason = None
    return redactor.redact(f"cannot connect to Kafka at {connection_target(settings)}: {reason or client_error}")
