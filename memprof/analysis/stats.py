"""Small statistics over sequences of numbers: distribution summaries, correlation, trend.

Pure functions, no numpy: the analyzer keeps its columns in :mod:`array` arrays and sorts once.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from operator import mul
from typing import Any

STAT_KEYS = ("count", "mean", "min", "max", "p25", "p50", "p75", "p95", "p99", "variance", "std")


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of already sorted values, nearest-rank; 0 when empty."""
    n = len(sorted_values)
    if n == 0:
        return 0
    rank = max(1, math.ceil(q / 100.0 * n))
    return sorted_values[min(rank, n) - 1]


def describe(values: Sequence[float]) -> dict[str, Any]:
    """count, mean, min, max, p25/p50/p75/p95/p99, population variance and std of ``values``."""
    return describe_sorted(sorted(values))


def describe_sorted(ordered: Sequence[float]) -> dict[str, Any]:
    """:func:`describe` of values already in ascending order (integers: exact sums, C-level loops)."""
    n = len(ordered)
    if n == 0:
        return {"count": 0, "mean": 0.0, "min": 0, "max": 0, "p25": 0, "p50": 0, "p75": 0, "p95": 0,
                "p99": 0, "variance": 0.0, "std": 0.0}  # fmt: skip
    if isinstance(ordered[0], int):
        s1 = sum(ordered)
        s2 = sum(map(mul, ordered, ordered))
        mean = s1 / n
        variance = (n * s2 - s1 * s1) / (n * n)
    else:
        mean = math.fsum(ordered) / n
        variance = math.fsum((v - mean) ** 2 for v in ordered) / n
    return {
        "count": n,
        "mean": round(mean, 3),
        "min": ordered[0],
        "max": ordered[-1],
        "p25": percentile(ordered, 25),
        "p50": percentile(ordered, 50),
        "p75": percentile(ordered, 75),
        "p95": percentile(ordered, 95),
        "p99": percentile(ordered, 99),
        "variance": round(variance, 3),
        "std": round(math.sqrt(variance), 3),
    }


def describe_merged(parts: Sequence[Sequence[int]]) -> dict[str, Any]:
    """:func:`describe` of the union of several ascending integer sequences, without building it (the
    percentiles come from a selection by binary search; sums per part run in C)."""
    parts = [p for p in parts if len(p)]
    n = sum(len(p) for p in parts)
    if n == 0:
        return describe_sorted([])
    s1 = sum(sum(p) for p in parts)
    s2 = sum(sum(map(mul, p, p)) for p in parts)
    ranks = {q: max(1, math.ceil(q / 100.0 * n)) for q in (25, 50, 75, 95, 99)}
    at = {r: _select(parts, r) for r in set(ranks.values())}
    variance = (n * s2 - s1 * s1) / (n * n)
    return {
        "count": n,
        "mean": round(s1 / n, 3),
        "min": min(p[0] for p in parts),
        "max": max(p[-1] for p in parts),
        **{f"p{q}": at[r] for q, r in ranks.items()},
        "variance": round(variance, 3),
        "std": round(math.sqrt(variance), 3),
    }


def merged_percentile(parts: Sequence[Sequence[int]], q: float) -> int:
    """The ``q``-th percentile (nearest rank) of the union of ascending integer sequences; 0 when empty."""
    parts = [p for p in parts if len(p)]
    n = sum(len(p) for p in parts)
    return _select(parts, max(1, math.ceil(q / 100.0 * n))) if n else 0


def _select(parts: Sequence[Sequence[int]], rank: int) -> int:
    """The ``rank``-th smallest (1-based) value of the union of ascending integer sequences: a binary
    search over values, counting with C-level bisects (no merged copy, no Python loop over values)."""
    lo = min(p[0] for p in parts)
    hi = max(p[-1] for p in parts)
    while lo < hi:
        mid = (lo + hi) // 2
        if sum(bisect_right(p, mid) for p in parts) >= rank:
            hi = mid
        else:
            lo = mid + 1
    return lo


def pearson(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Pearson correlation of two equally long sequences; 0 when either is constant or too short."""
    n = min(len(xs), len(ys))
    if n < 3:
        return 0.0
    mx = math.fsum(xs[:n]) / n
    my = math.fsum(ys[:n]) / n
    sxy = sxx = syy = 0.0
    for i in range(n):
        dx = xs[i] - mx
        dy = ys[i] - my
        sxy += dx * dy
        sxx += dx * dx
        syy += dy * dy
    if sxx <= 0 or syy <= 0:
        return 0.0
    return sxy / math.sqrt(sxx * syy)


def slope(ys: Sequence[float]) -> float:
    """Least-squares slope of ``ys`` against their index (units of y per step); sums run in C."""
    n = len(ys)
    if n < 2:
        return 0.0
    sum_i = n * (n - 1) // 2
    sum_ii = (n - 1) * n * (2 * n - 1) // 6
    sum_y = sum(ys)
    sum_iy = sum(map(mul, range(n), ys))
    den = n * sum_ii - sum_i * sum_i
    return (n * sum_iy - sum_i * sum_y) / den if den else 0.0


def quarter_medians(ys: Sequence[float]) -> list[float]:
    """Medians of the four consecutive quarters of ``ys`` (in their order); empty when fewer than 8."""
    n = len(ys)
    if n < 8:
        return []
    out = []
    for q in range(4):
        part = sorted(ys[q * n // 4 : (q + 1) * n // 4])
        out.append(part[len(part) // 2])
    return out


def downsample(xs: Sequence[float], ys: Sequence[float], limit: int) -> list[tuple[float, float]]:
    """At most ``limit`` points of the series, keeping each bucket's highest point (peaks stay visible)."""
    n = min(len(xs), len(ys))
    if n <= limit:
        return [(xs[i], ys[i]) for i in range(n)]
    out = []
    step = n / limit
    for b in range(limit):
        lo, hi = int(b * step), max(int((b + 1) * step), int(b * step) + 1)
        best = max(range(lo, min(hi, n)), key=ys.__getitem__)
        out.append((xs[best], ys[best]))
    return out
