"""SQL parameters made safe to record (only with ``MEMPROF_RECORD_SQL_PARAMS``).

Values are copied to plain data at once (strings capped, other objects by type name) so nothing of the
app's is kept; values whose names look secret, and every positional value (it has no name to judge
by), are replaced by ``<redacted>``.
"""

from __future__ import annotations

import datetime
import decimal
import re
import uuid
from collections.abc import Mapping
from typing import Any

MAX_PARAM_CHARS = 200
REDACTED = "<redacted>"
_SECRET_NAME = re.compile(
    r"pass|pwd|secret|token|key|auth|credential|cookie|session|salt|signature|otp|pin|api", re.IGNORECASE
)


def _plain(value: Any) -> Any:
    """A JSON-ready copy of one parameter value (strings capped, other objects by type name)."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return value if len(value) <= MAX_PARAM_CHARS else value[:MAX_PARAM_CHARS] + "..."
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes>"
    if isinstance(value, datetime.date | datetime.time | decimal.Decimal | uuid.UUID):
        return str(value)
    return f"<{type(value).__name__}>"


def redact_params(params: Any) -> Any:
    """Parameters made safe to record: values whose names look secret replaced by ``<redacted>``.

    Positional parameters have no names to judge by, so every value is redacted.
    """
    if isinstance(params, Mapping):
        return {
            str(name): REDACTED if _SECRET_NAME.search(str(name)) else _plain(value)
            for name, value in params.items()
        }
    if isinstance(params, list | tuple):
        return [REDACTED for _ in params]
    return REDACTED
