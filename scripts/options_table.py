"""Print the README's option reference table from rmmwatch.config.RUN_OPTIONS (paste it into README.md)."""

from __future__ import annotations

from rmmwatch.config import RUN_OPTIONS


def main() -> None:
    print("| option | environment | default | meaning |")
    print("|---|---|---|---|")
    group = None
    for option in RUN_OPTIONS:
        if option.group != group:
            group = option.group
            print(f"| **{group}** | | | |")
        if option.switch:
            default = "off"
        elif option.default is None:
            default = "-"
        else:
            default = str(option.default)
        text = option.help.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
        print(f"| `{option.flag}` | `{option.env}` | `{default}` | {text} |")


if __name__ == "__main__":
    main()
