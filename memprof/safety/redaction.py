"""Redaction: what memprof may keep of a value that a setting allowed it to record.

By default memprof records no SQL parameter values, session values, headers, cookies, query strings or
local variables at all. When a setting allows one (``MEMPROF_RECORD_SQL_PARAMS``), every value goes
through :func:`redact` first:

- by key: a value whose name looks secret (password, token, api_key, cookie, session, ...) is masked;
- by value: bearer/basic credentials, JWTs, URL credentials (``user:password@``), emails, UUIDs, long
  hex strings and random-looking base64 strings are masked inside any string, whatever its name;
- a value memprof cannot mask safely (an unknown object, a failure while masking) is dropped.

The request's path, which memprof does record, goes through :func:`redact_path` (segment by segment, in
the background threads that build records, dumps and flight files: never on the request path). Exception
messages that memprof logs about itself go through :func:`redact_text` too. File paths and identifiers
stay readable: a base64 string counts as secret only when it looks random (see :func:`_random_looking`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

MASK = "[REDACTED]"
DROPPED = "[DROPPED]"
MAX_TEXT = 200  # characters of a string kept after masking
MAX_PATH = 2048  # characters of a request path kept
MAX_ITEMS = 50  # items of a list or mapping kept
MAX_DEPTH = 4

SECRET_KEY = re.compile(
    r"pass(word|wd|phrase)?|pwd|secret|token|api[-_]?key|apikey|access[-_]?key|auth|credential|"
    r"session|cookie|csrf|xsrf|private|signature|sig$|salt|otp|pin$|ssn|card|cvv|iban|account[-_]?num",
    re.IGNORECASE,
)

# (needles, pattern): a pattern runs only on text whose lower case holds one of its needles (None: always),
# so a path segment or a message with nothing of the kind costs a few substring tests, not a regex scan each.
SECRET_VALUES: tuple[tuple[tuple[str, ...] | None, re.Pattern[str]], ...] = (
    # Authorization-style credentials: "Bearer abc...", "Basic dXNlcjpwYXNz", "Token ..."
    (
        ("bearer", "basic", "token", "digest"),
        re.compile(r"(?i)\b(bearer|basic|token|digest)\s+[A-Za-z0-9._~+/=-]{8,}"),
    ),
    # JSON Web Tokens: three base64url parts, the first one a JSON object ("eyJ").
    (("eyj",), re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")),
    # Credentials inside URLs: scheme://user:password@host, or user:password@host in a path or text
    (("@",), re.compile(r"(?<![^/\s])[^/\s:@]*:[^/\s@]+(?=@)")),
    # Emails (personal data)
    (
        ("@",),
        re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"),
    ),
    # key=value pairs whose key looks secret, inside free text (query strings, DSNs, messages)
    (
        ("=", ":"),
        re.compile(
            r"(?i)(?<![\w.-])[\w.-]*?(pass(word|wd)?|secret|token|api[-_]?key|session|auth)[\w.-]*\s*[=:]\s*"
            r"[^\s&;,]+"
        ),
    ),
    # UUIDs and long hex strings (API keys, hashes, session and reset ids).
    (("-",), re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b")),
    (None, re.compile(r"\b[0-9a-fA-F]{24,}\b")),
)
# Base64/base64url candidates: masked only when they look random (see _looks_random).
_BASE64 = re.compile(r"[A-Za-z0-9+/_-]{20,}={0,2}")  # greedy from a run's start: the whole run
_RANDOM_MIN = 20
_DISTINCT = 0.75  # share of the distinct characters a random string of that length would have


def _looks_random(token: str) -> bool:
    """Whether ``token`` looks like random base64: both letter cases, and nearly as many distinct
    characters as a random string of its length (one of 22 random characters has ~19 distinct ones; a
    file name, a timestamp, a slug or a path repeats its letters and digits far more)."""
    n = len(token)
    if not (any(c.isupper() for c in token) and any(c.islower() for c in token)):
        return False
    return len(set(token)) >= _DISTINCT * 64 * (1 - (63 / 64) ** n)


def _mask_random(match: re.Match[str]) -> str:
    run = match.group()
    if "/" in run:  # a path: mask its random-looking parts only, so the rest stays readable
        parts = run.split("/")
        if any(len(p) >= _RANDOM_MIN and _looks_random(p) for p in parts):
            return "/".join(MASK if len(p) >= _RANDOM_MIN and _looks_random(p) else p for p in parts)
    return MASK if _looks_random(run) else run


_SCALARS = (bool, int, float, type(None))


def is_secret_key(key: object) -> bool:
    """Whether a name (a dict key, a bind parameter, a header) looks like it holds a secret."""
    return isinstance(key, str) and SECRET_KEY.search(key) is not None


def redact_text(text: str, limit: int = MAX_TEXT) -> str:
    """``text`` with every secret-looking part masked, cut to ``limit`` characters."""
    try:
        if len(text) > 4 * limit:  # masking costs time per character: cut first, leaving room to mask
            text = text[: 4 * limit]
        lower = text.lower()
        for needles, pattern in SECRET_VALUES:
            if needles is not None:
                for needle in needles:  # (a loop, not any(): no generator per pattern)
                    if needle in lower:
                        break
                else:
                    continue
            text = pattern.sub(MASK, text)
        text = _BASE64.sub(_mask_random, text)
        return text if len(text) <= limit else text[:limit] + "..."
    except Exception:
        return DROPPED


# A path holds nothing to mask unless a segment is long or has "@", "=" or ":" (one search, ~0.3 µs).
_SUSPECT = re.compile(r"[^/]{16,}|[@=:]")


def redact_path(path: str) -> str:
    """A request path with every secret-looking part of each segment masked; the rest, and so the shape
    of the route, kept (``/reset/eyJ...`` -> ``/reset/[REDACTED]``). Never raises."""
    try:
        if len(path) > MAX_PATH:
            path = path[:MAX_PATH] + "..."
        if _SUSPECT.search(path) is None:
            return path
        return "/".join(
            redact_text(segment, MAX_PATH) if _SUSPECT.search(segment) else segment
            for segment in path.split("/")
        )
    except Exception:
        return DROPPED


_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"))


def redact_method(method: str) -> str:
    """An HTTP method as recorded: a standard one as it is, anything else (a client may send any token)
    masked by value and cut to 32 characters."""
    return method if method in _METHODS else redact_text(method, 32)


def redact_request(summary: dict[str, Any]) -> dict[str, Any]:
    """A request's summary (a dump's, a flight file's) with its method, path and route redacted."""
    if isinstance(summary.get("method"), str):
        summary["method"] = redact_method(summary["method"])
    for key in ("path", "route"):
        if isinstance(summary.get(key), str):
            summary[key] = redact_path(summary[key])
    return summary


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
