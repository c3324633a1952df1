"""JSON rendering: the stable, documented ``--json`` output of every analyzer view (docs/analyzer.md)."""

from __future__ import annotations

from typing import Any

import orjson


def render(data: Any) -> str:
    """Indented JSON with sorted keys and a final newline; non-JSON values become strings."""
    return orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS,
                        default=str).decode() + "\n"  # fmt: skip


def render_line(data: Any) -> str:
    """One compact JSON line (for streaming views such as ``memprof tail --json``)."""
    return (
        orjson.dumps(data, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str).decode() + "\n"
    )
