"""JSON rendering: the stable, documented ``--json`` output of every analyzer view (docs/analyzer.md)."""

from __future__ import annotations

import json
from typing import Any

import orjson

_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


def dumps(data: Any, *, indent: bool = False) -> str:
    """JSON text with sorted keys; non-JSON values become strings. Integers past 64 bits (only a corrupt
    record has them) fall back to the standard library, which has no such limit."""
    try:
        return orjson.dumps(
            data, option=_OPTIONS | (orjson.OPT_INDENT_2 if indent else 0), default=str
        ).decode()
    except TypeError:
        return json.dumps(data, sort_keys=True, indent=2 if indent else None, default=str,
                          separators=None if indent else (",", ":"))  # fmt: skip


def render(data: Any) -> str:
    """Indented JSON with sorted keys and a final newline."""
    return dumps(data, indent=True) + "\n"


def render_line(data: Any) -> str:
    """One compact JSON line (for streaming views such as ``memprof tail --json``)."""
    return dumps(data) + "\n"
