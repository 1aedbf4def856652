"""Try rmmwatch on a rule pack as published: its Sentinel YAML rules and its AHQ Markdown blocks.

A pack in the shape of the public RMM pack (``jischell-msft/RemoteManagementMonitoringTools``:
per tool a ``RMM_AHQ_<Tool>.md`` with a KQL block per section, and Sentinel rules
``rmm_<Tool>_<kind>.yaml``) is checked in two ways:

* every ``*.yaml`` / ``*.yml`` below PACKDIR is loaded as a rule file, exactly as
  ``rmmwatch rules check PACKDIR`` loads it, and counted by kind (the file name's last
  ``_<kind>`` part: createproc, filesig, netconn, or other; files named ``*template*``, the
  pack's ``%%NAME%%`` skeletons, are counted apart);
* every fenced block of every ``RMM_AHQ_*.md`` is written, verbatim, as the ``query`` of a
  temporary rule file (no ``id``: rmmwatch derives one) and loaded the same way, counted per
  section ("Create Process", "File Signature", "Network Connection"). Blocks that are empty or
  prose (no ``|`` and no ``let``) are listed as not queries.

Every refusal is printed as ``file:line:column: reason``, pointing into the pack's own files
(the Markdown line of an AHQ block, not the temporary file), and so is every warning but the
``dataTypes`` repair, which is counted. Nothing of the pack is kept: the temporary files are
removed at the end.

    python -m load.pack_check PACKDIR
"""

from __future__ import annotations

import argparse
import re
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rmmwatch.rules import RuleFile, RuleWarning, load_rule_set

#: The sections of an AHQ file, in the order they are reported.
AHQ_SECTIONS = ("Create Process", "File Signature", "Network Connection")
YAML_KINDS = ("createproc", "filesig", "netconn")
_FENCE = re.compile(r"^\s*```")
_REPAIRED = "invalid YAML repaired in memory"


@dataclass(frozen=True, slots=True)
class Block:
    """One fenced block of an AHQ file: where it is and what it says."""

    path: Path  # the Markdown file
    section: str
    first_line: int  # 1-based line of the block's first content line
    text: str

    @property
    def is_query(self) -> bool:
        return "|" in self.text or re.search(r"\blet\b", self.text) is not None


def ahq_blocks(path: Path) -> Iterator[Block]:
    """The fenced blocks of one AHQ Markdown file, with the ``###`` section each is under."""
    section = "other"
    inside = False
    start = 0
    lines: list[str] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if inside:
            if _FENCE.match(line):
                inside = False
                yield Block(path, section, start, "\n".join(lines))
            else:
                lines.append(line)
        elif _FENCE.match(line):
            inside, start, lines = True, number + 1, []
        elif line.startswith("#"):
            section = line.lstrip("#").strip()


def yaml_kind(path: str) -> str:
    """createproc, filesig, netconn (the file name's last ``_<kind>``), template, or other."""
    stem = Path(path).stem
    if "template" in stem.lower():
        return "template"
    kind = stem.rsplit("_", 1)[-1] if "_" in stem else ""
    return kind if kind in YAML_KINDS else "other"


def ahq_kind(block: Block) -> str:
    """The block's section; blocks of a template file (``RMM_AHQ_template.md``) count apart."""
    return f"{block.section} (template)" if "template" in block.path.stem.lower() else block.section


def _rule_text(query: str) -> str:
    """A rule file whose query is ``query``, verbatim (a literal block scalar indented two spaces,
    said explicitly with ``|2`` so that a block whose first line is indented keeps its text)."""
    body = "".join(f"  {line}\n" if line.strip() else "\n" for line in query.split("\n"))
    return "query: |2\n" + body


def _moved(text: str, block: Block, line: int, column: int) -> str:
    """A position in a temporary rule file as a position in the AHQ Markdown file."""
    if line < 2:
        return f"{block.path}:{block.first_line}:1: {text}"
    return f"{block.path}:{block.first_line + line - 2}:{max(column - 2, 1)}: {text}"


def _report(label: str, counts: Counter[tuple[str, bool]], kinds: tuple[str, ...]) -> list[str]:
    lines = [label]
    present = list(kinds) + sorted({k for k, _ in counts} - set(kinds))
    for kind in present:
        compiled, refused = counts[(kind, True)], counts[(kind, False)]
        if compiled + refused:
            lines.append(f"  {kind:<20} {compiled:>3} of {compiled + refused:>3} compile")
    return lines


def check(pack: Path) -> tuple[list[str], int]:
    """The report's lines, and the number of refusals."""
    out: list[str] = []
    refusals: list[str] = []
    warnings: list[str] = []
    repaired = 0

    def note(warning: RuleWarning, shown: str) -> None:
        nonlocal repaired
        if warning.message.startswith(_REPAIRED):
            repaired += 1
        else:
            warnings.append(shown)

    yaml_counts: Counter[tuple[str, bool]] = Counter()
    rule_set = load_rule_set([str(pack)])
    for file in rule_set.files:
        yaml_counts[(yaml_kind(file.source.spec), file.rule is not None)] += 1
        if file.error is not None:
            refusals.append(str(file.error))
        for warning in file.warnings:
            note(warning, str(warning))
    out += _report(f"Sentinel rules (*.yaml, *.yml) under {pack}, as published:", yaml_counts, YAML_KINDS)

    ahq_counts: Counter[tuple[str, bool]] = Counter()
    not_queries: list[str] = []
    with tempfile.TemporaryDirectory(prefix="rmmwatch-pack-") as temporary:
        root = Path(temporary)
        blocks: dict[str, Block] = {}
        for path in sorted(pack.rglob("RMM_AHQ_*.md")):
            for index, block in enumerate(ahq_blocks(path)):
                if not block.is_query:
                    not_queries.append(f"{path}:{block.first_line - 1}: ({block.section}) {block.text.strip()[:60]!r}")
                    continue
                relative = path.relative_to(pack).with_suffix("").as_posix() + f".block{index + 1}.yaml"
                target = root / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(_rule_text(block.text), encoding="utf-8")
                blocks[relative] = block
        files: tuple[RuleFile, ...] = load_rule_set([str(root)]).files if blocks else ()
        for file in files:
            block = blocks[file.source.relative]
            ahq_counts[(ahq_kind(block), file.rule is not None)] += 1
            if file.error is not None:
                refusals.append(_moved(file.error.message, block, file.error.line, file.error.column))
            for warning in file.warnings:
                note(warning, _moved(warning.message, block, warning.line, warning.column))
    out += _report("AHQ blocks (RMM_AHQ_*.md), each given verbatim as a rule's query:", ahq_counts, AHQ_SECTIONS)
    if not_queries:
        out.append(f"  not queries (empty or prose), skipped: {len(not_queries)}")
        out += [f"    {line}" for line in not_queries]
    out.append(f"repaired in memory: {repaired} file(s) with 'dataTypes:' indented like '- connectorId:'")
    out.append(f"refused: {len(refusals)}")
    out += [f"  {line}" for line in refusals]
    out.append(f"warnings: {len(warnings)}")
    out += [f"  {line}" for line in warnings]
    return out, len(refusals)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("pack", type=Path, metavar="PACKDIR", help="the pack's directory (a checkout or an archive)")
    args = parser.parse_args()
    if not args.pack.is_dir():
        parser.error(f"{args.pack} is not a directory")
    lines, _ = check(args.pack)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
