"""The README's option reference table, from rmmwatch.config.RUN_OPTIONS.

    python scripts/options_table.py           # print it
    python scripts/options_table.py --write   # replace it in README.md (between the options markers)

``tests/unit/test_config_and_logging.py`` fails when README.md's table differs from this output.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from rmmwatch.config import RUN_OPTIONS

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"(<!-- options:begin[^\n]*-->\n)(.*?)(<!-- options:end -->)", re.DOTALL)


def table() -> str:
    lines = ["| option | environment | default | meaning |", "|---|---|---|---|"]
    group = None
    for option in RUN_OPTIONS:
        if option.group != group:
            group = option.group
            lines.append(f"| **{group}** | | | |")
        if option.switch:
            default = "off"
        elif option.default is None:
            default = "-"
        else:
            default = str(option.default)
        text = option.help.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
        lines.append(f"| `{option.flag}` | `{option.env}` | `{default}` | {text} |")
    return "\n".join(lines) + "\n"


def readme_table(text: str) -> str:
    found = BLOCK.search(text)
    if found is None:
        raise SystemExit("README.md has no <!-- options:begin --> ... <!-- options:end --> block")
    return found.group(2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="replace the table in README.md")
    args = parser.parse_args()
    if not args.write:
        print(table(), end="")
        return
    text = README.read_text()
    readme_table(text)
    README.write_text(BLOCK.sub(lambda m: m.group(1) + table() + m.group(3), text))


if __name__ == "__main__":
    main()
