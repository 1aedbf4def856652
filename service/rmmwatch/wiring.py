"""Wiring: the one place where ``run``'s configuration becomes a source, a store, sinks and the App.

Adapters never see :class:`~rmmwatch.config.RunConfig`: each is built here from typed settings
of its own (``KafkaSettings``, ``EventHubSettings``, ``GeneratorConfig``, a store URL and its
options, a sink spec). Adding a source or a sink is one adapter module plus one branch here
(docs/architecture.md). Adapter modules are imported lazily: a detector reading files does
not load the Kafka or Azure client libraries.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rmmwatch.app import App
from rmmwatch.config import ConfigError, RunConfig
from rmmwatch.delivery import AlertRoutes
from rmmwatch.events import Detector
from rmmwatch.kafka_settings import EVENTHUBS_USERNAME, EventHubsConnectionString, KafkaSettings
from rmmwatch.logging import redactor
from rmmwatch.metrics import Metrics
from rmmwatch.rules import Rule
from rmmwatch.sinks.base import AlertSink, DeadLetterSink
from rmmwatch.sources.base import Source
from rmmwatch.stores import open_store
from rmmwatch.stores.base import Store
from rmmwatch.synthetic import GeneratorConfig

if TYPE_CHECKING:
    from rmmwatch.sources.eventhub_client import EventHubSettings


def build_app(config: RunConfig, rules: Sequence[Rule]) -> App:
    """The running service for ``config``: every part built, nothing opened yet.

    Raises :class:`ConfigError` for a configuration that cannot work (it names the option)."""
    metrics = Metrics()
    try:
        return App(
            rules=rules,
            source=source_for(config, metrics),
            store=store_for(config, rules),
            sinks=AlertRoutes(sinks_for(config), shadow_sinks_for(config), shadow_rule_ids(rules)),
            dead_letters=dead_letters_for(config),
            metrics=metrics,
            detector=Detector(rules, max_message_bytes=config.max_message_bytes, prefilter_engine=config.prefilter),
            tick_interval_s=config.tick_interval,
            max_pending_alerts=config.max_pending_alerts,
            metrics_host=config.metrics_host,
            metrics_port=config.metrics_port,
            shutdown_timeout_s=config.shutdown_timeout,
        )
    except (ValueError, RuntimeError) as exc:
        raise ConfigError(str(exc)) from None


# -- stores ------------------------------------------------------------------------------------


def redis_options(config: RunConfig) -> dict[str, Any]:
    """The Redis store's own settings (keyword arguments of ``RedisStore``)."""
    return {
        "prefix": config.redis_prefix,
        "username": config.redis_username,
        "password": config.redis_password,
        "ca_file": config.redis_ca_file,
        "orphan_age_s": config.redis_orphan_age,
        "cluster": config.redis_cluster,
    }


def store_for(config: RunConfig, rules: Sequence[Rule], *, read_only: bool = False) -> Store:
    """The store of ``--store`` (``state`` opens it read-only)."""
    if config.redis_cluster:
        # Found by the option tests on a real Redis Cluster: redis-py refuses EVALSHA inside a cluster
        # pipeline, so the first batch with a match would crash the detector. Refused until it works.
        raise ConfigError(
            "--redis-cluster is not supported yet: the Redis store's pipelined scripts are refused by Redis Cluster "
            "clients; use a standalone Redis (or one with replicas and Sentinel)"
        )
    return open_store(
        config.store_url(),
        rules,
        sqlite_synchronous=config.sqlite_synchronous,
        read_only=read_only,
        redis=redis_options(config),
    )


# -- sources -----------------------------------------------------------------------------------


def generator_config(config: RunConfig) -> GeneratorConfig:
    """The synthetic stream's settings."""
    return GeneratorConfig(
        seed=config.synthetic_seed,
        devices=config.synthetic_devices,
        netsupport_ratio=config.synthetic_netsupport_ratio,
    )


def source_for(config: RunConfig, metrics: Metrics | None = None) -> Source:
    """The source of ``--source``: synthetic, stdin, file:PATH, kafka or eventhub."""
    spec = config.source
    # An unshared store (sqlite) needs every partition in one process: the Kafka and Event Hubs
    # sources stop the detector if another replica shares the group.
    exclusive = config.store_url().startswith("sqlite:")
    if spec == "synthetic":
        from rmmwatch.sources.synthetic import SyntheticSource  # noqa: PLC0415

        return SyntheticSource(
            generator_config(config),
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
        return FileSource(
            path,
            follow=config.follow,
            checkpoint=checkpoint,
            max_messages=config.batch_max_messages,
            max_message_bytes=config.max_message_bytes,
        )
    if spec == "kafka":
        settings = kafka_settings(config)
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
            exclusive=exclusive,
        )
    if spec == "eventhub":
        from rmmwatch.sources.eventhub import EventHubSource  # noqa: PLC0415

        return EventHubSource(
            eventhub_settings(config), max_messages=config.batch_max_messages, metrics=metrics, exclusive=exclusive
        )
    raise ValueError(f"unknown source {spec!r}: use synthetic, stdin, file:PATH, kafka or eventhub")


def kafka_settings(config: RunConfig) -> KafkaSettings:
    """Kafka settings from ``run``'s options, applying the Event Hubs preset when configured."""
    if config.eventhubs_connection_string:
        _refuse_what_the_preset_decides(config)
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
            session_timeout_ms=_given(config, "kafka_session_timeout_ms") or 30_000,
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


_DEFAULTS = {field.name: field.default for field in dataclasses.fields(RunConfig)}

#: What the Event Hubs preset decides, with the value it decides (None: the preset gives none).
_PRESET_DECIDES: dict[str, str | None] = {
    "kafka_security_protocol": "SASL_SSL",
    "kafka_sasl_mechanism": "PLAIN",
    "kafka_sasl_username": EVENTHUBS_USERNAME,
    "kafka_sasl_password": None,
    "kafka_oauth_token_provider": None,
    "kafka_ssl_cert_file": None,
    "kafka_ssl_key_file": None,
}


def _given(config: RunConfig, name: str) -> Any:
    """The option's value if it differs from its default (it was given), else None."""
    value = getattr(config, name)
    return None if value == _DEFAULTS[name] else value


def _refuse_what_the_preset_decides(config: RunConfig) -> None:
    """An option the preset overrides, given with another value, was being ignored without a word: refused."""
    for name, decided in _PRESET_DECIDES.items():
        value = _given(config, name)
        if value is not None and value != decided:
            flag = "--" + name.replace("_", "-")
            shown = "(given)" if name == "kafka_sasl_password" else repr(value)
            raise ConfigError(
                f"{flag} {shown} contradicts --eventhubs-connection-string: the Event Hubs preset uses "
                + (f"{decided!r}" if decided is not None else "the connection string alone")
                + f"; drop {flag}, or drop the preset and give every Kafka option yourself"
            )


def eventhub_settings(config: RunConfig) -> EventHubSettings:
    """The Event Hubs source's settings from ``run``'s options, validated (ConfigError names the option)."""
    from rmmwatch.sources.eventhub_client import EventHubSettings, start_position  # noqa: PLC0415

    text = config.eventhub_connection_string
    fqns = config.eventhub_fully_qualified_namespace
    if text and fqns:
        raise ConfigError("give either --eventhub-connection-string or --eventhub-fully-qualified-namespace, not both")
    entity: str | None = None
    if text:
        connection = EventHubsConnectionString(text)
        namespace, entity = connection.host, connection.entity_path
    elif fqns:
        namespace = fqns.strip().removeprefix("sb://").rstrip("/")
    else:
        raise ConfigError(
            "the eventhub source needs --eventhub-connection-string or --eventhub-fully-qualified-namespace (Entra ID)"
        )
    hub = config.eventhub_name or entity
    if not hub:
        raise ConfigError("the eventhub source needs --eventhub-name (or an EntityPath in the connection string)")
    if entity and config.eventhub_name and entity != config.eventhub_name:
        raise ConfigError(f"--eventhub-name {config.eventhub_name!r} differs from the connection string's EntityPath")
    if config.eventhub_checkpoint_connection_string and config.eventhub_checkpoint_account_url:
        raise ConfigError(
            "give either --eventhub-checkpoint-connection-string or --eventhub-checkpoint-account-url, not both"
        )
    if config.eventhub_checkpoint_connection_string:
        for piece in config.eventhub_checkpoint_connection_string.split(";"):
            key, _, value = piece.partition("=")
            if key.strip().lower() in ("accountkey", "sharedaccesssignature"):
                redactor.register(value.strip())
    start_position(config.eventhub_start)
    if config.eventhub_load_balancing_interval <= 0:
        raise ConfigError("--eventhub-load-balancing-interval must be positive")
    if config.eventhub_ownership_expiry <= config.eventhub_load_balancing_interval:
        raise ConfigError("--eventhub-ownership-expiry must be longer than --eventhub-load-balancing-interval")
    return EventHubSettings(
        namespace=namespace,
        hub=hub,
        consumer_group=config.eventhub_consumer_group,
        connection_string=text or None,
        checkpoint_connection_string=config.eventhub_checkpoint_connection_string or None,
        checkpoint_account_url=config.eventhub_checkpoint_account_url or None,
        checkpoint_container=config.eventhub_checkpoint_container,
        checkpoint_api_version=config.eventhub_checkpoint_api_version or None,
        start=config.eventhub_start,
        load_balancing=config.eventhub_load_balancing,
        load_balancing_interval_s=config.eventhub_load_balancing_interval,
        ownership_expiry_s=config.eventhub_ownership_expiry,
    )


# -- sinks -------------------------------------------------------------------------------------


def sinks_for(config: RunConfig) -> list[AlertSink]:
    """Alert sinks for the ``stdout``, ``jsonl:PATH``, ``webhook:URL``, ``kafka:TOPIC`` specs of ``--sink``."""
    sinks = [alert_sink(config, spec) for spec in config.sinks]
    if [s.name for s in sinks].count("stdout") > 1:
        raise ValueError("stdout is listed twice")
    return sinks


def shadow_sinks_for(config: RunConfig) -> list[AlertSink]:
    """The shadow rules' sinks (``--shadow-sink``): ``log`` (the default) or any ``--sink`` spec.

    A spec given both as a sink and as a shadow sink is refused: shadow alerts would reach the live
    destination (stdout, a file, a webhook, a topic) they must never reach."""
    both = sorted(set(config.sinks) & set(config.shadow_sinks))
    if both:
        raise ValueError(
            f"{both[0]} is both a --sink and a --shadow-sink: shadow alerts must not reach a live sink; "
            "give the shadow sink a destination of its own"
        )
    if len(set(config.shadow_sinks)) != len(config.shadow_sinks):
        raise ValueError("a --shadow-sink is listed twice")
    return [alert_sink(config, spec, shadow=True) for spec in config.shadow_sinks]


def shadow_rule_ids(rules: Sequence[Rule]) -> frozenset[str]:
    """The ids of the rules whose alerts go only to the shadow sinks."""
    return frozenset(rule.id for rule in rules if rule.mode == "shadow")


def alert_sink(config: RunConfig, spec: str, *, shadow: bool = False) -> AlertSink:
    """One alert sink of a ``--sink`` spec (``--shadow-sink`` also takes ``log``)."""
    if spec == "stdout":
        from rmmwatch.sinks.stream import StdoutSink  # noqa: PLC0415

        return StdoutSink()
    if spec.startswith("jsonl:"):
        from rmmwatch.sinks.stream import JsonlSink  # noqa: PLC0415

        return JsonlSink(spec.removeprefix("jsonl:"))
    if spec.startswith("webhook:"):
        from rmmwatch.sinks.webhook import WebhookSink  # noqa: PLC0415

        return WebhookSink(
            spec.removeprefix("webhook:"),
            token=os.environ.get(config.webhook_token_env) or None,
            timeout_s=config.webhook_timeout,
            retries=config.webhook_retries,
        )
    if spec.startswith("kafka:"):
        from rmmwatch.sinks.kafka import KafkaSink  # noqa: PLC0415

        return KafkaSink(kafka_settings(config), spec.removeprefix("kafka:"))
    if spec == "log" and shadow:
        from rmmwatch.sinks.log import LogAlertSink  # noqa: PLC0415

        return LogAlertSink()
    flag, choices = ("--shadow-sink", "log, stdout") if shadow else ("--sink", "stdout")
    raise ValueError(f"unknown {flag} {spec.split(':', 1)[0]!r}: use {choices}, jsonl:PATH, webhook:URL or kafka:TOPIC")


def dead_letters_for(config: RunConfig) -> DeadLetterSink:
    """The dead-letter destination of ``--dead-letter``: ``log``, ``jsonl:PATH`` or ``kafka:TOPIC``."""
    spec = config.dead_letter
    if spec == "log":
        from rmmwatch.sinks.deadletter import LogOnlyDeadLetters  # noqa: PLC0415

        return LogOnlyDeadLetters()
    if spec.startswith("jsonl:"):
        from rmmwatch.sinks.deadletter import JsonlDeadLetters  # noqa: PLC0415

        return JsonlDeadLetters(spec.removeprefix("jsonl:"))
    if spec.startswith("kafka:"):
        from rmmwatch.sinks.kafka import KafkaDeadLetters  # noqa: PLC0415

        return KafkaDeadLetters(kafka_settings(config), spec.removeprefix("kafka:"))
    raise ValueError(f"unknown dead-letter destination {spec!r}: use log, jsonl:PATH or kafka:TOPIC")
