"""Accounting: what every batch did, as metrics, (rate-limited) log lines and the run's totals.

Counters move once per batch with the batch's totals, never per record, so accounting costs
nothing measurable on the hot path. Bad input and excluded matches are logged with their
origin, rate-limited per reason and per rule (a flood of bad input must not become a flood
of log lines); every one of them is counted all the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rmmwatch.logging import RateLimiter, get_logger
from rmmwatch.metrics import Metrics
from rmmwatch.model import BatchResult, DeadLetter, Problem
from rmmwatch.rules import Rule
from rmmwatch.sources.base import Batch
from rmmwatch.stores.base import ApplyResult, Store, StoreUnavailable

log = get_logger("rmmwatch.app")

#: Record-level dead letters of one message, at most; the rest are one letter with the message itself.
MAX_RECORD_LETTERS = 100


class Accounting:
    """Metrics and logs of decoding, applying and committing batches."""

    def __init__(self, metrics: Metrics, source_name: str, rules: Sequence[Rule]) -> None:
        self.metrics = metrics
        self.source_name = source_name
        self.rules = list(rules)
        self.stats = {"batches": 0, "messages": 0, "matches": 0, "alerts": 0}
        #: Bad input by reason over the run (the "stopped" log line reports it)
        self.bad_input_by_reason: dict[str, int] = {}
        self._problem_logs = RateLimiter(per_second=1.0, burst=20)
        self._excluded_logs = RateLimiter(per_second=5.0, burst=50)
        metrics.describe_rules({r.id: (r.name, r.mode) for r in self.rules})

    def decoded(self, result: BatchResult) -> None:
        """A batch went through decode+match."""
        m = self.metrics
        m.messages.labels(source=self.source_name).inc(result.messages)
        m.message_bytes.labels(source=self.source_name).inc(result.bytes)
        if result.candidates:
            m.parsed.inc(result.candidates)
        if result.records:
            m.records.inc(result.records)
        if result.other_tables:
            m.other_tables.inc(result.other_tables)
        if result.matches:
            per_rule: dict[str, int] = {}
            for match in result.matches:
                per_rule[match.rule.id] = per_rule.get(match.rule.id, 0) + 1
            for rule_id, count in per_rule.items():
                m.matches.labels(rule=rule_id).inc(count)
        for excluded in result.excluded:
            m.excluded.labels(rule=excluded.match.rule.id, exclusion=excluded.exclusion.name).inc()
        self._log_excluded(result)

    def applied(self, applied: ApplyResult) -> None:
        """A store call (apply or tick) is done."""
        m = self.metrics
        for rule_id, count in applied.duplicates_by_rule.items():
            m.duplicates.labels(rule=rule_id).inc(count)
        for rule_id, count in applied.out_of_window_by_rule.items():
            m.out_of_window.labels(rule=rule_id).inc(count)
        for rule_id, count in applied.future_by_rule.items():
            m.future_dated.labels(rule=rule_id).inc(count)
        for (rule_id, kind), count in applied.alert_counts.items():
            m.alerts_created.labels(rule=rule_id, kind=kind).inc(count)

    def finished(self, seconds: float, messages: int, matches: int) -> None:
        """A batch is applied, delivered and (when it could be) committed."""
        self.metrics.batch_seconds.observe(seconds)
        self.metrics.batch_messages.observe(messages)
        self.stats["batches"] += 1
        self.stats["messages"] += messages
        self.stats["matches"] += matches

    async def refresh_state(self, store: Store) -> None:
        """The state-size gauges, per rule (a store call: done every few ticks, not per batch)."""
        try:
            stats = await store.stats()
        except StoreUnavailable:
            return
        for rule in self.rules:
            entry = stats.get(rule.id)
            self.metrics.state_groups.labels(rule=rule.id).set(entry.groups if entry else 0)
            self.metrics.state_events.labels(rule=rule.id).set(entry.events if entry else 0)

    def bad_input(self, batch: Batch, result: BatchResult) -> list[DeadLetter]:
        """Count and log (rate-limited) each problem; the dead letters that keep them, bounded in size.

        A record's letter carries that record; a message's letter carries the message. Past
        :data:`MAX_RECORD_LETTERS` bad records in one message, the rest travel as one letter
        holding the message once: dead letters never cost more than about twice the input.
        """
        letters: list[DeadLetter] = []
        per_message: dict[int, list[Problem]] = {}
        for index, problem in result.problems:
            self.metrics.decode_errors.labels(reason=problem.reason).inc()
            self.bad_input_by_reason[problem.reason] = self.bad_input_by_reason.get(problem.reason, 0) + 1
            origin = batch.locate(index)
            self._log_problem(problem, origin)
            if problem.record is None or problem.payload is None:
                letters.append(DeadLetter(problem.reason, problem.detail, origin, None, batch.messages[index]))
                continue
            seen = per_message.setdefault(index, [])
            seen.append(problem)
            if len(seen) <= MAX_RECORD_LETTERS:
                letters.append(DeadLetter(problem.reason, problem.detail, origin, problem.record, problem.payload))
        for index, problems in per_message.items():
            rest = problems[MAX_RECORD_LETTERS:]
            if rest:
                detail = (
                    f"{len(rest)} more bad records in this message (records {rest[0].record} to {rest[-1].record}; "
                    f"the first: {rest[0].detail}); the message is attached"
                )
                letters.append(DeadLetter(rest[0].reason, detail, batch.locate(index), None, batch.messages[index]))
        return letters

    def _log_problem(self, problem: Problem, origin: dict[str, Any]) -> None:
        allowed, suppressed = self._problem_logs.allow(problem.reason)
        if allowed:
            log.warning(
                "bad_input",
                reason=problem.reason,
                detail=problem.detail,
                record=problem.record,
                suppressed_since_last=suppressed,
                **origin,
            )

    def _log_excluded(self, result: BatchResult) -> None:
        for excluded in result.excluded:
            allowed, suppressed = self._excluded_logs.allow(excluded.match.rule.id)
            if allowed:
                trigger = excluded.match.trigger
                log.info(
                    "excluded",
                    rule=excluded.match.rule.id,
                    exclusion=excluded.exclusion.name,
                    DeviceId=trigger.get("DeviceId"),
                    DeviceName=trigger.get("DeviceName"),
                    Timestamp=trigger.get("Timestamp"),
                    ReportId=trigger.get("ReportId"),
                    FileName=trigger.get("FileName"),
                    ProcessCommandLine=trigger.get("ProcessCommandLine"),
                    InitiatingProcessFileName=trigger.get("InitiatingProcessFileName"),
                    AccountName=trigger.get("AccountName"),
                    suppressed_since_last=suppressed,
                )
