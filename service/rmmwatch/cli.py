"""The ``rmmwatch`` command: run, hunt, state, rules check, generate, version.

Exit codes: 0 success, 1 a runtime failure (unreadable input, store locked), 2 a usage or
configuration error (bad option, bad rule file: the message names file, line and column).

``--rule`` (run, hunt, state) and ``rules check`` take files, directories and globs
(:func:`rmmwatch.rules.load_rule_set`). Every refused rule file is named, not just the first;
``run --skip-invalid-rules`` starts with the others. ``--shadow-rule`` (run, rules check, rules
list) loads rules in shadow mode; ``rules list`` and ``rules check`` show each rule's mode. Rule
warnings (a repaired file, adjacent string literals) are printed by ``rules check``, ``hunt`` and
``state`` and logged once by ``run``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import sys
from collections.abc import Sequence
from typing import Any

from rmmwatch import __version__
from rmmwatch.config import STORE_OPTIONS, ConfigError, RunConfig, add_run_options, resolve
from rmmwatch.hunt import FORMATS, Hunt, output_columns, print_rows, tag_rows
from rmmwatch.kql.datetimes import DatetimeError, parse_datetime
from rmmwatch.kql.schema import TABLES
from rmmwatch.model import wall_clock
from rmmwatch.rules import Rule, RuleError, RuleSet, load_rule_set, rules_summary
from rmmwatch.synthetic import GeneratorConfig

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def _now_ticks(text: str | None) -> int:
    if text is None:
        return wall_clock()
    try:
        return parse_datetime(text)
    except DatetimeError as exc:
        raise ConfigError(f"--now: {exc}") from None


def _error(message: str, code: int = EXIT_USAGE) -> int:
    print(f"rmmwatch: error: {message}", file=sys.stderr)
    return code


# -- rules -----------------------------------------------------------------------------------


class RulesRefused(Exception):
    """Some rule files were refused (each already printed): the command stops with exit code 2."""


def _rules(specs: list[str] | None, *, exclusions: bool = True) -> list[Rule]:
    """hunt's and state's rules: every refusal printed (then exit 2), every warning printed."""
    rule_set = load_rule_set(specs or None, exclusions=exclusions)
    for warning in rule_set.warnings:
        print(f"rmmwatch: warning: {warning}", file=sys.stderr)
    if rule_set.refused:
        _print_refusals(rule_set)
        raise RulesRefused
    return rule_set.rules


def _print_refusals(rule_set: RuleSet) -> None:
    for error in rule_set.refused:
        _error(str(error))
    if len(rule_set.files) > 1:
        count = len(rule_set.refused)
        _error(f"{count} of {len(rule_set.files)} rule files refused")


def _rules_list(specs: list[str], shadow: list[str]) -> int:
    """``rules list``: one line per rule, ``SPEC MODE ID`` (default: the bundled rules)."""
    rule_set = load_rule_set(specs or None, shadow=shadow)
    for file in rule_set.files:
        if file.rule is not None:
            print(f"{file.source.spec} {file.rule.mode} {file.rule.id}")
    if rule_set.refused:
        _print_refusals(rule_set)
        return EXIT_USAGE
    return EXIT_OK


def _rules_check(specs: list[str], shadow: list[str]) -> int:
    """``rules check``: what each rule compiles to (files), or one line per file (directories, globs)."""
    rule_set = load_rule_set(specs or None, shadow=shadow)
    if not rule_set.expanded:
        for warning in rule_set.warnings:
            print(f"rmmwatch: warning: {warning}", file=sys.stderr)
        if rule_set.refused:
            _print_refusals(rule_set)
            return EXIT_USAGE
        print(rules_summary(rule_set.rules))
        return EXIT_OK
    warned = 0
    for file in rule_set.files:
        if file.rule is not None:
            print(f"compiled: {file.source.spec} {file.rule.id} {file.rule.query.table} {file.rule.mode}")
        elif file.error is not None:
            print(f"refused: {file.error}")
        for warning in file.warnings:
            print(f"warning: {warning}")
        warned += bool(file.warnings)
    refused = len(rule_set.refused)
    print(f"{len(rule_set.rules)} compiled, {refused} refused, {warned} repaired/warned")
    return EXIT_USAGE if refused else EXIT_OK


# -- hunt ------------------------------------------------------------------------------------


async def _hunt(args: argparse.Namespace) -> int:
    from rmmwatch.events import Detector  # noqa: PLC0415
    from rmmwatch.model import BatchResult  # noqa: PLC0415
    from rmmwatch.sources.file import FileSource  # noqa: PLC0415

    rules = _rules(args.rule, exclusions=not args.no_exclusions)
    now = _now_ticks(args.now)
    # --strict: no prefilter, so every message is parsed and every bad one reported (the prefilter skips, unparsed,
    # messages that cannot match any rule: docs/semantics.md §8).
    detector = Detector(
        rules,
        max_message_bytes=args.max_message_bytes,
        prefilter_engine="off" if args.strict else "auto",
        table=args.table,
    )
    hunt = Hunt(rules)
    excluded: dict[str, int] = {}
    bad: list[str] = []
    bad_by_reason: dict[str, int] = {}
    for path in args.paths:
        source = FileSource(path, max_messages=1000, max_message_bytes=args.max_message_bytes)
        try:
            await source.start()
        except OSError as exc:
            return _error(str(exc), EXIT_FAILURE)
        try:
            while (batch := await source.fetch(0.5)) is not None or not source.exhausted:
                if batch is None:
                    continue
                result = detector.process(batch.messages, BatchResult())
                hunt.add(result.matches)
                for item in result.excluded:
                    excluded[item.exclusion.name] = excluded.get(item.exclusion.name, 0) + 1
                for index, problem in result.problems:
                    bad_by_reason[problem.reason] = bad_by_reason.get(problem.reason, 0) + 1
                    if len(bad) < 10:
                        where = batch.locate(index)
                        record = f" record {problem.record}" if problem.record is not None else ""
                        bad.append(f"{where['path']}:{where['line']}{record}: {problem.reason}: {problem.detail}")
        except OSError as exc:
            return _error(f"cannot read {path}: {exc.strerror or exc}", EXIT_FAILURE)
        finally:
            await source.close()
    print_rows(hunt.rows(now), hunt.columns, args.format, sys.stdout)
    if bad_by_reason:
        reasons = ", ".join(f"{reason}: {count}" for reason, count in sorted(bad_by_reason.items()))
        total = sum(bad_by_reason.values())
        print(f"rmmwatch: skipped {total} bad line(s) or record(s) ({reasons}); first ones:", file=sys.stderr)
        for line in bad:
            print(f"  {line}", file=sys.stderr)
    if excluded and not args.quiet:
        summary = ", ".join(f"{name}: {count}" for name, count in sorted(excluded.items()))
        print(f"rmmwatch: excluded {sum(excluded.values())} matching record(s) ({summary})", file=sys.stderr)
    return EXIT_OK


# -- state -----------------------------------------------------------------------------------


async def _state(args: argparse.Namespace) -> int:
    from rmmwatch.stores.base import StoreRefused  # noqa: PLC0415
    from rmmwatch.wiring import store_for  # noqa: PLC0415

    rules = _rules(args.rule)
    now = _now_ticks(args.now)
    config = RunConfig.from_values(resolve(args, options=STORE_OPTIONS))
    url = config.store_url()
    if url.startswith("sqlite:") and not os.path.exists(url.removeprefix("sqlite:")):
        return _error(f"no sqlite state at {url.removeprefix('sqlite:')}", EXIT_FAILURE)
    try:
        store = store_for(config, rules, read_only=True)
    except ValueError as exc:  # a store URL and options that do not go together
        raise ConfigError(str(exc)) from None
    try:
        await store.open()
    except StoreRefused as exc:  # a corrupt store or refused credentials: the reason, never partial rows
        return _error(str(exc), EXIT_FAILURE)
    try:
        several = len(rules) > 1
        rows: list[dict[str, Any]] = []
        for rule in rules:
            rows.extend(tag_rows(await store.summaries(rule, now), rule, several))
        if args.pending:
            pending = await store.pending_alerts(1_000_000)
            print(f"rmmwatch: {len(pending)} alert(s) waiting for delivery", file=sys.stderr)
    except StoreRefused as exc:
        return _error(str(exc), EXIT_FAILURE)
    finally:
        await store.close()
    print_rows(rows, output_columns(rules), args.format, sys.stdout)
    return EXIT_OK


# -- run -------------------------------------------------------------------------------------


async def _run(config: RunConfig) -> int:
    from rmmwatch.logging import get_logger  # noqa: PLC0415
    from rmmwatch.stores.base import StoreRefused  # noqa: PLC0415
    from rmmwatch.wiring import build_app  # noqa: PLC0415

    log = get_logger("rmmwatch.rules")
    rule_set = load_rule_set(config.rule or None, exclusions=not config.no_exclusions, shadow=config.shadow_rule)
    if rule_set.refused and not config.skip_invalid_rules:
        _print_refusals(rule_set)
        return _error("not starting: fix the rule files above, or pass --skip-invalid-rules to run the others")
    for warning in rule_set.warnings:
        log.warning(
            "rule_warning", file=warning.source, line=warning.line, column=warning.column, warning=warning.message
        )
    for error in rule_set.refused:
        log.error(
            "rule_skipped",
            file=error.source,
            line=error.line,
            column=error.column,
            reason=error.kind,
            error=error.message,
        )
    if not rule_set.rules:
        return _error("no rule left to run: every rule file was refused")
    app = build_app(config, rule_set.rules)
    for error in rule_set.refused:
        app.metrics.rules_skipped.labels(reason=error.kind).inc()
    try:
        return await app.run()
    except StoreRefused as exc:  # locked, corrupt, wrong credentials or TLS: retrying would not help
        return _error(str(exc), EXIT_FAILURE)


# -- generate --------------------------------------------------------------------------------


#: GeneratorConfig fields that ``generate`` offers as options (their defaults are the dataclass's).
GENERATE_OPTIONS = (
    "seed",
    "devices",
    "netsupport_ratio",
    "netsupport_devices",
    "decoy_ratio",
    "network_ratio",
    "certificate_ratio",
    "rmm_ratio",
    "rmm_devices",
    "near_miss_ratio",
    "duplicate_ratio",
    "late_ratio",
    "future_ratio",
    "other_table_ratio",
    "malformed_ratio",
    "min_records",
    "max_records",
    "compact",
)


def _generate(args: argparse.Namespace) -> int:
    from rmmwatch.synthetic import Generator  # noqa: PLC0415

    config = GeneratorConfig(**{name: getattr(args, name) for name in GENERATE_OPTIONS})
    clock = None
    if args.clock is not None:
        start = parse_datetime(args.clock)
        step = int(args.step_ms * 10_000)
        ticks = [start - step]

        def fixed() -> int:
            ticks[0] += step
            return ticks[0]

        clock = fixed
    generator = Generator(config, clock) if clock else Generator(config)
    out = open(args.output, "wb") if args.output != "-" else sys.stdout.buffer  # noqa: SIM115
    try:
        for message in generator.messages(args.count):
            out.write(message + b"\n")
    finally:
        if out is not sys.stdout.buffer:
            out.close()
        else:
            out.flush()
    stats = generator.stats
    print(
        f"rmmwatch: generated {stats.messages} messages, {stats.records} records, {stats.netsupport} NetSupport "
        f"launches, {stats.decoys} decoys, {stats.duplicates} duplicates, {stats.late} late, {stats.future} future, "
        f"{stats.malformed} malformed",
        file=sys.stderr,
    )
    return EXIT_OK


# -- the parser ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rmmwatch",
        description="Sentinel RMM hunting queries (NetSupport first), run continuously over Defender XDR "
        "DeviceProcessEvents.",
    )
    parser.add_argument("--version", action="version", version=f"rmmwatch {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the streaming detector")
    add_run_options(run)

    formats = FORMATS
    hunt = commands.add_parser("hunt", help="print the hunting query's result over NDJSON/JSON files (backfill)")
    hunt.add_argument("paths", nargs="+", metavar="PATH", help="NDJSON or JSON files; - for stdin")
    hunt.add_argument(
        "--rule", action="append", help="rule file, directory (recursive), glob or bundled:<name>; repeatable"
    )
    hunt.add_argument("--now", help="evaluate at this instant (ISO 8601, default: now)")
    hunt.add_argument("--no-exclusions", action="store_true", help="the bare query, without named exclusions")
    hunt.add_argument("--format", choices=formats, default="table")
    hunt.add_argument(
        "--max-message-bytes",
        type=int,
        default=1_048_576,
        help="larger lines are reported as oversized (a larger JSON document is read element by element)",
    )
    hunt.add_argument(
        "--table",
        choices=sorted(TABLES),
        help="the table of rows without a category (an Advanced Hunting export); default: told by their columns",
    )
    hunt.add_argument(
        "--strict",
        action="store_true",
        help="parse every line, also those no rule can match, so that every bad one is reported",
    )
    hunt.add_argument("--quiet", action="store_true", help="do not report excluded records on stderr")

    state = commands.add_parser("state", help="print the current state of a store, as hunt would print it")
    add_run_options(state, STORE_OPTIONS)
    state.add_argument(
        "--rule", action="append", help="rule file, directory (recursive), glob or bundled:<name>; repeatable"
    )
    state.add_argument("--now", help="evaluate at this instant (ISO 8601, default: now)")
    state.add_argument("--format", choices=formats, default="table")
    state.add_argument("--pending", action="store_true", help="also report undelivered alerts on stderr")

    rules = commands.add_parser("rules", help="rule tools")
    rule_commands = rules.add_subparsers(dest="rules_command", required=True, metavar="ACTION")
    check = rule_commands.add_parser(
        "check",
        help="validate rule files and print what they compile to (a directory or glob: one line per file, "
        "exit 2 if any is refused)",
    )
    check.add_argument(
        "files",
        nargs="*",
        metavar="FILE",
        help="rule files, directories (recursive), globs or bundled:<name> (default: bundled)",
    )
    listing = rule_commands.add_parser(
        "list", help="one line per rule: its spec, its mode (live or shadow) and its id (default: the bundled rules)"
    )
    listing.add_argument(
        "files", nargs="*", metavar="FILE", help="rule files, directories (recursive), globs or bundled:<name>"
    )
    for command in (check, listing):
        command.add_argument(
            "--shadow-rule",
            action="append",
            default=[],
            metavar="SPEC",
            help="rules loaded in shadow mode, as run --shadow-rule loads them; repeatable",
        )

    generate = commands.add_parser("generate", help="write a synthetic Defender stream as NDJSON envelopes")
    generate.add_argument("--count", type=int, default=1000, help="messages")
    generate.add_argument("--output", default="-", help="file, or - for stdout")
    for spec in dataclasses.fields(GeneratorConfig):
        if spec.name in GENERATE_OPTIONS:
            flag = "--" + spec.name.replace("_", "-")
            if isinstance(spec.default, bool):
                generate.add_argument(flag, action="store_true", default=spec.default)
            else:
                generate.add_argument(flag, type=type(spec.default), default=spec.default)
    generate.add_argument("--clock", help="a fixed start time (ISO 8601) instead of the wall clock")
    generate.add_argument("--step-ms", type=float, default=10.0, help="with --clock: clock step per message")

    commands.add_parser("version", help="print the version")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command != "run":
        from rmmwatch.logging import configure  # noqa: PLC0415

        # The tools print their answer on stdout: their log lines (warnings and worse) go to stderr.
        configure("warning", "console")
    try:
        if args.command == "version":
            print(f"rmmwatch {__version__}")
            return EXIT_OK
        if args.command == "rules":
            if args.rules_command == "list":
                return _rules_list(args.files, args.shadow_rule)
            return _rules_check(args.files, args.shadow_rule)
        if args.command == "hunt":
            return asyncio.run(_hunt(args))
        if args.command == "state":
            return asyncio.run(_state(args))
        if args.command == "generate":
            return _generate(args)
        config = RunConfig.from_values(resolve(args))
        from rmmwatch.logging import configure  # noqa: PLC0415

        configure(config.log_level, config.log_format)
        return asyncio.run(_run(config))
    except RuleError as exc:
        return _error(str(exc))
    except RulesRefused:
        return EXIT_USAGE
    except ConfigError as exc:
        return _error(str(exc))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
