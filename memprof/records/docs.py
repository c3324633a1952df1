"""The record field reference (docs/records.md), generated from the record models so it cannot drift."""

from __future__ import annotations

import typing

from pydantic import BaseModel

HEADER = """# Record fields

Generated from the record models by `python -m memprof.records.models` (tests/test_schema_docs.py fails when
this page and the models disagree). The JSON Schema of each record is in [schema/](schema/). Sizes are
bytes, times are Unix seconds unless the name ends in `_ms` or `_s`. A reader accepts any minor version
of a major it knows and refuses an unknown major version with a clear message.
"""


def _nested(annotation: object) -> list[type[BaseModel]]:
    found: list[type[BaseModel]] = []
    stack = [annotation]
    while stack:
        current = stack.pop()
        if isinstance(current, type) and issubclass(current, BaseModel):
            found.append(current)
        stack.extend(typing.get_args(current))
    return found


def _rows(model: type[BaseModel], prefix: str, seen: set[type[BaseModel]]) -> list[str]:
    rows = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{field.alias or name}"
        description = (field.description or "").replace("|", "/")
        rows.append(f"| `{key}` | {description} |")
        for sub in _nested(field.annotation):
            if sub not in seen:
                rows.extend(_rows(sub, f"{key}.", seen | {sub}))
    return rows


def field_reference(models: dict[str, tuple[type[BaseModel], str]]) -> str:
    """Markdown: one table of dotted field names and descriptions per record kind."""
    parts = [HEADER]
    for tag, (model, version) in sorted(models.items()):
        doc = (model.__doc__ or "").strip().splitlines()[0]
        parts.append(f"\n## `{tag}` {version}\n\n{doc}\n\n| field | meaning |\n| --- | --- |")
        parts.extend(_rows(model, "", {model}))
    return "\n".join(parts) + "\n"
