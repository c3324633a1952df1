"""Which records an analysis looks at: a time window, a route, a worker, a search pattern."""

from __future__ import annotations

import fnmatch
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time(text: str, now: float | None = None) -> float:
    """Unix time of ``text``: an ISO 8601 time (UTC unless it says), a Unix time, or an age like ``2h``.

    Raises ValueError naming the accepted forms.
    """
    value = text.strip()
    match = _RELATIVE.match(value)
    if match:
        return (time.time() if now is None else now) - float(match.group(1)) * _UNITS[match.group(2)]
    try:
        return float(value)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: use ISO 8601 (2026-11-29T14:00), a Unix time, or an age like 30m, 2h, 1d"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


@dataclass(frozen=True)
class Filters:
    """Record filters; None means no filter. ``route`` may be a glob (``/admin/*``)."""

    since: float | None = None
    until: float | None = None
    route: str | None = None
    worker: str | None = None
    pattern: str | None = None

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.since, self.until, self.route, self.worker, self.pattern))

    def time_ok(self, t: float | None) -> bool:
        if t is None:
            return self.since is None and self.until is None
        return (self.since is None or t >= self.since) and (self.until is None or t <= self.until)

    def route_ok(self, route: str | None) -> bool:
        if self.route is None:
            return True
        if route is None:
            return False
        return route == self.route or fnmatch.fnmatchcase(route, self.route)

    def worker_ok(self, worker: str | None, pid: Any = None, host: Any = None) -> bool:
        """A worker matches by ``host:pid``, by pid, or by host."""
        if self.worker is None:
            return True
        return self.worker in (worker, str(pid), host)

    def to_dict(self) -> dict[str, Any]:
        return {
            "since": self.since,
            "until": self.until,
            "route": self.route,
            "worker": self.worker,
            "pattern": self.pattern,
        }


def sample_haystack(rec: dict[str, Any]) -> str:
    """The searchable text of a sample: route, path, SQL and its frames, models, scopes, session keys."""
    req = rec.get("request") or {}
    parts = [str(req.get("route", "")), str(req.get("path", ""))]
    queries = rec.get("queries") or {}
    for st in queries.get("statements") or ():
        parts.append(str(st.get("sql", "")))
        parts.append(str(st.get("frame") or ""))
    models = rec.get("models") or {}
    parts.extend((models.get("classes") or {}).keys())
    scopes = rec.get("scopes") or {}
    for cls, items in (scopes.get("classes") or {}).items():
        parts.append(cls)
        parts.extend(str(i.get("criteria", "")) for i in items or ())
    session = rec.get("session") or {}
    parts.extend(str(k.get("key", "")) for k in session.get("largest") or ())
    parts.extend(str(cp.get("name", "")) for cp in rec.get("checkpoints") or ())
    return "\n".join(parts).lower()


def dump_haystack(rec: dict[str, Any]) -> str:
    """The searchable text of a dump: its name, routes in flight, and every stack frame."""
    parts = [str(rec.get("name") or ""), str(rec.get("trigger") or "")]
    req = rec.get("request") or {}
    parts.append(str(req.get("route", "")))
    parts.extend(str(r.get("route", "")) for r in rec.get("inflight") or () if isinstance(r, dict))
    for key in ("threads", "tasks"):
        for stack in _stacks(rec.get(key)):
            parts.extend(stack)
    return "\n".join(parts).lower()


def _stacks(value: Any) -> list[list[str]]:
    """Stacks of a dump's ``threads``/``tasks``: a list of frames, a list of lists, or objects with frames."""
    out: list[list[str]] = []
    if isinstance(value, dict):
        value = list(value.values())
    for item in value or ():
        if isinstance(item, str):
            out.append([item])
        elif isinstance(item, list):
            out.append([str(f) for f in item])
        elif isinstance(item, dict):
            frames = item.get("stack") or item.get("frames") or []
            out.append([str(f) for f in frames] if isinstance(frames, list) else [])
    return out


stacks_of = _stacks
