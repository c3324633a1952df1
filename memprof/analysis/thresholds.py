"""Where a pattern becomes a finding: :class:`Thresholds`, and parsing ``NAME=VALUE`` overrides (the
analyzer commands' ``--threshold``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from memprof._units import parse_size

KIB = 1024
MIB = 1024 * 1024


def _t(default: int | float, doc: str) -> Any:
    return field(default=default, metadata={"doc": doc})


@dataclass(frozen=True)
class Thresholds:
    """Where a pattern becomes a finding. The defaults keep a healthy app free of warnings."""

    n_plus_one: int = _t(10, "executions of one SELECT in one request that make it an N+1")
    cartesian_rows: int = _t(
        1000, "rows one statement fetches in one request before a cartesian join is suspected"
    )
    cartesian_ratio: float = _t(10.0, "... when the rows are at least this many times the instances built")
    large_instances: int = _t(5000, "ORM instances one statement builds in one request (large result set)")
    large_rss: int = _t(64 * MIB, "RSS growth over one statement (large result set)")
    criteria_per_request: int = _t(50, "loader-criteria applications per request (criteria explosion)")
    session_p95: int = _t(64 * KIB, "p95 of the serialized session size (session bloat)")
    session_max: int = _t(256 * KIB, "largest serialized session (session bloat)")
    session_growth: int = _t(32 * KIB, "growth of one session across its requests (session bloat)")
    route_family_min_growth: int = _t(4 * MIB, "p95 growth of a route family above the rest's")
    route_family_min_objects: int = _t(
        1000, "ORM instances per request (p50) of a route family, 10x the rest"
    )
    leak_min_growth: int = _t(
        2 * MIB,
        "rise of one worker's resting heap (else RSS) over the last three quarters of its requests (leak)",
    )
    leak_min_samples: int = _t(40, "samples of one worker needed to judge a leak")
    cache_min_growth: int = _t(100, "entries a cache must have grown by (unbounded cache)")
    variance_min_std: int = _t(2 * MIB, "standard deviation of one route's growth (state-dependent variance)")
    variance_min_samples: int = _t(20, "samples of one route needed to judge its variance")
    variance_min_cv: float = _t(0.3, "... and the deviation at least this fraction of the mean")
    variance_min_r: float = _t(0.6, "correlation the explaining variable needs with the growth")

    def to_dict(self) -> dict[str, int | float]:
        """Every threshold by name (recorded in a summary, so that compare can tell when two differ)."""
        return dataclasses.asdict(self)


BYTE_THRESHOLDS = frozenset(
    {
        "large_rss",
        "session_p95",
        "session_max",
        "session_growth",
        "route_family_min_growth",
        "leak_min_growth",
        "variance_min_std",
    }
)
"""The thresholds that are sizes in bytes (a value may carry a unit: ``session_max=1MB``)."""


def parse_thresholds(overrides: Iterable[str], base: Thresholds | None = None) -> Thresholds:
    """``["n_plus_one=5", "session_max=1MB"]`` -> :class:`Thresholds` with those fields changed.

    Raises ValueError naming the bad item and what is accepted.
    """
    fields = {f.name: f for f in dataclasses.fields(Thresholds)}
    changes: dict[str, Any] = {}
    for item in overrides:
        name, sep, raw = item.partition("=")
        name, raw = name.strip(), raw.strip()
        if not sep or not raw:
            raise ValueError(f"{item!r} is not NAME=VALUE (for example n_plus_one=5)")
        if name not in fields:
            raise ValueError(f"{name!r} is not a threshold: expected one of {', '.join(sorted(fields))}")
        changes[name] = _value(name, raw, fields[name].type)
    return dataclasses.replace(base or Thresholds(), **changes)


def _value(name: str, raw: str, kind: object) -> int | float:
    is_float = kind in ("float", float)
    expected = "a size such as 2MB" if name in BYTE_THRESHOLDS else "a number" if is_float else "an integer"
    try:
        value: int | float = (
            parse_size(raw) if name in BYTE_THRESHOLDS else float(raw) if is_float else int(raw)
        )
    except ValueError:
        raise ValueError(f"{name}={raw!r}: expected {expected}") from None
    if value < 0:
        raise ValueError(f"{name}={raw!r}: must not be negative")
    return value
