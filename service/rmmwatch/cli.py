"""The ``rmmwatch`` command: run, hunt, state, rules check, generate, version.

Exit codes: 0 success, 1 a runtime failure (unreadable input, store locked), 2 a usage or
configuration error (bad option, bad rule file: the message names file, line and column).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO

import orjson

from rmmwatch import __version__
from rmmwatch.config import ConfigError, RunConfig, add_run_options, resolve
from rmmwatch.kql.datetimes import DatetimeError, parse_datetime
from rmmwatch.rules import Rule, RuleError, load_rules, rules_summary

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def _now_ticks(text: str | None) -> int:
    if text is None:
        from rmmwatch.app import wall_clock  # noqa: PLC0415

        return wall_clock()
    try:
        return parse_datetime(text)
    except DatetimeError as exc:
        raise ConfigError(f"--now: {exc}") from None


def _error(message: str, code: int = EXIT_USAGE) -> int:
    print(f"rmmwatch: error: {message}", file=sys.stderr)
    return code


# -- output ----------------------------------------------------------------------------------


def print_rows(rows: list[dict[str, Any]], columns: Sequence[str], fmt: str, out: TextIO) -> None:
    """Rows as json (one array), csv or an aligned table."""
    if fmt == "json":
        out.write(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode() + "\n")
        return

    def cell(value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, (list, dict)):
            return orjson.dumps(value).decode()
        return str(value)

    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([cell(row.get(c)) for c in columns])
        out.write(buffer.getvalue())
        return
    table = [list(columns)] + [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(columns))]
    for index, line in enumerate(table):
        out.write("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() + "\n")
        if index == 0:
            out.write("  ".join("-" * w for w in widths) + "\n")
    out.write(f"({len(rows)} row{'s' if len(rows) != 1 else ''})\n")


def _columns(rules: Sequence[Rule]) -> list[str]:
    columns: list[str] = ["RuleId"] if len(rules) > 1 else []
    for rule in rules:
        for name in rule.query.output_columns():
            if name not in columns:
                columns.append(name)
    return columns


def _tag(rows: list[dict[str, Any]], rule: Rule, several: bool) -> list[dict[str, Any]]:
    return [{"RuleId": rule.id, **row} for row in rows] if several else rows


# -- hunt ------------------------------------------------------------------------------------


async def _hunt(args: argparse.Namespace) -> int:
    from rmmwatch.events import BatchResult, Detector  # noqa: PLC0415
    from rmmwatch.sources.file import FileSource  # noqa: PLC0415
    from rmmwatch.window import WindowEvent, summarize  # noqa: PLC0415

    rules = load_rules(args.rule or None, exclusions=not args.no_exclusions)
    now = _now_ticks(args.now)
    detector = Detector(rules, max_message_bytes=args.max_message_bytes)
    result = BatchResult()
    bad: list[str] = []
    bad_count = 0
    for path in args.paths:
        source = FileSource(path, max_messages=1000)
        try:
            await source.start()
        except OSError as exc:
            return _error(str(exc), EXIT_FAILURE)
        try:
            while (batch := await source.fetch(0.0)) is not None or not source.exhausted:
                if batch is None:
                    continue
                start = len(result.problems)
                result.messages = 0
                detector.process(batch.messages, result)
                for index, problem in result.problems[start:]:
                    bad_count += 1
                    if len(bad) < 10:
                        where = batch.locate(index)
                        record = f" record {problem.record}" if problem.record is not None else ""
                        bad.append(f"{where['path']}:{where['line']}{record}: {problem.reason}: {problem.detail}")
        except OSError as exc:
            return _error(f"cannot read {path}: {exc.strerror or exc}", EXIT_FAILURE)
        finally:
            await source.close()
    several = len(rules) > 1
    rows: list[dict[str, Any]] = []
    for rule in rules:
        events = (WindowEvent(m.identity, m.ticks, m.group, m.contribution) for m in result.matches if m.rule is rule)
        rows.extend(_tag(summarize(rule.query, events, now), rule, several))
    print_rows(rows, _columns(rules), args.format, sys.stdout)
    if bad_count:
        print(f"rmmwatch: skipped {bad_count} bad line(s) or record(s); first ones:", file=sys.stderr)
        for line in bad:
            print(f"  {line}", file=sys.stderr)
    if result.excluded and not args.quiet:
        names: dict[str, int] = {}
        for excluded in result.excluded:
            names[excluded.exclusion.name] = names.get(excluded.exclusion.name, 0) + 1
        summary = ", ".join(f"{name}: {count}" for name, count in sorted(names.items()))
        print(f"rmmwatch: excluded {len(result.excluded)} matching record(s) ({summary})", file=sys.stderr)
    return EXIT_OK


# -- state -----------------------------------------------------------------------------------


async def _state(args: argparse.Namespace) -> int:
    from rmmwatch.stores import open_store  # noqa: PLC0415
    from rmmwatch.stores.base import StoreRefused  # noqa: PLC0415

    rules = load_rules(args.rule or None)
    now = _now_ticks(args.now)
    url = args.store
    if url == "sqlite":
        url = "sqlite:" + os.path.join(args.data_dir, "rmmwatch.db")
    if url.startswith("sqlite:") and not os.path.exists(url.removeprefix("sqlite:")):
        return _error(f"no sqlite state at {url.removeprefix('sqlite:')}", EXIT_FAILURE)
    from rmmwatch.config import RunConfig  # noqa: PLC0415

    redis_config = RunConfig.from_values(resolve(argparse.Namespace()))
    store = open_store(url, rules, read_only=True, redis=redis_config.redis_options())
    try:
        await store.open()
    except StoreRefused as exc:  # a corrupt store or refused credentials: the reason, never partial rows
        return _error(str(exc), EXIT_FAILURE)
    try:
        several = len(rules) > 1
        rows: list[dict[str, Any]] = []
        for rule in rules:
            rows.extend(_tag(await store.summaries(rule, now), rule, several))
        if args.pending:
            pending = await store.pending_alerts(1_000_000)
            print(f"rmmwatch: {len(pending)} alert(s) waiting for delivery", file=sys.stderr)
    except StoreRefused as exc:
        return _error(str(exc), EXIT_FAILURE)
    finally:
        await store.close()
    print_rows(rows, _columns(rules), args.format, sys.stdout)
    return EXIT_OK


# -- run -------------------------------------------------------------------------------------


async def _run(config: RunConfig) -> int:
    from rmmwatch.app import App  # noqa: PLC0415
    from rmmwatch.events import Detector  # noqa: PLC0415
    from rmmwatch.metrics import Metrics  # noqa: PLC0415
    from rmmwatch.sinks import open_dead_letters, open_sinks  # noqa: PLC0415
    from rmmwatch.sources import open_source  # noqa: PLC0415
    from rmmwatch.stores import open_store  # noqa: PLC0415
    from rmmwatch.stores.base import StoreRefused  # noqa: PLC0415

    rules = load_rules(config.rule or None, exclusions=not config.no_exclusions)
    metrics = Metrics()
    try:
        app = App(
            rules=rules,
            source=open_source(config, metrics),
            store=open_store(
                config.store_url(), rules, sqlite_synchronous=config.sqlite_synchronous, redis=config.redis_options()
            ),
            sinks=open_sinks(config),
            dead_letters=open_dead_letters(config),
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
    try:
        return await app.run()
    except StoreRefused as exc:  # locked, corrupt, wrong credentials or TLS: retrying would not help
        return _error(str(exc), EXIT_FAILURE)


# -- generate --------------------------------------------------------------------------------


def _generate(args: argparse.Namespace) -> int:
    from rmmwatch.synthetic import Generator, GeneratorConfig  # noqa: PLC0415

    config = GeneratorConfig(
        seed=args.seed,
        devices=args.devices,
        netsupport_ratio=args.netsupport_ratio,
        netsupport_devices=args.netsupport_devices,
        duplicate_ratio=args.duplicate_ratio,
        late_ratio=args.late_ratio,
        future_ratio=args.future_ratio,
        other_table_ratio=args.other_table_ratio,
        malformed_ratio=args.malformed_ratio,
        min_records=args.min_records,
        max_records=args.max_records,
    )
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

    formats = ("table", "json", "csv")
    hunt = commands.add_parser("hunt", help="print the hunting query's result over NDJSON/JSON files (backfill)")
    hunt.add_argument("paths", nargs="+", metavar="PATH", help="NDJSON or JSON files; - for stdin")
    hunt.add_argument("--rule", action="append", help="rule file or bundled:<name>; repeatable")
    hunt.add_argument("--now", help="evaluate at this instant (ISO 8601, default: now)")
    hunt.add_argument("--no-exclusions", action="store_true", help="the bare query, without named exclusions")
    hunt.add_argument("--format", choices=formats, default="table")
    hunt.add_argument("--max-message-bytes", type=int, default=1_048_576, help="larger lines are skipped")
    hunt.add_argument("--quiet", action="store_true", help="do not report excluded records on stderr")

    state = commands.add_parser("state", help="print the current state of a store, as hunt would print it")
    state.add_argument("--store", default=os.environ.get("RMMWATCH_STORE", "sqlite"), help="memory is not useful here")
    state.add_argument("--data-dir", default=os.environ.get("RMMWATCH_DATA_DIR", "./data"))
    state.add_argument("--rule", action="append", help="rule file or bundled:<name>; repeatable")
    state.add_argument("--now", help="evaluate at this instant (ISO 8601, default: now)")
    state.add_argument("--format", choices=formats, default="table")
    state.add_argument("--pending", action="store_true", help="also report undelivered alerts on stderr")

    rules = commands.add_parser("rules", help="rule tools")
    rule_commands = rules.add_subparsers(dest="rules_command", required=True, metavar="ACTION")
    check = rule_commands.add_parser("check", help="validate rule files and print what they compile to")
    check.add_argument("files", nargs="*", metavar="FILE", help="rule files or bundled:<name> (default: bundled)")
    rule_commands.add_parser("list", help="list the bundled rules")

    generate = commands.add_parser("generate", help="write a synthetic Defender stream as NDJSON envelopes")
    generate.add_argument("--count", type=int, default=1000, help="messages")
    generate.add_argument("--output", default="-", help="file, or - for stdout")
    generate.add_argument("--seed", type=int, default=1)
    generate.add_argument("--devices", type=int, default=2000)
    generate.add_argument("--netsupport-ratio", type=float, default=0.001)
    generate.add_argument("--netsupport-devices", type=int, default=25)
    generate.add_argument("--duplicate-ratio", type=float, default=0.0)
    generate.add_argument("--late-ratio", type=float, default=0.0)
    generate.add_argument("--future-ratio", type=float, default=0.0)
    generate.add_argument("--other-table-ratio", type=float, default=0.0)
    generate.add_argument("--malformed-ratio", type=float, default=0.0)
    generate.add_argument("--min-records", type=int, default=1)
    generate.add_argument("--max-records", type=int, default=50)
    generate.add_argument("--clock", help="a fixed start time (ISO 8601) instead of the wall clock")
    generate.add_argument("--step-ms", type=float, default=10.0, help="with --clock: clock step per message")

    commands.add_parser("version", help="print the version")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "version":
            print(f"rmmwatch {__version__}")
            return EXIT_OK
        if args.command == "rules":
            if args.rules_command == "list":
                from rmmwatch.rules import bundled_rule_paths  # noqa: PLC0415

                for spec in bundled_rule_paths():
                    print(spec)
                return EXIT_OK
            print(rules_summary(load_rules(args.files or None)))
            return EXIT_OK
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
    except ConfigError as exc:
        return _error(str(exc))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
