"""Prometheus metrics for everything on the hot path, in one registry per process.

Counters are incremented once per batch with the batch's totals (not per record), so
metrics cost nothing measurable on the hot path. Label values are bounded: rule ids,
exclusion names, decode-error reasons, rule refusal reasons, alert kinds and sink names, never
event data.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, disable_created_metrics

from rmmwatch import __version__

# The *_created series double the output and no dashboard uses them.
disable_created_metrics()  # type: ignore[no-untyped-call]

_LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)
_FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    """All of rmmwatch's collectors, registered in ``self.registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry if registry is not None else CollectorRegistry()
        self.build_info = Info("rmmwatch_build", "rmmwatch version", registry=r)
        self.build_info.info({"version": __version__})
        self.rule_info = Gauge(
            "rmmwatch_rule_info",
            "Loaded rules (value 1), with their mode (live or shadow)",
            ["rule", "name", "mode"],
            registry=r,
        )
        self.rules_skipped = Counter(
            "rmmwatch_rules_skipped",
            "Rule files refused at start and skipped (--skip-invalid-rules), by reason",
            ["reason"],
            registry=r,
        )
        # source side
        self.messages = Counter("rmmwatch_messages", "Messages read from the source", ["source"], registry=r)
        self.message_bytes = Counter("rmmwatch_message_bytes", "Bytes of messages read", ["source"], registry=r)
        self.parsed = Counter(
            "rmmwatch_messages_parsed",
            "Messages the byte prefilter could not rule out, parsed as JSON",
            registry=r,
        )
        self.records = Counter("rmmwatch_records", "Records decoded from parsed messages", registry=r)
        self.other_tables = Counter(
            "rmmwatch_records_other_table", "Records of other Advanced Hunting tables, skipped", registry=r
        )
        self.decode_errors = Counter(
            "rmmwatch_decode_errors",
            "Messages or records that could not be decoded, by reason",
            ["reason"],
            registry=r,
        )
        self.dead_letters = Counter(
            "rmmwatch_dead_letters",
            "Undecodable inputs written to the dead-letter destination",
            ["destination"],
            registry=r,
        )
        # rules and state
        self.matches = Counter("rmmwatch_matches", "Records matched by a rule and not excluded", ["rule"], registry=r)
        self.excluded = Counter(
            "rmmwatch_excluded",
            "Records matched by a rule and removed by a named exclusion",
            ["rule", "exclusion"],
            registry=r,
        )
        self.duplicates = Counter(
            "rmmwatch_duplicates", "Matched events already in the state (redelivery)", ["rule"], registry=r
        )
        self.out_of_window = Counter(
            "rmmwatch_out_of_window",
            "Matched events older than the window on arrival, not counted",
            ["rule"],
            registry=r,
        )
        self.future_dated = Counter(
            "rmmwatch_future_dated",
            "Matched events dated after now, held until their time",
            ["rule"],
            registry=r,
        )
        self.state_groups = Gauge("rmmwatch_state_groups", "Groups holding events", ["rule"], registry=r)
        self.state_events = Gauge("rmmwatch_state_events", "Events held in the window state", ["rule"], registry=r)
        self.store_errors = Counter(
            "rmmwatch_store_errors", "Store operations that failed (retried)", ["operation"], registry=r
        )
        # alerts
        self.alerts_created = Counter(
            "rmmwatch_outbox_alerts", "Alerts written to the outbox", ["rule", "kind"], registry=r
        )
        self.alerts = Counter(
            "rmmwatch_alerts",
            "Alerts delivered, per sink; mode: live (to --sink) or shadow (to --shadow-sink)",
            ["rule", "kind", "sink", "mode"],
            registry=r,
        )
        self.sink_failures = Counter("rmmwatch_sink_failures", "Failed deliveries, per sink", ["sink"], registry=r)
        self.outbox_pending = Gauge("rmmwatch_outbox_pending", "Alerts in the outbox not yet delivered", registry=r)
        self.event_to_alert = Histogram(
            "rmmwatch_event_to_alert_lag_seconds",
            "From the event's Timestamp to the alert's delivery (includes Defender's export delay)",
            buckets=_LAG_BUCKETS,
            registry=r,
        )
        self.seen_to_alert = Histogram(
            "rmmwatch_seen_to_alert_seconds",
            "From the service reading the event to the alert's delivery (rmmwatch's own latency)",
            buckets=_FAST_BUCKETS,
            registry=r,
        )
        # the loop
        self.batch_seconds = Histogram(
            "rmmwatch_batch_processing_seconds",
            "Time to process one batch end to end",
            buckets=_FAST_BUCKETS,
            registry=r,
        )
        self.batch_messages = Histogram(
            "rmmwatch_batch_messages",
            "Messages per batch",
            buckets=(1, 10, 50, 100, 250, 500, 1000, 5000),
            registry=r,
        )
        self.commits = Counter("rmmwatch_source_commits", "Source positions committed", registry=r)
        self.last_tick = Gauge(
            "rmmwatch_last_tick_timestamp_seconds",
            "When the wall-clock tick last advanced the window",
            registry=r,
        )
        self.ready = Gauge("rmmwatch_ready", "Readiness per component (1 ready, 0 not)", ["component"], registry=r)
        self.consumer_lag = Gauge(
            "rmmwatch_consumer_lag",
            "Messages behind the end of each partition",
            ["topic", "partition"],
            registry=r,
        )

    def describe_rules(self, rules: Mapping[str, tuple[str, str]]) -> None:
        """``rules``: each rule id's (name, mode)."""
        for rule_id, (name, mode) in rules.items():
            self.rule_info.labels(rule=rule_id, name=name, mode=mode).set(1)
