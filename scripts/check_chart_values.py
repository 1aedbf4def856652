#!/usr/bin/env python3
"""Check that the chart's templates only use values that values.yaml declares.

A template that reads ``.Values.store.redis.urll`` renders an empty string without a
word from Helm; this check catches it. It walks ``templates/`` for

* ``.Values.a.b`` and ``$.Values.a.b``,
* ``index .Values "a" "b"``,
* variables bound to a values path (``{{- $kafka := .Values.source.kafka }}``) and then
  used as ``$kafka.tls.secretName`` (bindings are scoped to a ``define`` block, or to the
  file outside of them),

and fails on any path that does not exist in values.yaml. It also fails on properties
that values.schema.json declares but values.yaml lacks (a value with no default and no
documentation), and, with ``--fail-unused``, on values that no template reads.

Usage: check_chart_values.py CHART_DIR [--fail-unused]
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
PATH = rf"((?:\.{IDENT})*)"
VALUES_REF = re.compile(rf"(?<![\w$])\$?\.Values{PATH}")
INDEX_REF = re.compile(r"\bindex\s+\$?\.Values((?:\s+\"[^\"]+\")+)")
BINDING = re.compile(rf"(\${IDENT})\s*:=\s*\$?\.Values{PATH}\s*(?:-?\}}\}})")
DEFINE = re.compile(r"\{\{-?\s*define\s+\"[^\"]+\"\s*-?\}\}")


def exists(values: Any, path: tuple[str, ...]) -> bool:
    node = values
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return False
        node = node[key]
    return True


def leaf_paths(values: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every path down to a non-mapping or an empty mapping (free-form maps stop there)."""
    if isinstance(values, dict) and values:
        out: list[tuple[str, ...]] = []
        for key, child in values.items():
            out.extend(leaf_paths(child, (*prefix, str(key))))
        return out
    return [prefix]


def schema_paths(schema: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for key, child in (schema.get("properties") or {}).items():
        path = (*prefix, key)
        out.append(path)
        if isinstance(child, dict):
            out.extend(schema_paths(child, path))
    return out


def blocks(text: str) -> list[tuple[int, str]]:
    """(first line number, text) of each ``define`` block and of the rest of the file."""
    starts = [m.start() for m in DEFINE.finditer(text)]
    if not starts:
        return [(1, text)]
    cuts = [0, *starts, len(text)]
    return [(text.count("\n", 0, a) + 1, text[a:b]) for a, b in itertools.pairwise(cuts) if b > a]


def references(path: Path) -> list[tuple[int, tuple[str, ...]]]:
    text = path.read_text(encoding="utf-8")
    found: list[tuple[int, tuple[str, ...]]] = []
    for first_line, block in blocks(text):
        bindings: dict[str, tuple[str, ...]] = {}
        for match in BINDING.finditer(block):
            bindings[match.group(1)] = tuple(p for p in match.group(2).split(".") if p)
        for offset, line in enumerate(block.splitlines()):
            number = first_line + offset
            for match in VALUES_REF.finditer(line):
                found.append((number, tuple(p for p in match.group(1).split(".") if p)))
            for match in INDEX_REF.finditer(line):
                found.append((number, tuple(re.findall(r"\"([^\"]+)\"", match.group(1)))))
            for name, base in bindings.items():
                for match in re.finditer(rf"{re.escape(name)}{PATH}(?![\w])", line):
                    rest = tuple(p for p in match.group(1).split(".") if p)
                    if rest and not re.match(r"\s*:=", line[match.end() :]):
                        found.append((number, (*base, *rest)))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("chart", type=Path)
    parser.add_argument("--fail-unused", action="store_true", help="also fail on values no template reads")
    args = parser.parse_args(argv)

    values = yaml.safe_load((args.chart / "values.yaml").read_text(encoding="utf-8")) or {}
    problems: list[str] = []
    used: set[tuple[str, ...]] = set()
    count = 0
    for template in sorted((args.chart / "templates").rglob("*")):
        if not template.is_file() or template.suffix not in (".yaml", ".yml", ".tpl", ".txt"):
            continue
        for number, path in references(template):
            count += 1
            used.add(path)
            if path and not exists(values, path):
                rel = template.relative_to(args.chart)
                problems.append(f"{rel}:{number}: .Values.{'.'.join(path)} is not in values.yaml")

    schema_file = args.chart / "values.schema.json"
    if schema_file.exists():
        schema = json.loads(schema_file.read_text(encoding="utf-8"))
        for path in schema_paths(schema):
            if not exists(values, path):
                problems.append(f"values.schema.json: {'.'.join(path)} is declared but has no default in values.yaml")

    unused = [
        path for path in leaf_paths(values) if not any(path[: len(u)] == u or u[: len(path)] == path for u in used if u)
    ]
    for path in unused:
        message = f"values.yaml: {'.'.join(path)} is not read by any template"
        if args.fail_unused:
            problems.append(message)
        else:
            print(f"warning: {message}", file=sys.stderr)

    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"check_chart_values: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"check_chart_values: {count} .Values references in templates, all declared in values.yaml")
    return 0


if __name__ == "__main__":
    sys.exit(main())
