"""Detection rules: Sentinel hunting-query YAML, as published, plus two optional keys.

A rule file is a Sentinel YAML document (``id``, ``name``, ``query``, ``tactics``,
``relevantTechniques``, ...; unknown Sentinel keys are accepted and ignored) with two
optional rmmwatch keys:

``exclusions``
    a list of named benign scenarios, each ``{name, description, where: <KQL predicate>}``.
    An event that matches the query and an exclusion is not counted; it is metered per
    exclusion and logged, because exclusions key on attacker-controlled text.
``alerting``
    the update policy: ``update: none | every | throttle`` (default ``throttle``),
    ``updateInterval: <timespan>`` (default ``15m``), ``end: true|false`` (default false).

Every error names the file, the line and the column, including errors inside the KQL.
"""

from __future__ import annotations

import importlib.resources
import importlib.resources.abc
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import yaml

from rmmwatch.kql.compiled import CompiledQuery, Predicate
from rmmwatch.kql.compiler import compile_condition, compile_query
from rmmwatch.kql.datetimes import TICKS_PER_MINUTE, timespan_literal
from rmmwatch.kql.errors import KqlError
from rmmwatch.kql.parser import tokenize
from rmmwatch.kql.schema import IDENTITY_COLUMNS, KqlType

UpdateMode = Literal["none", "every", "throttle"]


class RuleError(Exception):
    """A rule file that cannot be loaded, with its location (1-based line and column)."""

    def __init__(self, source: str, line: int, column: int, message: str) -> None:
        super().__init__(f"{source}:{line}:{column}: {message}")
        self.source = source
        self.line = line
        self.column = column
        self.message = message


@dataclass(frozen=True, slots=True)
class Exclusion:
    """A named benign scenario: events matching ``where`` are excluded (and metered)."""

    name: str
    description: str
    where: str
    condition: Predicate = field(repr=False, compare=False)
    columns: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class AlertPolicy:
    """When a group's changes raise alerts beyond the first one of an episode."""

    update: UpdateMode = "throttle"
    update_interval_ticks: int = 15 * TICKS_PER_MINUTE
    end: bool = False

    def describe(self) -> str:
        update: str = self.update
        if update == "throttle":
            update = f"throttle (at most one update per group every {timespan_literal(self.update_interval_ticks)})"
        return f"new: always; update: {update}; end: {'yes' if self.end else 'no'}"


@dataclass(frozen=True, slots=True)
class Rule:
    """A loaded, compiled rule."""

    id: str
    name: str
    description: str
    severity: str | None
    tactics: tuple[str, ...]
    techniques: tuple[str, ...]
    query: CompiledQuery
    exclusions: tuple[Exclusion, ...]
    alerting: AlertPolicy
    source: str

    @property
    def columns(self) -> frozenset[str]:
        """The columns decoding must extract (typed, strictly) to evaluate this rule."""
        cols = set(self.query.columns) | set(IDENTITY_COLUMNS)
        for exclusion in self.exclusions:
            cols |= exclusion.columns
        return frozenset(cols)

    def excluded_by(self, event: Mapping[str, Any]) -> Exclusion | None:
        """The first exclusion that matches ``event`` (in file order), if any."""
        for exclusion in self.exclusions:
            if exclusion.condition(event) is True:
                return exclusion
        return None

    def without_exclusions(self) -> Rule:
        """The bare hunting query (``--no-exclusions``)."""
        return replace(self, exclusions=())

    def describe(self) -> str:
        """A human-readable account of what the rule compiled to (``rmmwatch rules check``)."""
        q = self.query
        lines = [
            f"rule      {self.id}",
            f"name      {self.name}",
            f"source    {self.source}",
            f"table     {q.table} (records with category {q.category!r} or none)",
            f"window    {q.window.describe()}",
        ]
        if q.conditions:
            lines.append("where     " + "\n          and ".join(q.condition_texts))
        else:
            lines.append("where     (every record)")
        for name, value in q.constants.items():
            lines.append(f"extend    {name} = {value!r}")
        lines.append(f"group by  {', '.join(q.group_by) or '(one group)'}")
        for agg in q.aggregates:
            cap = f" (capped at {agg.size})" if agg.func == "make_set" else ""
            exact = " (exact, where KQL estimates)" if agg.func == "dcount" else ""
            lines.append(f"aggregate {agg.name} = {agg.text}{cap}{exact}")
        if q.required is None:
            lines.append("prefilter none: every message is parsed")
        else:
            lines.append("prefilter " + ", ".join(sorted(repr(r) for r in q.required)) + " (case-insensitive)")
        for exclusion in self.exclusions:
            lines.append(f"exclude   {exclusion.name!r}: {exclusion.where}")
        lines.append(f"tactics   {', '.join(self.tactics) or '-'}; techniques {', '.join(self.techniques) or '-'}")
        lines.append(f"alerting  {self.alerting.describe()}")
        return "\n".join(lines)


# -- loading -------------------------------------------------------------------------------


def _bundled_dir() -> importlib.resources.abc.Traversable:
    return importlib.resources.files("rmmwatch").joinpath("rules")


def bundled_rule_paths() -> list[str]:
    """Names of the rules shipped in the package, as ``bundled:<name>``."""
    root = _bundled_dir()
    return sorted(f"bundled:{p.name.removesuffix('.yaml')}" for p in root.iterdir() if p.name.endswith(".yaml"))


def load_rules(specs: Sequence[str] | None = None, *, exclusions: bool = True) -> list[Rule]:
    """Load rules from files (or ``bundled:<name>``); none given means every bundled rule."""
    specs = list(specs) if specs else bundled_rule_paths()
    rules: list[Rule] = []
    seen: dict[str, str] = {}
    for spec in specs:
        rule = load_rule(spec)
        if rule.id in seen:
            raise RuleError(spec, 1, 1, f"rule id {rule.id!r} is also the id of {seen[rule.id]}")
        seen[rule.id] = spec
        rules.append(rule if exclusions else rule.without_exclusions())
    return rules


def load_rule(spec: str) -> Rule:
    """Load one rule from a path or ``bundled:<name>``."""
    if spec.startswith("bundled:"):
        name = spec.removeprefix("bundled:")
        resource = _bundled_dir().joinpath(f"{name}.yaml")
        if not resource.is_file():
            available = ", ".join(bundled_rule_paths())
            raise RuleError(spec, 1, 1, f"no bundled rule {name!r} (available: {available})")
        return parse_rule(resource.read_text(encoding="utf-8"), spec)
    try:
        text = Path(spec).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise RuleError(spec, 1, 1, f"not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    except OSError as exc:
        raise RuleError(spec, 1, 1, f"cannot read rule file: {exc.strerror or exc}") from None
    return parse_rule(text, spec)


#: How deeply a rule file's collections may nest (a rule file is about four levels deep).
#: PyYAML composes nested collections recursively, so a deeper document is refused at its
#: position before it can exhaust Python's stack.
MAX_YAML_DEPTH = 64


class _RuleLoader(yaml.SafeLoader):
    """The safe loader, refusing documents nested deeper than :data:`MAX_YAML_DEPTH`."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.depth >= MAX_YAML_DEPTH:
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(None, None, f"nesting deeper than {MAX_YAML_DEPTH} levels", mark)
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def parse_rule(text: str, source: str = "<rule>") -> Rule:
    """Parse and compile a rule document."""
    try:
        node = yaml.compose(text, Loader=_RuleLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise RuleError(source, line, column, f"invalid YAML: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise RuleError(source, 1, 1, f"invalid YAML: {exc}") from None
    if node is None:
        raise RuleError(source, 1, 1, "empty rule file")
    return _RuleBuilder(text, source).build(node)


class _RuleBuilder:
    def __init__(self, text: str, source: str) -> None:
        self.lines = text.splitlines()
        self.source = source

    def error(self, node: yaml.Node, message: str) -> RuleError:
        return RuleError(self.source, node.start_mark.line + 1, node.start_mark.column + 1, message)

    def mapping(self, node: yaml.Node, what: str) -> dict[str, yaml.Node]:
        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, f"{what} must be a mapping")
        out: dict[str, yaml.Node] = {}
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode):
                raise self.error(key, f"keys of {what} must be strings")
            if key.value in out:
                raise self.error(key, f"duplicate key {key.value!r} in {what}")
            out[key.value] = value
        return out

    def string(self, node: yaml.Node, what: str) -> str:
        if not isinstance(node, yaml.ScalarNode) or node.tag == "tag:yaml.org,2002:null":
            raise self.error(node, f"{what} must be a string")
        return str(node.value)

    def strings(self, node: yaml.Node | None, what: str) -> tuple[str, ...]:
        if node is None:
            return ()
        if not isinstance(node, yaml.SequenceNode):
            raise self.error(node, f"{what} must be a list of strings")
        return tuple(self.string(item, f"each item of {what}") for item in node.value)

    def build(self, root: yaml.Node) -> Rule:
        doc = self.mapping(root, "a rule file")
        for required in ("id", "name", "query"):
            if required not in doc:
                raise self.error(root, f"missing required key {required!r}")
        rule_id = self.string(doc["id"], "id").strip()
        if not rule_id:
            raise self.error(doc["id"], "id must not be empty")
        query_node = doc["query"]
        query_text = self.string(query_node, "query")
        try:
            query = compile_query(query_text)
        except KqlError as exc:
            raise self.kql_error(query_node, exc) from None
        exclusions = self.exclusions(doc.get("exclusions"), query.schema)
        alerting = self.alerting(doc.get("alerting"))
        severity = self.string(doc["severity"], "severity") if "severity" in doc else None
        return Rule(
            id=rule_id,
            name=self.string(doc["name"], "name").strip(),
            description=self.string(doc["description"], "description").strip() if "description" in doc else "",
            severity=severity,
            tactics=self.strings(doc.get("tactics"), "tactics"),
            techniques=self.strings(doc.get("relevantTechniques"), "relevantTechniques"),
            query=query,
            exclusions=exclusions,
            alerting=alerting,
            source=self.source,
        )

    def exclusions(self, node: yaml.Node | None, schema: Mapping[str, KqlType]) -> tuple[Exclusion, ...]:
        if node is None:
            return ()
        if not isinstance(node, yaml.SequenceNode):
            raise self.error(node, "exclusions must be a list")
        out: list[Exclusion] = []
        names: set[str] = set()
        for item in node.value:
            fields = self.mapping(item, "an exclusion")
            unknown = set(fields) - {"name", "description", "where"}
            if unknown:
                key = sorted(unknown)[0]
                raise self.error(fields[key], f"unknown key {key!r} in an exclusion (name, description, where)")
            for required in ("name", "where"):
                if required not in fields:
                    raise self.error(item, f"an exclusion needs {required!r}")
            name = self.string(fields["name"], "exclusion name").strip()
            if name in names:
                raise self.error(fields["name"], f"duplicate exclusion name {name!r}")
            names.add(name)
            where_node = fields["where"]
            where = self.string(where_node, "exclusion where").strip()
            try:
                condition, columns = compile_condition(where, schema)
            except KqlError as exc:
                raise self.kql_error(where_node, exc) from None
            description = self.string(fields["description"], "description") if "description" in fields else ""
            out.append(Exclusion(name, description.strip(), where, condition.evaluate, columns))
        return tuple(out)

    def alerting(self, node: yaml.Node | None) -> AlertPolicy:
        if node is None:
            return AlertPolicy()
        fields = self.mapping(node, "alerting")
        policy = AlertPolicy()
        for key, value in fields.items():
            if key == "update":
                mode = self.string(value, "alerting.update")
                if mode not in ("none", "every", "throttle"):
                    raise self.error(value, "alerting.update must be none, every or throttle")
                policy = replace(policy, update=mode)  # type: ignore[arg-type]
            elif key == "updateInterval":
                policy = replace(policy, update_interval_ticks=self.timespan(value, "alerting.updateInterval"))
            elif key == "end":
                if not isinstance(value, yaml.ScalarNode) or value.value not in ("true", "false"):
                    raise self.error(value, "alerting.end must be true or false")
                policy = replace(policy, end=value.value == "true")
            else:
                raise self.error(value, f"unknown key {key!r} in alerting (update, updateInterval, end)")
        return policy

    def timespan(self, node: yaml.Node, what: str) -> int:
        text = self.string(node, what).strip()
        tokens = tokenize(text) if text else []
        if len(tokens) != 2 or tokens[0].kind != "timespan" or not isinstance(tokens[0].value, int):
            raise self.error(node, f"{what} must be a timespan such as 15m or 1h")
        ticks = tokens[0].value
        if ticks < 0:
            raise self.error(node, f"{what} must not be negative")
        return ticks

    def kql_error(self, node: yaml.Node, exc: KqlError) -> RuleError:
        """Locate a KQL error in the file: the scalar's own position plus the error's."""
        mark = node.start_mark
        style = getattr(node, "style", None)
        if style in ("|", ">"):
            first_content = mark.line + 1  # 0-based line after the block indicator
            indent = 0
            for raw in self.lines[first_content:]:
                if raw.strip():
                    indent = len(raw) - len(raw.lstrip(" "))
                    break
            line = first_content + exc.line
            column = indent + exc.column
        else:
            quote = 1 if style in ("'", '"') else 0
            line = mark.line + exc.line
            column = (mark.column + quote + exc.column) if exc.line == 1 else exc.column
        return RuleError(self.source, line, column, f"KQL: {exc.message}")


def rules_summary(rules: Iterable[Rule]) -> str:
    return "\n\n".join(rule.describe() for rule in rules)
