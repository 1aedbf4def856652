"""Detection rules: Sentinel hunting-query YAML, as published, plus two optional keys.

A rule file is a Sentinel YAML document (``id``, ``name``, ``query``, ``tactics``,
``relevantTechniques``, ...; unknown Sentinel keys are accepted and ignored), or just a
``query`` (an AHQ block saved as a rule), with two optional rmmwatch keys:

``exclusions``
    a list of named benign scenarios, each ``{name, description, where: <KQL predicate>}``.
    An event that matches the query and an exclusion is not counted; it is metered per
    exclusion and logged, because exclusions key on attacker-controlled text.
``alerting``
    the update policy: ``update: none | every | throttle`` (default ``throttle``),
    ``updateInterval: <timespan>`` (default ``15m``), ``end: true|false`` (default false).
``mode``
    ``live`` (the default) or ``shadow``: a shadow rule runs fully (state, metrics, alerts)
    but its alerts go only to the shadow sinks (``--shadow-sink``), marked ``"mode": "shadow"``,
    never to the paging ones. ``--shadow-rule SPEC`` loads rules as shadow whatever their files
    say (a whole directory in shadow); a rule named by both ``--rule`` and ``--shadow-rule`` is
    refused as a duplicate id, like any rule loaded twice.

Every error names the file, the line and the column, including errors inside the KQL.

Rule packs are loaded as published (docs/semantics.md §1): ``--rule`` takes files,
directories (every ``*.yaml`` / ``*.yml`` below, hidden ones skipped) and globs;
:func:`load_rule_set` reports each file as compiled or refused, with its warnings. Two
defects of the published RMM pack are accepted, each with a warning or silently as
Sentinel's own tooling does: ``dataTypes:`` indented like the ``- connectorId:`` item above
it (invalid YAML, repaired in memory, exactly that and nothing else) and a scalar
``tactics`` / ``relevantTechniques`` (a one-item list). A rule without an ``id`` (an AHQ
block saved as a rule) gets one derived from its path relative to the directory given and
its query text (:func:`derived_rule_id`), so it is the same from any working directory; a
Sentinel rule (one with a ``name``) must have its ``id``.
"""

from __future__ import annotations

import glob
import hashlib
import importlib.resources
import importlib.resources.abc
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import yaml

from rmmwatch.kql.compiled import CompiledQuery, Predicate
from rmmwatch.kql.compiler import compile_condition, compile_query
from rmmwatch.kql.datetimes import TICKS_PER_MINUTE, timespan_literal
from rmmwatch.kql.errors import KqlError, KqlWarning
from rmmwatch.kql.lexer import tokenize
from rmmwatch.kql.schema import IDENTITY_COLUMNS, KqlType

UpdateMode = Literal["none", "every", "throttle"]

#: Where a rule's alerts go: ``live`` to the ``--sink``s, ``shadow`` only to the ``--shadow-sink``s.
RuleMode = Literal["live", "shadow"]
RULE_MODES: tuple[RuleMode, ...] = ("live", "shadow")


#: Why a rule file was refused (the label of ``rmmwatch_rules_skipped_total``).
RefusalKind = Literal["unreadable", "yaml", "rule", "kql", "duplicate_id"]


@dataclass(frozen=True, slots=True)
class RuleWarning:
    """Something a rule file does that rmmwatch accepts but its author should know, located."""

    source: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}:{self.column}: {self.message}"


class RuleError(Exception):
    """A rule file that cannot be loaded, with its location (1-based line and column)."""

    def __init__(
        self,
        source: str,
        line: int,
        column: int,
        message: str,
        *,
        kind: RefusalKind = "rule",
        warnings: tuple[RuleWarning, ...] = (),
    ) -> None:
        super().__init__(f"{source}:{line}:{column}: {message}")
        self.source = source
        self.line = line
        self.column = column
        self.message = message
        self.kind: RefusalKind = kind
        #: What was found before the refusal (a YAML repair, a KQL warning).
        self.warnings = warnings


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
    #: ``live`` or ``shadow`` (the file's ``mode``, or ``shadow`` for a rule loaded by ``--shadow-rule``).
    mode: RuleMode = "live"
    #: Where the id is in the file ((1, 1) for a derived id), for duplicate-id refusals.
    id_position: tuple[int, int] = field(default=(1, 1), compare=False)
    warnings: tuple[RuleWarning, ...] = field(default=(), compare=False)

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
            f"mode      {self.mode}" + (" (alerts only to the shadow sinks)" if self.mode == "shadow" else ""),
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
        for constant in q.row_constants:
            lines.append(f"then      extend {constant.name} = {constant.value!r} (the same in every row)")
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


@dataclass(frozen=True, slots=True)
class RuleSource:
    """One rule file to load: as it is named in messages, and its path relative to what was given."""

    spec: str  # a path as the user would type it, or bundled:<name>
    relative: str  # relative to the directory (or glob prefix) given; a file's own name; used for derived ids


@dataclass(frozen=True, slots=True)
class RuleFile:
    """One rule file as the loader saw it: compiled or refused, and what it warned about."""

    source: RuleSource
    rule: Rule | None
    error: RuleError | None
    warnings: tuple[RuleWarning, ...]


@dataclass(frozen=True, slots=True)
class RuleSet:
    """Every rule file of a load, in order, and whether a directory or glob was among the specs."""

    files: tuple[RuleFile, ...]
    expanded: bool = False

    @property
    def rules(self) -> list[Rule]:
        return [f.rule for f in self.files if f.rule is not None]

    @property
    def refused(self) -> list[RuleError]:
        return [f.error for f in self.files if f.error is not None]

    @property
    def warnings(self) -> list[RuleWarning]:
        return [w for f in self.files for w in f.warnings]


_GLOB_MAGIC = re.compile(r"[*?[]")
RULE_SUFFIXES = (".yaml", ".yml")


def rule_sources(specs: Sequence[str]) -> tuple[list[RuleSource], bool]:
    """Expand ``--rule`` values: files, ``bundled:<name>``, directories (recursive) and globs.

    Returns the files in order (each once) and whether any spec was a directory or a glob.
    A directory is walked for ``*.yaml`` / ``*.yml`` (names starting with ``.`` skipped, so a
    checkout's ``.github`` is not read); a glob's file matches are taken as given, its
    directory matches walked. A directory without rule files, or a glob matching nothing,
    is an error (a typo must not load zero rules silently).
    """
    out: list[RuleSource] = []
    seen: set[str] = set()
    expanded = False

    def add(source: RuleSource) -> None:
        key = source.spec if source.spec.startswith("bundled:") else os.path.realpath(source.spec)
        if key not in seen:
            seen.add(key)
            out.append(source)

    for spec in specs:
        if spec.startswith("bundled:") or os.path.isfile(spec):
            add(RuleSource(spec, spec if spec.startswith("bundled:") else Path(spec).name))
        elif os.path.isdir(spec):
            expanded = True
            found = _walk(spec, spec)
            if not found:
                raise RuleError(spec, 1, 1, "no *.yaml or *.yml rule file under this directory", kind="unreadable")
            for source in found:
                add(source)
        elif _GLOB_MAGIC.search(spec):
            expanded = True
            base = _glob_base(spec)
            matches = sorted(glob.glob(spec, recursive=True))
            if not matches:
                raise RuleError(spec, 1, 1, "no file matches this pattern", kind="unreadable")
            for match in matches:
                if os.path.isdir(match):
                    for source in _walk(match, base):
                        add(source)
                elif os.path.isfile(match):
                    add(RuleSource(match, _relative(match, base)))
        else:
            add(RuleSource(spec, Path(spec).name))  # reading it reports why it cannot be read
    return out, expanded


def _walk(directory: str, base: str) -> list[RuleSource]:
    found: list[RuleSource] = []
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.endswith(RULE_SUFFIXES) and not name.startswith("."):
                path = os.path.join(root, name)
                found.append(RuleSource(path, _relative(path, base)))
    return found


def _glob_base(pattern: str) -> str:
    """The directory part of a glob before its first wildcard (``pack/*/x.yaml`` -> ``pack``)."""
    parts = Path(pattern).parts
    fixed: list[str] = []
    for part in parts:
        if _GLOB_MAGIC.search(part):
            break
        fixed.append(part)
    return str(Path(*fixed)) if fixed else "."


def _relative(path: str, base: str) -> str:
    return Path(os.path.relpath(path, base)).as_posix()


def derived_rule_id(relative: str, query: str) -> str:
    """The id of a rule file without one: its relative path and a digest of (path, query text).

    ``relative`` is the file's path relative to the directory given (or its name, for a file
    given directly), so the id is the same whatever the working directory; the digest changes
    when the query does (a changed rule is a new rule: its alerts get new ids).
    """
    digest = hashlib.sha256(f"{relative}\n{query}".encode()).hexdigest()[:12]
    return f"{relative}#{digest}"


def load_rule_set(
    specs: Sequence[str] | None = None, *, exclusions: bool = True, shadow: Sequence[str] = ()
) -> RuleSet:
    """Load every rule file the specs name, reporting each as compiled or refused (never raising for one).

    ``shadow`` (``--shadow-rule``) names more rule files, loaded with mode ``shadow`` whatever their
    files say. No ``specs`` means every bundled rule, less those ``shadow`` names (so
    ``--shadow-rule bundled:X`` alone shadows X and keeps the others live). Rule ids must be unique
    across the set, shadow ones included: a second file with an id already loaded is refused, naming
    both files (a rule given both live and shadow is such a duplicate). Raises :class:`RuleError` only
    for a spec that names nothing.
    """
    shadow = list(shadow)
    live_specs = list(specs) if specs else [s for s in bundled_rule_paths() if s not in shadow]
    sources, expanded = rule_sources(live_specs)
    shadow_sources, shadow_expanded = rule_sources(shadow) if shadow else ([], False)
    files: list[RuleFile] = []
    seen: dict[str, Rule] = {}
    for source, forced_shadow in [(s, False) for s in sources] + [(s, True) for s in shadow_sources]:
        try:
            rule = load_rule(source.spec, relative=source.relative)
        except RuleError as exc:
            files.append(RuleFile(source, None, exc, exc.warnings))
            continue
        if forced_shadow:
            rule = replace(rule, mode="shadow")
        first = seen.get(rule.id)
        if first is not None:
            line, column = rule.id_position
            where = f"{first.source}:{first.id_position[0]}:{first.id_position[1]}"
            error = RuleError(
                source.spec,
                line,
                column,
                f"duplicate rule id {rule.id!r}: {where} has the same id (ids must be unique across the rules loaded)",
                kind="duplicate_id",
                warnings=rule.warnings,
            )
            files.append(RuleFile(source, None, error, rule.warnings))
            continue
        seen[rule.id] = rule
        files.append(RuleFile(source, rule if exclusions else rule.without_exclusions(), None, rule.warnings))
    return RuleSet(tuple(files), expanded or shadow_expanded)


def load_rules(specs: Sequence[str] | None = None, *, exclusions: bool = True) -> list[Rule]:
    """Load rules from files, directories, globs (or ``bundled:<name>``); none given means every bundled rule.

    Raises the first refusal as a :class:`RuleError` (see :func:`load_rule_set` for all of them).
    """
    rule_set = load_rule_set(specs, exclusions=exclusions)
    if rule_set.refused:
        raise rule_set.refused[0]
    return rule_set.rules


def load_rule(spec: str, *, relative: str | None = None) -> Rule:
    """Load one rule from a path or ``bundled:<name>`` (``relative``: see :func:`derived_rule_id`)."""
    if spec.startswith("bundled:"):
        name = spec.removeprefix("bundled:")
        resource = _bundled_dir().joinpath(f"{name}.yaml")
        if not resource.is_file():
            available = ", ".join(bundled_rule_paths())
            raise RuleError(spec, 1, 1, f"no bundled rule {name!r} (available: {available})", kind="unreadable")
        return parse_rule(resource.read_text(encoding="utf-8"), spec, relative=relative)
    try:
        text = Path(spec).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise RuleError(spec, 1, 1, f"not UTF-8 text: {exc.reason} at byte {exc.start}", kind="unreadable") from None
    except OSError as exc:
        raise RuleError(spec, 1, 1, f"cannot read rule file: {exc.strerror or exc}", kind="unreadable") from None
    return parse_rule(text, spec, relative=relative)


# -- the dataTypes repair --------------------------------------------------------------------

#: ``    - connectorId: MicrosoftThreatProtection`` (an item of requiredDataConnectors).
_CONNECTOR_ITEM = re.compile(r"^( *)- connectorId:[ \t]*\S[^\n]*$")
#: ``    dataTypes:`` alone on its line.
_DATA_TYPES = re.compile(r"^( *)dataTypes:[ \t]*\r?$")


def repair_data_types(text: str) -> tuple[str, list[int]]:
    """The published RMM pack's one YAML defect, repaired: ``dataTypes:`` written at the indentation
    of the ``- connectorId:`` item above it instead of under that item's key::

        requiredDataConnectors:
            - connectorId: MicrosoftThreatProtection
            dataTypes:              # invalid YAML: it should line up with connectorId
                - DeviceProcessEvents

    Exactly that is recognised: the ``dataTypes:`` line directly below the item, at the dash's
    column, its list indented deeper than the item's keys. It is moved two columns right (to
    the item's keys); no other line changes. Returns the text and the 1-based lines moved.
    """
    lines = text.split("\n")
    moved: list[int] = []
    for index in range(1, len(lines) - 1):
        item = _CONNECTOR_ITEM.match(lines[index - 1].rstrip("\r"))
        key = _DATA_TYPES.match(lines[index])
        if not item or not key or len(key.group(1)) != len(item.group(1)):
            continue
        keys_column = len(item.group(1)) + 2
        following = next((line for line in lines[index + 1 :] if line.strip()), "")
        if len(following) - len(following.lstrip(" ")) < keys_column:
            continue
        lines[index] = "  " + lines[index]
        moved.append(index + 1)
    return "\n".join(lines), moved


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


def _compose(text: str, source: str) -> yaml.Node | None:
    try:
        return yaml.compose(text, Loader=_RuleLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise RuleError(source, line, column, f"invalid YAML: {exc.problem or exc}", kind="yaml") from None
    except yaml.YAMLError as exc:
        raise RuleError(source, 1, 1, f"invalid YAML: {exc}", kind="yaml") from None


def parse_rule(text: str, source: str = "<rule>", *, relative: str | None = None) -> Rule:
    """Parse and compile a rule document (``relative``: its path for a derived id, default ``source``).

    Invalid YAML is refused with its line and column, unless the error is the pack's
    ``dataTypes`` defect (:func:`repair_data_types`), which is repaired in memory with a warning.
    """
    warnings: list[RuleWarning] = []
    try:
        node = _compose(text, source)
    except RuleError as exc:
        repaired, moved = repair_data_types(text)
        if exc.kind != "yaml" or exc.line not in moved:
            raise
        lines = ", ".join(str(line) for line in moved)
        warnings.append(
            RuleWarning(
                source,
                moved[0],
                exc.column,
                f"invalid YAML repaired in memory (line {lines}): 'dataTypes:' is indented like the "
                "'- connectorId:' item above it; read as that item's key, as Sentinel's template means "
                "(the file is not changed)",
            )
        )
        try:
            node = _compose(repaired, source)
        except RuleError as other:  # another YAML error: refused where it is, the repair reported too
            other.warnings = tuple(warnings)
            raise
        text = repaired
    if node is None:
        raise RuleError(source, 1, 1, "empty rule file", warnings=tuple(warnings))
    builder = _RuleBuilder(text, source, relative or source, warnings)
    try:
        return builder.build(node)
    except RuleError as exc:
        exc.warnings = tuple(builder.warnings)
        raise


#: A block scalar's header: ``|``, ``>-``, ``|2``, ``|+2``, ``>2-`` (the digit is the indentation indicator).
_BLOCK_HEADER = re.compile(r"[|>](?:([1-9])[+-]?|[+-]?([1-9])?)")


class _RuleBuilder:
    def __init__(self, text: str, source: str, relative: str, warnings: list[RuleWarning]) -> None:
        self.lines = text.splitlines()
        self.source = source
        self.relative = relative
        self.warnings = warnings

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
        """A list of strings; a single string is a one-item list (the RMM pack writes ``tactics: X``)."""
        if node is None:
            return ()
        if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:str":
            return (str(node.value),)
        if not isinstance(node, yaml.SequenceNode):
            raise self.error(node, f"{what} must be a string or a list of strings")
        return tuple(self.string(item, f"each item of {what}") for item in node.value)

    def build(self, root: yaml.Node) -> Rule:
        doc = self.mapping(root, "a rule file")
        if "query" not in doc:
            raise self.error(root, "missing required key 'query'")
        query_node = doc["query"]
        query_text = self.string(query_node, "query")
        if not query_text.strip():
            raise self.error(query_node, "query is empty")
        if "id" in doc:
            rule_id = self.string(doc["id"], "id").strip()
            if not rule_id:
                raise self.error(doc["id"], "id must not be empty")
            id_position = (doc["id"].start_mark.line + 1, doc["id"].start_mark.column + 1)
        elif "name" in doc:
            # A Sentinel rule (it has a name) has an id; only a bare query (an AHQ block) gets one derived.
            raise self.error(root, "missing required key 'id' (only a file holding just a query gets a derived id)")
        else:
            rule_id = derived_rule_id(self.relative, query_text)
            id_position = (1, 1)
        try:
            query = compile_query(query_text)
        except KqlError as exc:
            self.kql_warnings(query_node, exc.warnings)
            raise self.kql_error(query_node, exc) from None
        self.kql_warnings(query_node, query.warnings)
        exclusions = self.exclusions(doc.get("exclusions"), query.schema)
        alerting = self.alerting(doc.get("alerting"))
        mode = self.mode(doc.get("mode"))
        severity = self.string(doc["severity"], "severity") if "severity" in doc else None
        name = self.string(doc["name"], "name").strip() if "name" in doc else rule_id
        return Rule(
            id=rule_id,
            name=name,
            description=self.string(doc["description"], "description").strip() if "description" in doc else "",
            severity=severity,
            tactics=self.strings(doc.get("tactics"), "tactics"),
            techniques=self.strings(doc.get("relevantTechniques"), "relevantTechniques"),
            query=query,
            exclusions=exclusions,
            alerting=alerting,
            source=self.source,
            mode=mode,
            id_position=id_position,
            warnings=tuple(self.warnings),
        )

    def kql_warnings(self, node: yaml.Node, warnings: Iterable[KqlWarning]) -> None:
        for warning in warnings:
            line, column = self.locate(node, warning.line, warning.column)
            self.warnings.append(RuleWarning(self.source, line, column, f"KQL: {warning.message}"))

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
            warnings: list[KqlWarning] = []
            try:
                condition, columns = compile_condition(where, schema, warnings)
            except KqlError as exc:
                raise self.kql_error(where_node, exc) from None
            self.kql_warnings(where_node, warnings)
            description = self.string(fields["description"], "description") if "description" in fields else ""
            out.append(Exclusion(name, description.strip(), where, condition.evaluate, columns))
        return tuple(out)

    def mode(self, node: yaml.Node | None) -> RuleMode:
        if node is None:
            return "live"
        text = node.value if isinstance(node, yaml.ScalarNode) else None
        for mode in RULE_MODES:
            if text == mode:
                return mode
        raise self.error(node, "mode must be live or shadow")

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
        line, column = self.locate(node, exc.line, exc.column)
        return RuleError(self.source, line, column, f"KQL: {exc.message}", kind="kql", warnings=tuple(self.warnings))

    def locate(self, node: yaml.Node, query_line: int, query_column: int) -> tuple[int, int]:
        """A (line, column) of a KQL text to a (line, column) of the file holding it in ``node``."""
        mark = node.start_mark
        style = getattr(node, "style", None)
        if style in ("|", ">"):
            first_content = mark.line + 1  # 0-based line after the block indicator
            header = _BLOCK_HEADER.match(self.lines[mark.line][mark.column :]) if mark.line < len(self.lines) else None
            explicit = header.group(1) or header.group(2) if header else None
            if explicit:  # `|2`: the indentation is the parent's plus the indicator
                parent = self.lines[mark.line]
                indent = len(parent) - len(parent.lstrip(" ")) + int(explicit)
            else:  # the first non-blank line's indentation
                indent = 0
                for raw in self.lines[first_content:]:
                    if raw.strip():
                        indent = len(raw) - len(raw.lstrip(" "))
                        break
            return first_content + query_line, indent + query_column
        quote = 1 if style in ("'", '"') else 0
        line = mark.line + query_line
        return line, (mark.column + quote + query_column) if query_line == 1 else query_column


def rules_summary(rules: Iterable[Rule]) -> str:
    return "\n\n".join(rule.describe() for rule in rules)
