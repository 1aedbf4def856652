"""Configuration of ``rmmwatch run``: every option, its environment variable, default and help.

Each option is declared once, as a field of :class:`RunConfig` (its type, default, help,
group, choices and whether it holds a secret). :data:`RUN_OPTIONS` is derived from those
fields and drives the command line, the environment variables (in Kubernetes everything
is set by env), and the README's reference, which a test keeps in sync. Precedence:
command line, then environment (``RMMWATCH_<NAME>``; secrets also ``RMMWATCH_<NAME>_FILE``),
then default. Adapters never see this class: ``wiring.py`` turns it into their settings.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
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
    """One ``run`` option, as the command line and the environment see it."""

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


_OPTION = "rmmwatch.option"
_PARSERS: dict[type, Callable[[str], Any]] = {bool: _bool, int: int, float: float, str: str}


def option(
    help: str,
    default: Any = None,
    *,
    parse: Callable[[str], Any] | None = None,
    choices: Sequence[str] | None = None,
    repeat: bool = False,
    switch: bool = False,
    secret: bool = False,
    group: str = "general",
) -> Any:
    """A :class:`RunConfig` field that is also a ``run`` option (its flag is ``--<field-name>``).

    ``parse`` defaults to the default's type (``bool`` accepts 1/true/yes/on and 0/false/no/off)."""
    spec = {
        "help": help,
        "default": default,
        "parse": parse or _PARSERS.get(type(default), str),
        "choices": choices,
        "repeat": repeat,
        "switch": switch,
        "secret": secret,
        "group": group,
    }
    if repeat:
        return field(default_factory=list, metadata={_OPTION: spec})
    return field(default=default, repr=not secret, metadata={_OPTION: spec})


@dataclass(slots=True)
class RunConfig:
    """The resolved configuration of ``rmmwatch run``: one field per option, declared once."""

    # -- rules
    rule: list[str] = option(
        "rule file (Sentinel YAML), directory (every *.yaml / *.yml below), glob, or bundled:<name>; repeatable; "
        "default: every bundled rule",
        repeat=True,
        group="rules",
    )
    shadow_rule: list[str] = option(
        "rules to run in shadow mode whatever their files' mode (same forms as --rule; repeatable): they run fully "
        "but their alerts go only to --shadow-sink; a rule given both ways is refused as a duplicate id",
        repeat=True,
        group="rules",
    )
    no_exclusions: bool = option(
        "run the bare hunting query, without the rules' named exclusions", False, switch=True, group="rules"
    )
    skip_invalid_rules: bool = option(
        "start with the rules that compile, logging and counting each refused one "
        "(rmmwatch_rules_skipped_total{reason}); default: any refused rule stops the start",
        False,
        switch=True,
        group="rules",
    )
    # -- source
    source: str = option("synthetic | stdin | file:PATH | kafka | eventhub", "synthetic", group="source")
    follow: bool = option("file source: keep reading as the file grows", False, switch=True, group="source")
    checkpoint: str | None = option(
        "file source: where to keep the committed offset (default: <data-dir>/file-offset.json "
        "with a durable store, none with memory)",
        group="source",
    )
    batch_max_messages: int = option("messages per batch at most", 500, group="source")
    max_message_bytes: int = option(
        "larger messages are dead-lettered as oversized (Event Hubs' limit is 1 MB)", 1_048_576, group="source"
    )
    # -- synthetic
    synthetic_rate: float = option(
        "synthetic source: messages per second (0: as fast as possible)", 20.0, group="synthetic"
    )
    synthetic_count: int | None = option(
        "synthetic source: stop after this many messages (default: never)", parse=_optional_int, group="synthetic"
    )
    synthetic_seed: int = option("synthetic source: random seed", 1, group="synthetic")
    synthetic_devices: int = option("synthetic source: device population", 2000, group="synthetic")
    synthetic_netsupport_ratio: float = option(
        "synthetic source: fraction of records that are NetSupport launches", 0.002, group="synthetic"
    )
    # -- kafka
    kafka_bootstrap_servers: str | None = option("Kafka bootstrap servers, host:port[,host:port]", group="kafka")
    kafka_topics: list[str] = option(
        "topics to consume; repeatable (with the Event Hubs preset: the hub's name)", repeat=True, group="kafka"
    )
    kafka_group_id: str = option(
        "consumer group (Event Hubs: a Kafka consumer group, not an Event Hubs one)", "rmmwatch", group="kafka"
    )
    kafka_start: str = option(
        "where a new group starts: earliest, latest, or an ISO 8601 time", "earliest", group="kafka"
    )
    kafka_client: str = option(
        "Kafka client library of the source: confluent (librdkafka, several times faster) or aiokafka",
        "confluent",
        choices=("confluent", "aiokafka"),
        group="kafka",
    )
    kafka_client_id: str = option("client id sent to the brokers", "rmmwatch", group="kafka")
    kafka_security_protocol: str = option(
        "PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL",
        "PLAINTEXT",
        choices=("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"),
        group="kafka",
    )
    kafka_sasl_mechanism: str = option(
        "PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512 | OAUTHBEARER",
        "PLAIN",
        choices=("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"),
        group="kafka",
    )
    kafka_sasl_username: str | None = option("SASL username", group="kafka")
    kafka_sasl_password: str | None = option(
        "SASL password (or RMMWATCH_KAFKA_SASL_PASSWORD_FILE)", secret=True, group="kafka"
    )
    kafka_oauth_token_provider: str | None = option(
        "OAUTHBEARER: module:callable returning an aiokafka token provider", group="kafka"
    )
    kafka_ssl_ca_file: str | None = option("PEM file of the CA(s) to trust (default: the system's)", group="kafka")
    kafka_ssl_cert_file: str | None = option("PEM client certificate (mutual TLS)", group="kafka")
    kafka_ssl_key_file: str | None = option("PEM client key (mutual TLS)", group="kafka")
    kafka_ssl_check_hostname: bool = option(
        "verify the broker's host name against its certificate", True, group="kafka"
    )
    kafka_session_timeout_ms: int = option("consumer group session timeout", 10_000, group="kafka")
    kafka_rebalance_wait: float = option(
        "seconds a revoked partition waits for its in-flight batch to commit", 20.0, group="kafka"
    )
    eventhubs_connection_string: str | None = option(
        "Event Hubs Kafka endpoint preset: derives <namespace>.servicebus.windows.net:9093, SASL_SSL, PLAIN, "
        "$ConnectionString and Microsoft's recommended timeouts (or RMMWATCH_EVENTHUBS_CONNECTION_STRING_FILE)",
        secret=True,
        group="kafka",
    )
    dead_letter_topic: str | None = option("shorthand for --dead-letter kafka:TOPIC", group="kafka")
    # -- eventhub
    eventhub_connection_string: str | None = option(
        "Event Hubs over AMQP: namespace connection string (with --eventhub-name) or hub connection string "
        "(EntityPath=...) (or RMMWATCH_EVENTHUB_CONNECTION_STRING_FILE)",
        secret=True,
        group="eventhub",
    )
    eventhub_fully_qualified_namespace: str | None = option(
        "<namespace>.servicebus.windows.net, authenticated with Entra ID (DefaultAzureCredential, extra 'entra')",
        group="eventhub",
    )
    eventhub_name: str | None = option("the event hub (default: the connection string's EntityPath)", group="eventhub")
    eventhub_consumer_group: str = option(
        "Event Hubs consumer group (give rmmwatch its own)", "$Default", group="eventhub"
    )
    eventhub_start: str = option(
        "where a partition without a checkpoint starts: earliest, latest, or an ISO 8601 time",
        "earliest",
        group="eventhub",
    )
    eventhub_checkpoint_connection_string: str | None = option(
        "storage account connection string for checkpoints and partition ownership "
        "(or RMMWATCH_EVENTHUB_CHECKPOINT_CONNECTION_STRING_FILE)",
        secret=True,
        group="eventhub",
    )
    eventhub_checkpoint_account_url: str | None = option(
        "https://<account>.blob.core.windows.net for checkpoints, authenticated with Entra ID", group="eventhub"
    )
    eventhub_checkpoint_container: str = option(
        "blob container for checkpoints and ownership (created if missing)", "rmmwatch-checkpoints", group="eventhub"
    )
    eventhub_checkpoint_api_version: str | None = option(
        "storage API version of the checkpoint store's blob client (default: the SDK's)", group="eventhub"
    )
    eventhub_load_balancing: str = option(
        "how replicas claim partitions: greedy (all unclaimed at once) or balanced (one per interval)",
        "greedy",
        choices=("greedy", "balanced"),
        group="eventhub",
    )
    eventhub_load_balancing_interval: float = option(
        "seconds between two load-balancing rounds (ownership renewal)", 30.0, group="eventhub"
    )
    eventhub_ownership_expiry: float = option(
        "seconds after which an unrenewed partition ownership may be claimed by another replica",
        180.0,
        group="eventhub",
    )
    # -- state
    store: str = option(
        "memory | sqlite[:PATH] | redis://... (sqlite default path: <data-dir>/rmmwatch.db)", "sqlite", group="state"
    )
    data_dir: str = option("directory for the sqlite database and file checkpoints", "./data", group="state")
    redis_username: str | None = option("redis store: ACL user", group="state")
    redis_password: str | None = option(
        "redis store: password (or RMMWATCH_REDIS_PASSWORD_FILE); never in the URL", secret=True, group="state"
    )
    redis_ca_file: str | None = option("redis store over rediss://: PEM CA to trust", group="state")
    redis_prefix: str = option(
        "redis store: key prefix (one per deployment sharing a Redis)", "rmmwatch", group="state"
    )
    redis_cluster: bool = option("redis store: the URL is a Redis Cluster node", False, switch=True, group="state")
    redis_orphan_age: float = option(
        "redis store: seconds before another replica delivers an alert whose creator did not", 10.0, group="state"
    )
    sqlite_synchronous: str = option(
        "sqlite durability: full (survives power loss), normal (survives a crash) or extra (SQLite's EXTRA: "
        "the same as full under the WAL journal rmmwatch uses)",
        "full",
        choices=("full", "normal", "extra"),
        group="state",
    )
    tick_interval: float = option(
        "seconds between wall-clock ticks (expiry, activation, throttled updates)", 1.0, group="state"
    )
    # -- alerts
    sink: list[str] = option(
        "stdout | jsonl:PATH | webhook:URL | kafka:TOPIC; repeatable (default: stdout)", repeat=True, group="alerts"
    )
    shadow_sink: list[str] = option(
        'where shadow rules\' alerts go, and only they (marked "mode": "shadow"): log (a shadow_alert log line) '
        "| stdout | jsonl:PATH | webhook:URL | kafka:TOPIC; repeatable (default: log)",
        repeat=True,
        group="alerts",
    )
    webhook_token_env: str = option(
        "name of the environment variable holding the webhook bearer token", "RMMWATCH_WEBHOOK_TOKEN", group="alerts"
    )
    webhook_timeout: float = option("seconds per webhook attempt", 5.0, group="alerts")
    webhook_retries: int = option("webhook retries per alert (exponential backoff with jitter)", 3, group="alerts")
    max_pending_alerts: int = option(
        "stop reading input once this many alerts wait for delivery; the batches already read are "
        "still applied (up to 7 batches' alerts more)",
        10_000,
        group="alerts",
    )
    dead_letter: str = option(
        "log | jsonl:PATH | kafka:TOPIC: where undecodable input goes (always counted)", "log", group="alerts"
    )
    # -- operations
    metrics_host: str = option(
        "address of the /metrics, /healthz, /readyz server",
        "0.0.0.0",  # noqa: S104  (a pod's metrics port listens on all interfaces)
        group="operations",
    )
    metrics_port: int = option("port of that server (0: any free port, -1: no server)", 9464, group="operations")
    log_level: str = option(
        "debug | info | warning | error", "info", choices=("debug", "info", "warning", "error"), group="operations"
    )
    log_format: str = option("json | console", "json", choices=("json", "console"), group="operations")
    prefilter: str = option(
        "byte prefilter engine (auto: hyperscan, else ahocorasick, else python)",
        "auto",
        choices=("auto", "hyperscan", "ahocorasick", "python"),
        group="operations",
    )
    shutdown_timeout: float = option("seconds to drain the in-flight batch on SIGTERM", 25.0, group="operations")

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> RunConfig:
        """A validated configuration from :func:`resolve`'s values (options not given keep their defaults)."""
        config = cls(**values)
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

    @property
    def shadow_sinks(self) -> list[str]:
        return self.shadow_sink or ["log"]

    def store_url(self) -> str:
        return store_url(self.store, self.data_dir)


#: Every ``run`` option, in declaration order (the order of ``--help`` and of the README's reference).
RUN_OPTIONS: tuple[Option, ...] = tuple(
    Option(flag="--" + f.name.replace("_", "-"), **f.metadata[_OPTION]) for f in fields(RunConfig)
)


def options_named(*dests: str) -> tuple[Option, ...]:
    """Some of the options, by field name (``state`` takes the store's, for example)."""
    found = tuple(o for o in RUN_OPTIONS if o.dest in dests)
    assert len(found) == len(dests), "an option name that RunConfig does not declare"
    return found


#: The options that say where the state is and how to reach it (``run`` and ``state`` share them).
STORE_OPTIONS = options_named(
    "store",
    "data_dir",
    "redis_username",
    "redis_password",
    "redis_ca_file",
    "redis_prefix",
    "redis_cluster",
    "redis_orphan_age",
)


def store_url(store: str, data_dir: str) -> str:
    """``--store`` as a URL: ``sqlite`` alone means ``<data-dir>/rmmwatch.db``."""
    if store == "sqlite":
        return "sqlite:" + os.path.join(data_dir, "rmmwatch.db")
    return store


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
