"""Decode and match: raw message bytes in, rule matches out. Pure, synchronous, the hot path.

A message is one Event Hubs body / Kafka value / input line. Three shapes are accepted
(docs/semantics.md §2): the streaming API envelope ``{"records": [record, ...]}``, one
storage-export record ``{"category": ..., "properties": {...}}``, and a bare Advanced
Hunting row (the ``properties`` object alone); a JSON array of any of these is accepted
too. A record's table is its ``category``; a record without one says its table through the
columns only one table has (``RemoteUrl``: a network event), or is declared by the caller
(``table=``); records of tables no rule reads, or whose table cannot be told, are skipped
and counted.

Rules of several tables run in one pass (docs/architecture.md §1): one prefilter scan per
message says which rules' literals occur in it; a record is evaluated only against those
rules of its own table, converting only the columns they read. A rule without a literal is
evaluated on every record of its table. The answer is the one of evaluating every rule on
every record: the prefilter only skips work that cannot match.

Bad input never raises: each problem is reported with a reason (a fixed, small set,
used as a metric label) and the rest of the message is processed. Messages the byte
prefilter rules out are not parsed at all, so they are not validated either: they cannot
match, and validating them would cost the parse the prefilter exists to avoid. For the same
reason a record is validated only in the columns the rules evaluated on it read, and a
wrong-typed column spoils the record for the rules that read it, not for the others.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from rmmwatch.kql.datetimes import DatetimeError, format_datetime, parse_datetime
from rmmwatch.kql.schema import TABLES, TRIGGER_COLUMNS, KqlType, distinctive_columns
from rmmwatch.model import BatchResult, Excluded, Match, Problem
from rmmwatch.prefilter import Mask, Prefilter
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

#: KQL's datetime range in ticks: a UTC offset can move a valid-looking text out of it.
_MIN_TICKS = parse_datetime("0001-01-01T00:00:00Z")
_MAX_TICKS = parse_datetime("9999-12-31T23:59:59.9999999Z")

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


Converter = Callable[[Any], Any]
Columns = tuple[tuple[str, Converter], ...]
#: A column that could not be converted: (reason, detail).
Failure = tuple[str, str]

_CONVERTERS: dict[str, Converter] = {
    "string": _string,
    "long": _long,
    "real": _real,
    "bool": _bool,
    "datetime": _datetime,
    "timespan": _long,
    "dynamic": _dynamic,
}


@dataclass(frozen=True, slots=True)
class _Plan:
    """What to do with a record of one table when a given set of its rules is awake."""

    #: The awake rules of the table, in load order, and their ``where`` tests.
    rules: tuple[Rule, ...]
    tests: tuple[Callable[[Mapping[str, Any]], bool], ...]
    #: The columns any of these rules' ``where`` reads, converted for every such record.
    conditions: Columns
    #: Per rule, the columns its ``where`` reads (a failed one means: do not evaluate it).
    reads: tuple[frozenset[str], ...]
    #: Per rule, every column it needs once its ``where`` holds (identity, group, aggregates,
    #: exclusions).
    needs: tuple[Columns, ...]


#: Plans are kept per set of awake rules; a stream shows few distinct sets, but the cache is
#: bounded all the same (a crafted stream could show many).
_MAX_PLANS = 4096


class Detector:
    """Prefilter, decode and match messages against a set of rules (of one or more tables)."""

    def __init__(
        self,
        rules: Sequence[Rule],
        *,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        prefilter_engine: str = "auto",
        table: str | None = None,
    ) -> None:
        """``table``: the table of every record that carries no ``category`` (input known to be one
        table's export); None: told from the record's columns (docs/semantics.md §2)."""
        if not rules:
            raise ValueError("at least one rule is needed")
        if table is not None and table not in TABLES:
            raise ValueError(f"unknown table {table!r} (known: {', '.join(TABLES)})")
        self.rules = tuple(rules)
        self.max_message_bytes = max_message_bytes
        self.prefilter = Prefilter([r.query.required for r in self.rules], engine=prefilter_engine)
        self.categories = frozenset(r.query.category for r in self.rules)
        masks: dict[str, Mask] = {}
        for index, rule in enumerate(self.rules):
            masks[rule.query.category] = masks.get(rule.query.category, 0) | 1 << index
        self._masks = masks
        self._triggers = {category: TRIGGER_COLUMNS[table_name] for table_name, (category, _) in TABLES.items()}
        # Bare rows: the declared table, else the one whose own columns the row carries, else
        # (no such column) the one table of the loaded rules, if they have one.
        self._declared = TABLES[table][0] if table is not None else None
        self._only = next(iter(self.categories)) if len(self.categories) == 1 else None
        self._distinctive = {column: TABLES[name][0] for column, name in distinctive_columns().items()}
        # Per rule, every column it needs once its where holds (identity, group, aggregates, exclusions).
        self._needs: tuple[Columns, ...] = tuple(
            tuple((name, _CONVERTERS[rule.query.schema[name]]) for name in sorted(rule.columns)) for rule in self.rules
        )
        self._plans: dict[Mask, _Plan] = {}

    # -- the hot path ------------------------------------------------------------------
    def process(self, messages: Iterable[bytes], result: BatchResult | None = None) -> BatchResult:
        """Run every message through prefilter, decode and match."""
        result = BatchResult() if result is None else result
        scan = self.prefilter.scan
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
            else:
                awake = scan(raw)
                if awake:
                    result.candidates += 1
                    self._decode_message(raw, awake, index, result)
            index += 1
        result.messages = index
        return result

    # -- decoding ----------------------------------------------------------------------
    def _decode_message(self, raw: bytes, awake: Mask, index: int, result: BatchResult) -> None:
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
            self._decode_record(record, awake, position, index, result)

    def row_category(self, row: Mapping[str, Any]) -> str | None:
        """The table (as its category) of a record that carries no ``category``; None: cannot tell.

        The declared table if there is one; else the table whose own columns (those of no other
        known table) the row carries; a row with columns of two tables says nothing, and a row
        with none is of the loaded rules' table when they all read one (docs/semantics.md §2).
        """
        if self._declared is not None:
            return self._declared
        distinctive = self._distinctive
        found: str | None = None
        for key in row:
            category = distinctive.get(key)
            if category is not None and category != found:
                if found is not None:
                    return None
                found = category
        return self._only if found is None else found

    def _decode_record(self, record: Any, awake: Mask, position: int, index: int, result: BatchResult) -> None:
        if not isinstance(record, dict):
            problem = _bad_record(RECORD_NOT_OBJECT, f"a {type(record).__name__}", position, record)
            result.problems.append((index, problem))
            return
        masks = self._masks
        category = record.get("category")
        if category is not None and category.__class__ is not str:
            # Checked before any lookup: a list or object is not even hashable.
            detail = f"'category' is a JSON {type(category).__name__}, not a string"
            result.problems.append((index, _bad_record(WRONG_TYPE, detail, position, record)))
            return
        if "properties" in record:
            if category is not None and category not in masks:
                result.other_tables += 1
                return
            row = record["properties"]
            if not isinstance(row, dict):
                problem = _bad_record(PROPERTIES_NOT_OBJECT, f"'properties' is {type(row).__name__}", position, record)
                result.problems.append((index, problem))
                return
        elif category is not None or "operationName" in record or "tenantId" in record:
            if category is not None and category not in masks:
                result.other_tables += 1
                return
            problem = _bad_record(MISSING_PROPERTIES, "an envelope record without 'properties'", position, record)
            result.problems.append((index, problem))
            return
        else:
            row = record  # a bare Advanced Hunting row
        if category is None:
            category = self.row_category(row)
            if category is None or category not in masks:
                result.other_tables += 1
                return
        result.records += 1
        woken = awake & masks[category]
        if not woken:
            return  # none of the rules of this record's table can match this message
        plan = self._plans.get(woken)
        if plan is None:
            plan = self._plan(woken)
        event: dict[str, Any] = {}
        failed = _convert(row, plan.conditions, event)
        tests = plan.tests
        if failed is None:
            hits = [k for k, test in enumerate(tests) if test(event)]
        else:
            reads = plan.reads
            hits = [k for k, test in enumerate(tests) if reads[k].isdisjoint(failed) and test(event)]
        matched: list[Rule] = []
        for k in hits:
            needs = plan.needs[k]
            failed = _convert_missing(row, needs, event, failed)
            if failed is None or all(name not in failed for name, _ in needs):
                matched.append(plan.rules[k])
        if failed is not None:
            reason, detail = failed[min(failed)]
            result.problems.append((index, _bad_record(reason, detail, position, record)))
        if not matched:
            return
        ticks = event["Timestamp"]
        if ticks is None:
            problem = _bad_record(MISSING_FIELD, "Timestamp is missing or null", position, record)
            result.problems.append((index, problem))
            return
        if not _MIN_TICKS <= ticks <= _MAX_TICKS:
            # Checked here, on matched records only (not on every conversion): an offset moved the time out
            # of KQL's range, and the alert could not even print it.
            detail = f"Timestamp: {row.get('Timestamp')!r:.60} is outside 0001-01-01..9999-12-31 in UTC"
            result.problems.append((index, _bad_record(BAD_TIMESTAMP, detail, position, record)))
            return
        trigger = trigger_fields(row, ticks, self._triggers[category])
        self._match(matched, event, ticks, trigger, result)

    def _plan(self, woken: Mask) -> _Plan:
        """The plan for a set of awake rules of one table (made once, then reused)."""
        indices = tuple(_bits(woken))
        rules = tuple(self.rules[i] for i in indices)
        columns: dict[str, KqlType] = {}
        for rule in rules:
            schema = rule.query.schema
            for name in rule.query.condition_columns:
                columns[name] = schema[name]
        conditions = tuple((name, _CONVERTERS[kind]) for name, kind in sorted(columns.items()))
        plan = _Plan(
            rules=rules,
            tests=tuple(rule.query.matches for rule in rules),
            conditions=conditions,
            reads=tuple(rule.query.condition_columns for rule in rules),
            needs=tuple(self._needs[i] for i in indices),
        )
        if len(self._plans) >= _MAX_PLANS:
            self._plans.clear()
        self._plans[woken] = plan
        return plan

    # -- matching ----------------------------------------------------------------------
    def _match(
        self,
        rules: list[Rule],
        event: dict[str, Any],
        ticks: int,
        trigger: dict[str, Any],
        result: BatchResult,
    ) -> None:
        identity = orjson.dumps([event["DeviceId"], event["DeviceName"], ticks, event["ReportId"]]).decode()
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


def _bits(mask: Mask) -> Iterable[int]:
    """The indices of the set bits of ``mask``, lowest first."""
    while mask:
        low = mask & -mask
        yield low.bit_length() - 1
        mask ^= low


def _bad_record(reason: str, detail: str, position: int, record: Any) -> Problem:
    """A problem with one record: its dead letter carries that record (re-encoded), never the whole message,
    so a message of many bad records costs about its own size in dead letters, not its size per record."""
    return Problem(reason, detail, position, orjson.dumps(record))


def _convert(row: Mapping[str, Any], columns: Columns, event: dict[str, Any]) -> dict[str, Failure] | None:
    """Type-convert ``columns`` of ``row`` into ``event``; the failures (column -> (reason, detail)), if any.

    A failed column is left out of ``event``: the rules that read it are not evaluated on this record.
    """
    failed: dict[str, Failure] | None = None
    for name, convert in columns:
        value = row.get(name)
        try:
            event[name] = convert(value)
        except (TypeError, DatetimeError) as exc:
            failed = {} if failed is None else failed
            failed[name] = _failure(name, value, convert, exc)
    return failed


def _convert_missing(
    row: Mapping[str, Any], columns: Columns, event: dict[str, Any], failed: dict[str, Failure] | None
) -> dict[str, Failure] | None:
    """:func:`_convert` for the columns not converted (nor failed) yet; the failures so far."""
    missing = tuple(
        (name, convert) for name, convert in columns if name not in event and (failed is None or name not in failed)
    )
    more = _convert(row, missing, event)
    if more is None:
        return failed
    if failed is None:
        return more
    failed.update(more)
    return failed


def _failure(name: str, value: Any, convert: Converter, exc: Exception) -> Failure:
    if isinstance(exc, DatetimeError):
        return BAD_TIMESTAMP, f"{name}: {exc}"
    return WRONG_TYPE, f"{name} is a JSON {type(value).__name__}, not {convert.__name__.strip('_')}"


def trigger_fields(
    row: Mapping[str, Any], ticks: int, columns: tuple[str, ...] = TRIGGER_COLUMNS["DeviceProcessEvents"]
) -> dict[str, Any]:
    """The triggering event's key fields for the alert (its table's, Timestamp in KQL's 7-digit form)."""
    out: dict[str, Any] = {name: row.get(name) for name in columns}
    out["Timestamp"] = format_datetime(ticks)
    return out
