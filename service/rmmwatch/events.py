"""Decode and match: raw message bytes in, rule matches out. Pure, synchronous, the hot path.

A message is one Event Hubs body / Kafka value / input line. Three shapes are accepted
(docs/semantics.md §2): the streaming API envelope ``{"records": [record, ...]}``, one
storage-export record ``{"category": ..., "properties": {...}}``, and a bare Advanced
Hunting row (the ``properties`` object alone); a JSON array of any of these is accepted
too. Records of other tables are skipped; records without a ``category`` are assumed to
be of the rule's table.

Bad input never raises: each problem is reported with a reason (a fixed, small set,
used as a metric label) and the rest of the message is processed. Messages the byte
prefilter rules out are not parsed at all, so they are not validated either: they cannot
match, and validating them would cost the parse the prefilter exists to avoid.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

from rmmwatch.kql.datetimes import DatetimeError, format_datetime, parse_datetime
from rmmwatch.kql.schema import TRIGGER_COLUMNS, KqlType
from rmmwatch.model import BatchResult, Excluded, Match, Problem
from rmmwatch.prefilter import Prefilter, combined_requirements
from rmmwatch.rules import Rule

DEFAULT_MAX_MESSAGE_BYTES = 1_048_576  # Event Hubs' maximum message size

# Reasons (metric label values). Keep this set small and stable.
OVERSIZED = "oversized"
INVALID_UTF8 = "invalid_utf8"
MALFORMED_JSON = "malformed_json"
NOT_OBJECT = "not_object_or_array"
RECORDS_NOT_LIST = "records_not_list"
RECORD_NOT_OBJECT = "record_not_object"
MISSING_PROPERTIES = "missing_properties"
PROPERTIES_NOT_OBJECT = "properties_not_object"
MISSING_FIELD = "missing_field"
WRONG_TYPE = "wrong_type"
BAD_TIMESTAMP = "bad_timestamp"

REASONS = (
    OVERSIZED,
    INVALID_UTF8,
    MALFORMED_JSON,
    NOT_OBJECT,
    RECORDS_NOT_LIST,
    RECORD_NOT_OBJECT,
    MISSING_PROPERTIES,
    PROPERTIES_NOT_OBJECT,
    MISSING_FIELD,
    WRONG_TYPE,
    BAD_TIMESTAMP,
)


def _string(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    raise TypeError


def _long(value: Any) -> int | None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise TypeError


def _real(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise TypeError


def _bool(value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise TypeError


def _datetime(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, str):
        return parse_datetime(value)
    raise TypeError


def _dynamic(value: Any) -> str:
    # AdditionalFields arrives as a JSON-encoded string; an inline object is re-encoded so
    # string operators see the same text either way.
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


_CONVERTERS = {
    "string": _string,
    "long": _long,
    "real": _real,
    "bool": _bool,
    "datetime": _datetime,
    "timespan": _long,
    "dynamic": _dynamic,
}


class Detector:
    """Prefilter, decode and match messages against a set of rules."""

    def __init__(
        self,
        rules: Sequence[Rule],
        *,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        prefilter_engine: str = "auto",
    ) -> None:
        if not rules:
            raise ValueError("at least one rule is needed")
        self.rules = tuple(rules)
        self.max_message_bytes = max_message_bytes
        self.prefilter = Prefilter(combined_requirements(r.query.required for r in rules), engine=prefilter_engine)
        self.categories = frozenset(r.query.category for r in rules)
        # Two passes per record: the columns the where conditions read (for every record of a
        # parsed message), then the rest (identity, group, aggregates, exclusions) for matches only.
        first: dict[str, KqlType] = {}
        rest: dict[str, KqlType] = {}
        for rule in rules:
            schema = rule.query.schema
            for name in rule.query.condition_columns:
                first[name] = schema[name]
            for name in rule.columns:
                rest[name] = schema[name]
        self._condition_columns = tuple((n, _CONVERTERS[k]) for n, k in sorted(first.items()))
        self._match_columns = tuple((n, _CONVERTERS[k]) for n, k in sorted(rest.items()) if n not in first)

    # -- the hot path ------------------------------------------------------------------
    def process(self, messages: Iterable[bytes], result: BatchResult | None = None) -> BatchResult:
        """Run every message through prefilter, decode and match."""
        result = BatchResult() if result is None else result
        prefilter = self.prefilter
        limit = self.max_message_bytes
        index = result.messages
        for raw in messages:
            size = len(raw)
            result.bytes += size
            if size > limit:
                # A replayed line or document element longer than the limit arrives as its prefix (framing.py's
                # Oversized), with its real size: reported as that size, dead-lettered as the prefix.
                full = getattr(raw, "full_size", size)
                result.problems.append((index, Problem(OVERSIZED, f"{full} bytes is over the {limit}-byte limit")))
            elif prefilter(raw):
                result.candidates += 1
                self._decode_message(raw, index, result)
            index += 1
        result.messages = index
        return result

    # -- decoding ----------------------------------------------------------------------
    def _decode_message(self, raw: bytes, index: int, result: BatchResult) -> None:
        try:
            document = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            text = str(exc)
            reason = INVALID_UTF8 if "utf-8" in text.lower() or "surrogate" in text.lower() else MALFORMED_JSON
            result.problems.append((index, Problem(reason, text[:200])))
            return
        if isinstance(document, dict):
            if "records" in document:
                records = document["records"]
                if not isinstance(records, list):
                    result.problems.append(
                        (
                            index,
                            Problem(RECORDS_NOT_LIST, f"'records' is {type(records).__name__}, not a list"),
                        )
                    )
                    return
            else:
                records = [document]
        elif isinstance(document, list):
            records = document
        else:
            result.problems.append((index, Problem(NOT_OBJECT, f"the body is a JSON {type(document).__name__}")))
            return
        for position, record in enumerate(records):
            self._decode_record(record, position, index, result)

    def _decode_record(self, record: Any, position: int, index: int, result: BatchResult) -> None:
        if not isinstance(record, dict):
            problem = _bad_record(RECORD_NOT_OBJECT, f"a {type(record).__name__}", position, record)
            result.problems.append((index, problem))
            return
        category = record.get("category")
        if "properties" in record:
            if category is not None and category not in self.categories:
                result.other_tables += 1
                return
            row = record["properties"]
            if not isinstance(row, dict):
                problem = _bad_record(PROPERTIES_NOT_OBJECT, f"'properties' is {type(row).__name__}", position, record)
                result.problems.append((index, problem))
                return
        elif category is not None or "operationName" in record or "tenantId" in record:
            if category is not None and category not in self.categories:
                result.other_tables += 1
                return
            problem = _bad_record(MISSING_PROPERTIES, "an envelope record without 'properties'", position, record)
            result.problems.append((index, problem))
            return
        else:
            row = record  # a bare Advanced Hunting row
        result.records += 1
        event: dict[str, Any] = {}
        rules: list[Rule] = []
        bad = _convert(row, self._condition_columns, event)
        if bad is None:
            rules = [rule for rule in self.rules if rule.query.matches(event)]
            if not rules:
                return
            bad = _convert(row, self._match_columns, event)
        if bad is not None:
            result.problems.append((index, _bad_record(bad[0], bad[1], position, record)))
            return
        ticks = event["Timestamp"]
        if ticks is None:
            problem = _bad_record(MISSING_FIELD, "Timestamp is missing or null", position, record)
            result.problems.append((index, problem))
            return
        self._match(rules, event, ticks, row, result)

    # -- matching ----------------------------------------------------------------------
    def _match(
        self,
        rules: list[Rule],
        event: dict[str, Any],
        ticks: int,
        row: Mapping[str, Any],
        result: BatchResult,
    ) -> None:
        identity = orjson.dumps([event["DeviceId"], event["DeviceName"], ticks, event["ReportId"]]).decode()
        trigger = trigger_fields(row, ticks)
        for rule in rules:
            query = rule.query
            group = query.group_key(event)
            match = Match(
                rule=rule,
                ticks=ticks,
                identity=identity,
                group=group,
                group_key=orjson.dumps(list(group)).decode(),
                contribution=query.contribution(event),
                trigger=trigger,
            )
            exclusion = rule.excluded_by(event)
            if exclusion is None:
                result.matches.append(match)
            else:
                result.excluded.append(Excluded(match, exclusion))


def _bad_record(reason: str, detail: str, position: int, record: Any) -> Problem:
    """A problem with one record: its dead letter carries that record (re-encoded), never the whole message,
    so a message of many bad records costs about its own size in dead letters, not its size per record."""
    return Problem(reason, detail, position, orjson.dumps(record))


def _convert(
    row: Mapping[str, Any], columns: Sequence[tuple[str, Any]], event: dict[str, Any]
) -> tuple[str, str] | None:
    """Type-convert ``columns`` of ``row`` into ``event``; (reason, detail) on the first bad one."""
    for name, convert in columns:
        value = row.get(name)
        try:
            event[name] = convert(value)
        except TypeError:
            return WRONG_TYPE, f"{name} is a JSON {type(value).__name__}, not {convert.__name__.strip('_')}"
        except DatetimeError as exc:
            return BAD_TIMESTAMP, f"{name}: {exc}"
    return None


def trigger_fields(row: Mapping[str, Any], ticks: int) -> dict[str, Any]:
    """The triggering event's key fields for the alert (Timestamp in KQL's 7-digit form)."""
    out: dict[str, Any] = {name: row.get(name) for name in TRIGGER_COLUMNS}
    out["Timestamp"] = format_datetime(ticks)
    return out
