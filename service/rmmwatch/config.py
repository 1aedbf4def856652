"""Configuration of ``rmmwatch run``: every option, its environment variable, default and help.

One table (:data:`RUN_OPTIONS`) drives the command line, the environment variables (in
Kubernetes everything is set by env), and the README's reference, which a test keeps in
sync. Precedence: command line, then environment, then default.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rmmwatch.logging import redactor


class ConfigError(ValueError):
    """An option value that cannot be used (named, never echoing secrets)."""


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _optional_int(text: str) -> int | None:
    return None if text.strip() in ("", "none") else int(text)


@dataclass(frozen=True, slots=True)
class Option:
    """One ``run`` option."""

    flag: str
    help: str
    default: Any = None
    parse: Callable[[str], Any] = str
    choices: Sequence[str] | None = None
    repeat: bool = False  # repeatable flag; the env var is comma-separated
    switch: bool = False  # a flag without a value
    secret: bool = False  # never printed (its env var holds a secret)
    group: str = "general"

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    @property
    def env(self) -> str:
        return "RMMWATCH_" + self.dest.upper()


RUN_OPTIONS: tuple[Option, ...] = (
    # rules
    Option(
        "--rule",
        "rule file (Sentinel YAML) or bundled:<name>; repeatable; default: every bundled rule",
        repeat=True,
        group="rules",
    ),
    Option(
        "--no-exclusions",
        "run the bare hunting query, without the rules' named exclusions",
        False,
        _bool,
        switch=True,
        group="rules",
    ),
    # source
    Option("--source", "synthetic | stdin | file:PATH | kafka | eventhub", "synthetic", group="source"),
    Option("--follow", "file source: keep reading as the file grows", False, _bool, switch=True, group="source"),
    Option(
        "--checkpoint",
        "file source: where to keep the committed offset (default: <data-dir>/file-offset.json "
        "with a durable store, none with memory)",
        group="source",
    ),
    Option("--batch-max-messages", "messages per batch at most", 500, int, group="source"),
    Option(
        "--max-message-bytes",
        "larger messages are dead-lettered as oversized (Event Hubs' limit is 1 MB)",
        1_048_576,
        int,
        group="source",
    ),
    Option(
        "--synthetic-rate",
        "synthetic source: messages per second (0: as fast as possible)",
        20.0,
        float,
        group="synthetic",
    ),
    Option(
        "--synthetic-count",
        "synthetic source: stop after this many messages (default: never)",
        None,
        _optional_int,
        group="synthetic",
    ),
    Option("--synthetic-seed", "synthetic source: random seed", 1, int, group="synthetic"),
    Option("--synthetic-devices", "synthetic source: device population", 2000, int, group="synthetic"),
    Option(
        "--synthetic-netsupport-ratio",
        "synthetic source: fraction of records that are NetSupport launches",
        0.002,
        float,
        group="synthetic",
    ),
    # kafka
    Option("--kafka-bootstrap-servers", "Kafka bootstrap servers, host:port[,host:port]", group="kafka"),
    Option(
        "--kafka-topics",
        "topics to consume; repeatable (with the Event Hubs preset: the hub's name)",
        repeat=True,
        group="kafka",
    ),
    Option(
        "--kafka-group-id",
        "consumer group (Event Hubs: a Kafka consumer group, not an Event Hubs one)",
        "rmmwatch",
        group="kafka",
    ),
    Option(
        "--kafka-start", "where a new group starts: earliest, latest, or an ISO 8601 time", "earliest", group="kafka"
    ),
    Option(
        "--kafka-client",
        "Kafka client library of the source: confluent (librdkafka, several times faster) or aiokafka",
        "confluent",
        choices=("confluent", "aiokafka"),
        group="kafka",
    ),
    Option("--kafka-client-id", "client id sent to the brokers", "rmmwatch", group="kafka"),
    Option(
        "--kafka-security-protocol",
        "PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL",
        "PLAINTEXT",
        choices=("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"),
        group="kafka",
    ),
    Option(
        "--kafka-sasl-mechanism",
        "PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512 | OAUTHBEARER",
        "PLAIN",
        choices=("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"),
        group="kafka",
    ),
    Option("--kafka-sasl-username", "SASL username", group="kafka"),
    Option("--kafka-sasl-password", "SASL password (or RMMWATCH_KAFKA_SASL_PASSWORD_FILE)", secret=True, group="kafka"),
    Option(
        "--kafka-oauth-token-provider",
        "OAUTHBEARER: module:callable returning an aiokafka token provider",
        group="kafka",
    ),
    Option("--kafka-ssl-ca-file", "PEM file of the CA(s) to trust (default: the system's)", group="kafka"),
    Option("--kafka-ssl-cert-file", "PEM client certificate (mutual TLS)", group="kafka"),
    Option("--kafka-ssl-key-file", "PEM client key (mutual TLS)", group="kafka"),
    Option(
        "--kafka-ssl-check-hostname",
        "verify the broker's host name against its certificate",
        True,
        _bool,
        group="kafka",
    ),
    Option("--kafka-session-timeout-ms", "consumer group session timeout", 10_000, int, group="kafka"),
    Option(
        "--kafka-rebalance-wait",
        "seconds a revoked partition waits for its in-flight batch to commit",
        20.0,
        float,
        group="kafka",
    ),
    Option(
        "--eventhubs-connection-string",
        "Event Hubs Kafka endpoint preset: derives <namespace>.servicebus.windows.net:9093, SASL_SSL, PLAIN, "
        "$ConnectionString and Microsoft's recommended timeouts (or RMMWATCH_EVENTHUBS_CONNECTION_STRING_FILE)",
        secret=True,
        group="kafka",
    ),
    Option("--dead-letter-topic", "shorthand for --dead-letter kafka:TOPIC", group="kafka"),
    # eventhub (Azure Event Hubs over AMQP, with blob checkpoints)
    Option(
        "--eventhub-connection-string",
        "Event Hubs over AMQP: namespace connection string (with --eventhub-name) or hub connection string "
        "(EntityPath=...) (or RMMWATCH_EVENTHUB_CONNECTION_STRING_FILE)",
        secret=True,
        group="eventhub",
    ),
    Option(
        "--eventhub-fully-qualified-namespace",
        "<namespace>.servicebus.windows.net, authenticated with Entra ID (DefaultAzureCredential, extra 'entra')",
        group="eventhub",
    ),
    Option("--eventhub-name", "the event hub (default: the connection string's EntityPath)", group="eventhub"),
    Option(
        "--eventhub-consumer-group",
        "Event Hubs consumer group (give rmmwatch its own)",
        "$Default",
        group="eventhub",
    ),
    Option(
        "--eventhub-start",
        "where a partition without a checkpoint starts: earliest, latest, or an ISO 8601 time",
        "earliest",
        group="eventhub",
    ),
    Option(
        "--eventhub-checkpoint-connection-string",
        "storage account connection string for checkpoints and partition ownership "
        "(or RMMWATCH_EVENTHUB_CHECKPOINT_CONNECTION_STRING_FILE)",
        secret=True,
        group="eventhub",
    ),
    Option(
        "--eventhub-checkpoint-account-url",
        "https://<account>.blob.core.windows.net for checkpoints, authenticated with Entra ID",
        group="eventhub",
    ),
    Option(
        "--eventhub-checkpoint-container",
        "blob container for checkpoints and ownership (created if missing)",
        "rmmwatch-checkpoints",
        group="eventhub",
    ),
    Option(
        "--eventhub-checkpoint-api-version",
        "storage API version of the checkpoint store's blob client (default: the SDK's)",
        group="eventhub",
    ),
    Option(
        "--eventhub-load-balancing",
        "how replicas claim partitions: greedy (all unclaimed at once) or balanced (one per interval)",
        "greedy",
        choices=("greedy", "balanced"),
        group="eventhub",
    ),
    Option(
        "--eventhub-load-balancing-interval",
        "seconds between two load-balancing rounds (ownership renewal)",
        30.0,
        float,
        group="eventhub",
    ),
    Option(
        "--eventhub-ownership-expiry",
        "seconds after which an unrenewed partition ownership may be claimed by another replica",
        180.0,
        float,
        group="eventhub",
    ),
    # state
    Option(
        "--store",
        "memory | sqlite[:PATH] | redis://... (sqlite default path: <data-dir>/rmmwatch.db)",
        "sqlite",
        group="state",
    ),
    Option("--data-dir", "directory for the sqlite database and file checkpoints", "./data", group="state"),
    Option("--redis-username", "redis store: ACL user", group="state"),
    Option(
        "--redis-password",
        "redis store: password (or RMMWATCH_REDIS_PASSWORD_FILE); never in the URL",
        secret=True,
        group="state",
    ),
    Option("--redis-ca-file", "redis store over rediss://: PEM CA to trust", group="state"),
    Option("--redis-prefix", "redis store: key prefix (one per deployment sharing a Redis)", "rmmwatch", group="state"),
    Option("--redis-cluster", "redis store: the URL is a Redis Cluster node", False, _bool, switch=True, group="state"),
    Option(
        "--redis-orphan-age",
        "redis store: seconds before another replica delivers an alert whose creator did not",
        10.0,
        float,
        group="state",
    ),
    Option(
        "--sqlite-synchronous",
        "sqlite durability: full (survives power loss) or normal (survives a crash)",
        "full",
        choices=("full", "normal", "extra"),
        group="state",
    ),
    Option(
        "--tick-interval",
        "seconds between wall-clock ticks (expiry, activation, throttled updates)",
        1.0,
        float,
        group="state",
    ),
    # alerts
    Option("--sink", "stdout | jsonl:PATH | webhook:URL; repeatable", repeat=True, group="alerts"),
    Option(
        "--webhook-token-env",
        "name of the environment variable holding the webhook bearer token",
        "RMMWATCH_WEBHOOK_TOKEN",
        group="alerts",
    ),
    Option("--webhook-timeout", "seconds per webhook attempt", 5.0, float, group="alerts"),
    Option(
        "--webhook-retries",
        "webhook retries per alert (exponential backoff with jitter)",
        3,
        int,
        group="alerts",
    ),
    Option(
        "--max-pending-alerts",
        "stop reading input while this many alerts wait for delivery",
        10_000,
        int,
        group="alerts",
    ),
    Option(
        "--dead-letter",
        "log | jsonl:PATH: where undecodable input goes (always counted)",
        "log",
        group="alerts",
    ),
    # operations
    Option(
        "--metrics-host",
        "address of the /metrics, /healthz, /readyz server",
        "0.0.0.0",  # noqa: S104  (a pod's metrics port listens on all interfaces)
        group="operations",
    ),
    Option(
        "--metrics-port",
        "port of that server (0: any free port, -1: no server)",
        9464,
        int,
        group="operations",
    ),
    Option(
        "--log-level",
        "debug | info | warning | error",
        "info",
        choices=("debug", "info", "warning", "error"),
        group="operations",
    ),
    Option("--log-format", "json | console", "json", choices=("json", "console"), group="operations"),
    Option(
        "--prefilter",
        "byte prefilter engine",
        "auto",
        choices=("auto", "hyperscan", "python"),
        group="operations",
    ),
    Option(
        "--shutdown-timeout",
        "seconds to drain the in-flight batch on SIGTERM",
        25.0,
        float,
        group="operations",
    ),
)


def add_run_options(parser: argparse.ArgumentParser, options: Sequence[Option] = RUN_OPTIONS) -> None:
    """Declare ``options`` on ``parser`` with their environment fallbacks in the help."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for option in options:
        group = groups.get(option.group)
        if group is None:
            group = groups[option.group] = parser.add_argument_group(option.group)
        text = f"{option.help} [env {option.env}]"
        if option.switch:
            group.add_argument(option.flag, action="store_const", const=True, default=None, help=text)
        elif option.repeat:
            group.add_argument(option.flag, action="append", default=None, help=text)
        else:
            group.add_argument(option.flag, default=None, choices=option.choices, help=text)


def resolve(
    namespace: argparse.Namespace,
    environ: dict[str, str] | None = None,
    options: Sequence[Option] = RUN_OPTIONS,
) -> dict[str, Any]:
    """Option values: command line, else environment, else default; parsed and validated."""
    environ = dict(os.environ) if environ is None else environ
    values: dict[str, Any] = {}
    for option in options:
        given = getattr(namespace, option.dest, None)
        source = option.flag
        if given is None and option.env in environ:
            raw = environ[option.env]
            given = [v.strip() for v in raw.split(",") if v.strip()] if option.repeat else raw
            source = option.env
        elif given is None and option.secret and f"{option.env}_FILE" in environ:
            source = f"{option.env}_FILE"
            try:
                with open(environ[source], encoding="utf-8") as handle:
                    given = handle.read().strip()
            except OSError as exc:
                raise ConfigError(f"{source}: cannot read the file: {exc.strerror or exc}") from None
        if given is None:
            values[option.dest] = [] if option.repeat and option.default is None else option.default
            continue
        if option.repeat or given is True:
            values[option.dest] = given
            continue
        try:
            value = option.parse(given)
        except (TypeError, ValueError):
            shown = "<hidden>" if option.secret else repr(given)
            raise ConfigError(f"{source}: cannot use {shown}") from None
        if option.choices and value not in option.choices:
            raise ConfigError(f"{source}: must be one of {', '.join(option.choices)}")
        if option.secret:
            redactor.register(value)
        values[option.dest] = value
    return values


@dataclass(slots=True)
class RunConfig:
    """The resolved configuration of ``rmmwatch run``."""

    rule: list[str] = field(default_factory=list)
    no_exclusions: bool = False
    source: str = "synthetic"
    follow: bool = False
    checkpoint: str | None = None
    batch_max_messages: int = 500
    max_message_bytes: int = 1_048_576
    synthetic_rate: float = 20.0
    synthetic_count: int | None = None
    synthetic_seed: int = 1
    synthetic_devices: int = 2000
    synthetic_netsupport_ratio: float = 0.002
    kafka_bootstrap_servers: str | None = None
    kafka_topics: list[str] = field(default_factory=list)
    kafka_group_id: str = "rmmwatch"
    kafka_start: str = "earliest"
    kafka_client: str = "confluent"
    kafka_client_id: str = "rmmwatch"
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str = "PLAIN"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = field(default=None, repr=False)
    kafka_oauth_token_provider: str | None = None
    kafka_ssl_ca_file: str | None = None
    kafka_ssl_cert_file: str | None = None
    kafka_ssl_key_file: str | None = None
    kafka_ssl_check_hostname: bool = True
    kafka_session_timeout_ms: int = 10_000
    kafka_rebalance_wait: float = 20.0
    eventhubs_connection_string: str | None = field(default=None, repr=False)
    dead_letter_topic: str | None = None
    eventhub_connection_string: str | None = field(default=None, repr=False)
    eventhub_fully_qualified_namespace: str | None = None
    eventhub_name: str | None = None
    eventhub_consumer_group: str = "$Default"
    eventhub_start: str = "earliest"
    eventhub_checkpoint_connection_string: str | None = field(default=None, repr=False)
    eventhub_checkpoint_account_url: str | None = None
    eventhub_checkpoint_container: str = "rmmwatch-checkpoints"
    eventhub_checkpoint_api_version: str | None = None
    eventhub_load_balancing: str = "greedy"
    eventhub_load_balancing_interval: float = 30.0
    eventhub_ownership_expiry: float = 180.0
    store: str = "sqlite"
    data_dir: str = "./data"
    redis_username: str | None = None
    redis_password: str | None = field(default=None, repr=False)
    redis_ca_file: str | None = None
    redis_prefix: str = "rmmwatch"
    redis_cluster: bool = False
    redis_orphan_age: float = 10.0
    sqlite_synchronous: str = "full"
    tick_interval: float = 1.0
    sink: list[str] = field(default_factory=list)
    webhook_token_env: str = "RMMWATCH_WEBHOOK_TOKEN"
    webhook_timeout: float = 5.0
    webhook_retries: int = 3
    max_pending_alerts: int = 10_000
    dead_letter: str = "log"
    metrics_host: str = "0.0.0.0"  # noqa: S104
    metrics_port: int = 9464
    log_level: str = "info"
    log_format: str = "json"
    prefilter: str = "auto"
    shutdown_timeout: float = 25.0
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> RunConfig:
        known = set(cls.__dataclass_fields__)
        config = cls(**{k: v for k, v in values.items() if k in known})
        config.extra = {k: v for k, v in values.items() if k not in known}
        config.validate()
        return config

    def validate(self) -> None:
        if self.batch_max_messages < 1:
            raise ConfigError("--batch-max-messages must be at least 1")
        if self.max_message_bytes < 1:
            raise ConfigError("--max-message-bytes must be at least 1")
        if self.tick_interval <= 0:
            raise ConfigError("--tick-interval must be positive")
        if self.synthetic_rate < 0:
            raise ConfigError("--synthetic-rate must not be negative")
        if not 0 <= self.synthetic_netsupport_ratio <= 1:
            raise ConfigError("--synthetic-netsupport-ratio must be between 0 and 1")
        if self.max_pending_alerts < 1:
            raise ConfigError("--max-pending-alerts must be at least 1")
        if not -1 <= self.metrics_port <= 65535:
            raise ConfigError("--metrics-port must be -1 (off), 0 (any) or a port number")
        if self.dead_letter_topic:
            if self.dead_letter not in ("log", f"kafka:{self.dead_letter_topic}"):
                raise ConfigError("give either --dead-letter or --dead-letter-topic, not both")
            self.dead_letter = f"kafka:{self.dead_letter_topic}"

    @property
    def sinks(self) -> list[str]:
        return self.sink or ["stdout"]

    def redis_options(self) -> dict[str, Any]:
        """Keyword arguments of RedisStore from the redis options."""
        return {
            "prefix": self.redis_prefix,
            "username": self.redis_username,
            "password": self.redis_password,
            "ca_file": self.redis_ca_file,
            "orphan_age_s": self.redis_orphan_age,
            "cluster": self.redis_cluster,
        }

    def store_url(self) -> str:
        if self.store == "sqlite":
            return "sqlite:" + os.path.join(self.data_dir, "rmmwatch.db")
        return self.store
