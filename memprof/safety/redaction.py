"""Redaction: what memprof may keep of a value that a setting allowed it to record.

By default memprof records no SQL parameter values, session values, headers, cookies, query strings or
local variables at all. When a setting allows one (``MEMPROF_RECORD_SQL_PARAMS``), every value goes
through :func:`redact` first:

- by key: a value whose name looks secret (password, token, api_key, cookie, session, ...) is masked;
- by value: bearer/basic credentials, JWTs, URL credentials and long hex or base64 strings are masked
  inside any string, whatever its name;
- a value memprof cannot mask safely (an unknown object, a failure while masking) is dropped.

Exception messages that memprof logs about itself go through :func:`redact_text` too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

MASK = "[REDACTED]"
DROPPED = "[DROPPED]"
MAX_TEXT = 200  # characters of a string kept after masking
MAX_ITEMS = 50  # items of a list or mapping kept
MAX_DEPTH = 4

SECRET_KEY = re.compile(
    r"pass(word|wd|phrase)?|pwd|secret|token|api[-_]?key|apikey|access[-_]?key|auth|credential|"
    r"session|cookie|csrf|xsrf|private|signature|sig$|salt|otp|pin$|ssn|card|cvv|iban|account[-_]?num",
    re.IGNORECASE,
)

SECRET_VALUES: tuple[re.Pattern[str], ...] = (
    # Authorization-style credentials: "Bearer abc...", "Basic dXNlcjpwYXNz", "Token ..."
    re.compile(r"(?i)\b(bearer|basic|token|digest)\s+[A-Za-z0-9._~+/=-]{8,}"),
    # JSON Web Tokens: three base64url parts, the first one a JSON object ("eyJ").
    re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"),
    # Credentials inside URLs: scheme://user:password@host
    re.compile(r"(?<=://)[^/\s:@]*:[^/\s@]+(?=@)"),
    # key=value pairs whose key looks secret, inside free text (query strings, DSNs, messages)
    re.compile(
        r"(?i)\b[\w.-]*(pass(word|wd)?|secret|token|api[-_]?key|session|auth)[\w.-]*\s*[=:]\s*[^\s&;,]+"
    ),
    # Long hex strings (API keys, hashes, session ids) and long base64/base64url strings.
    re.compile(r"\b[0-9a-fA-F]{24,}\b"),
    re.compile(r"(?<![A-Za-z0-9+/_-])(?=[A-Za-z0-9+/_-]*\d)[A-Za-z0-9+/_-]{32,}={0,2}"),
)

_SCALARS = (bool, int, float, type(None))


def is_secret_key(key: object) -> bool:
    """Whether a name (a dict key, a bind parameter, a header) looks like it holds a secret."""
    return isinstance(key, str) and SECRET_KEY.search(key) is not None


def redact_text(text: str, limit: int = MAX_TEXT) -> str:
    """``text`` with every secret-looking part masked, cut to ``limit`` characters."""
    try:
        for pattern in SECRET_VALUES:
            text = pattern.sub(MASK, text)
        return text if len(text) <= limit else text[:limit] + "..."
    except Exception:
        return DROPPED


def redact(value: Any, key: object = None, _depth: int = 0) -> Any:
    """A JSON-ready copy of ``value`` safe to record: masked by key and by value, bounded.

    Never raises: anything that cannot be masked is replaced by ``[DROPPED]``.
    """
    try:
        if key is not None and is_secret_key(key):
            return MASK
        if isinstance(value, _SCALARS):
            return value
        if isinstance(value, str):
            return redact_text(value)
        if isinstance(value, bytes | bytearray | memoryview):
            return f"<{len(value)} bytes>"
        if _depth >= MAX_DEPTH:
            return DROPPED
        if isinstance(value, Mapping):
            return {
                str(k)[:MAX_TEXT]: redact(v, k, _depth + 1)
                for i, (k, v) in enumerate(value.items())
                if i < MAX_ITEMS
            }
        if isinstance(value, Sequence | set | frozenset):
            return [redact(v, None, _depth + 1) for i, v in enumerate(value) if i < MAX_ITEMS]
        # Dates, decimals, UUIDs and the like: their text, masked; anything else is dropped.
        if type(value).__module__ in ("datetime", "decimal", "uuid", "enum") or hasattr(value, "isoformat"):
            return redact_text(str(value))
        return DROPPED
    except Exception:
        return DROPPED


def redact_params(params: Any) -> Any:
    """SQL bound parameters (a mapping, a sequence, or a list of either for executemany), redacted."""
    return redact(params)
