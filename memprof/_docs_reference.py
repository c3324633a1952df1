"""Generated parts of the docs: the settings and commands references of docs/guide.md and the
analyzer's thresholds in docs/analyzer.md.

``python -m memprof._docs_reference`` rewrites the blocks between ``<!-- NAME:start -->`` and
``<!-- NAME:end -->``; tests/test_docs.py fails when the docs and the code disagree.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import typer

from memprof.settings import ENV_PREFIX, MemprofSettings

DOCS_DIR = Path(__file__).resolve().parent.parent / "docs"
GUIDE = DOCS_DIR / "guide.md"


def settings_table() -> str:
    """Every setting: variable, default, meaning."""
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for name, field in MemprofSettings.model_fields.items():
        default = "unset" if field.default is None else str(field.default)
        description = (field.description or "").replace("|", "/")
        rows.append(f"| {ENV_PREFIX}{name.upper()} | {default} | {description} |")
    return "\n".join(rows)


def commands_table() -> str:
    """Every CLI command with its options."""
    from memprof.cli import app

    group: Any = typer.main.get_command(app)
    ctx = typer.Context(group)
    rows = ["| command | what it does | options |", "| --- | --- | --- |"]
    for name in sorted(group.list_commands(ctx)):
        command = group.get_command(ctx, name)
        if command is None:
            continue
        summary = (command.help or "").strip().splitlines()[0].replace("|", "/")
        options = ", ".join(
            f"`{param.opts[0]}`" if param.param_type_name == "option" else f"`{param.name.upper()}`"
            for param in command.params
            if param.name and param.name != "help"
        )
        rows.append(f"| `memprof {name}` | {summary} | {options} |")
    return "\n".join(rows)


def thresholds_table() -> str:
    """Every analyzer threshold: name, default, meaning."""
    import dataclasses

    from memprof._units import format_size
    from memprof.analysis.thresholds import BYTE_THRESHOLDS, Thresholds

    rows = ["| threshold | default | meaning |", "| --- | --- | --- |"]
    for f in dataclasses.fields(Thresholds):
        default = format_size(f.default) if f.name in BYTE_THRESHOLDS else str(f.default)  # type: ignore[arg-type]
        rows.append(f"| `{f.name}` | {default} | {f.metadata['doc']} |")
    return "\n".join(rows)


def schema_table() -> str:
    """The analyzer's tables: every column with its type and what it holds."""
    from memprof.analysis.tables import COLUMN_DOCS, SCHEMA

    rows = ["| table | column | type | holds |", "| --- | --- | --- | --- |"]
    for table, columns in SCHEMA.items():
        for column, typ in columns.items():
            doc = (
                COLUMN_DOCS.get(f"{table}.{column}") or COLUMN_DOCS.get(f"*.{column}", "")
                if table != "files"
                else COLUMN_DOCS.get(f"files.{column}", "")
            )
            rows.append(f"| `{table}` | `{column}` | `{typ}` | {doc} |")
    return "\n".join(rows)


BLOCKS = {"settings": settings_table, "commands": commands_table, "thresholds": thresholds_table,
          "schema": schema_table}  # fmt: skip
# Which file holds which generated blocks.
FILES = {GUIDE: ("settings", "commands"), DOCS_DIR / "analyzer.md": ("thresholds", "schema")}


def render(text: str) -> str:
    """``text`` with every generated block brought up to date."""
    for name, build in BLOCKS.items():
        pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.S)
        text = pattern.sub(lambda m, b=build: f"{m.group(1)}{b()}\n{m.group(2)}", text)  # type: ignore[misc]
    return text


if __name__ == "__main__":  # pragma: no cover
    for path in [Path(a) for a in sys.argv[1:]] or list(FILES):
        path.write_text(render(path.read_text()))
        print(path)
