"""What every Kafka client of rmmwatch shares: connection security and the Event Hubs preset.

Azure Event Hubs' Kafka endpoint (learn.microsoft.com/azure/event-hubs/azure-event-hubs-kafka-overview)
is ``<namespace>.servicebus.windows.net:9093`` over SASL_SSL with mechanism PLAIN, the literal
username ``$ConnectionString`` and the connection string as the password. Microsoft's
recommended client settings: ``session.timeout.ms`` 30000, ``metadata.max.age.ms`` 180000
(idle connections are closed after 240 s, so ``connections.max.idle.ms`` stays below),
``request.timeout.ms`` 60000. The preset sets all of this from one connection string; an
explicit ``--kafka-bootstrap-servers`` still wins (useful behind a private endpoint alias).
"""

from __future__ import annotations

import importlib
import ssl
import sys
from dataclasses import dataclass, field
from typing import Any

from rmmwatch.config import ConfigError, RunConfig
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


def settings_from_config(config: RunConfig) -> KafkaSettings:
    """Kafka settings from ``run``'s options, applying the Event Hubs preset when configured."""
    if config.eventhubs_connection_string:
        connection = EventHubsConnectionString(config.eventhubs_connection_string)
        return KafkaSettings(
            bootstrap_servers=config.kafka_bootstrap_servers or f"{connection.host}:9093",
            client_id=config.kafka_client_id,
            security_protocol="SASL_SSL",
            sasl_mechanism="PLAIN",
            sasl_username=EVENTHUBS_USERNAME,
            sasl_password=connection.text,
            ssl_ca_file=config.kafka_ssl_ca_file,
            ssl_check_hostname=config.kafka_ssl_check_hostname,
            session_timeout_ms=30_000,
            metadata_max_age_ms=180_000,
            request_timeout_ms=60_000,
            connections_max_idle_ms=180_000,
            default_topic=connection.entity_path,
        )
    if not config.kafka_bootstrap_servers:
        raise ConfigError("Kafka needs --kafka-bootstrap-servers (or --eventhubs-connection-string)")
    return KafkaSettings(
        bootstrap_servers=config.kafka_bootstrap_servers,
        client_id=config.kafka_client_id,
        security_protocol=config.kafka_security_protocol,
        sasl_mechanism=config.kafka_sasl_mechanism,
        sasl_username=config.kafka_sasl_username,
        sasl_password=config.kafka_sasl_password,
        oauth_token_provider=config.kafka_oauth_token_provider,
        ssl_ca_file=config.kafka_ssl_ca_file,
        ssl_cert_file=config.kafka_ssl_cert_file,
        ssl_key_file=config.kafka_ssl_key_file,
        ssl_check_hostname=config.kafka_ssl_check_hostname,
        session_timeout_ms=config.kafka_session_timeout_ms,
    )


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
