"""Which records an analysis looks at: a time window, a route, a worker, a search pattern (applied in SQL
by :mod:`memprof.analysis.views`)."""

from __future__ import annotations

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
    """Record filters; None means no filter. ``route`` may be a glob (``/admin/*``); ``worker`` matches
    ``host:pid``, a pid or a host; ``pattern`` is searched case-insensitively in a sample's route, path, SQL
    and frames, models, criteria, session keys and checkpoint names, and in a dump's name, routes and frames."""

    since: float | None = None
    until: float | None = None
    route: str | None = None
    worker: str | None = None
    pattern: str | None = None

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.since, self.until, self.route, self.worker, self.pattern))

    def to_dict(self) -> dict[str, Any]:
        return {
            "since": self.since,
            "until": self.until,
            "route": self.route,
            "worker": self.worker,
            "pattern": self.pattern,
        }
