"""SQL parameters and text made safe to record.

Parameters are recorded only with ``MEMPROF_RECORD_SQL_PARAMS``, and then through
:mod:`memprof.safety.redaction` (masked by name and by shape, copied to plain data, bounded); positional
values have no name to judge by, so every one of them is masked. String literals written into SQL text
are always masked: a value formatted into a statement is as secret as a bound one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from memprof.safety.redaction import MASK, redact

# A quoted string literal ('' escapes a quote) or a PostgreSQL dollar-quoted one ($$...$$, $tag$...$tag$).
_LITERAL = re.compile(r"'(?:[^']|'')*'|\$(\w*)\$.*?\$\1\$", re.S)


def redact_params(params: Any) -> Any:
    """One parameter set, safe to record: a mapping redacted by :func:`memprof.safety.redaction.redact`,
    positional values all masked."""
    if isinstance(params, Mapping):
        return redact(params)
    if isinstance(params, list | tuple):
        return [MASK for _ in params]
    return MASK


def mask_literals(sql: str) -> str:
    """SQL text with its string literals replaced by ``'?'``."""
    return _LITERAL.sub("'?'", sql) if "'" in sql or "$" in sql else sql
