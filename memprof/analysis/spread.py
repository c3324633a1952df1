"""What ``compare`` needs to tell a change from noise: a bounded, evenly spaced sample of each route's
per-request memory (kept in the summary, so a saved summary can be compared too), and a rank test
(Mann-Whitney U, normal approximation with ties) with its effect size (Cliff's delta)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

MAX_VALUES = 200
"""Per-request values kept per route (evenly spaced over the route's requests in time order)."""


def route_values(e: Any, n: int = MAX_VALUES) -> dict[str, list[int]]:
    """Per route: up to ``n`` per-request memory figures (``growth``), evenly spaced in time order."""
    out: dict[str, list[int]] = {}
    for route, values in e.rows(
        f"""SELECT route, list(growth ORDER BY k) FROM (
                SELECT route, growth, row_number() OVER (PARTITION BY route ORDER BY time, file_id, line) - 1 AS k,
                       count(*) OVER (PARTITION BY route) AS c FROM s)
            WHERE c <= {n} OR k % ceil(c / {n})::BIGINT = 0 GROUP BY route"""
    ):
        out[str(route)] = [int(v) for v in values][:n]
    return out


def mann_whitney(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Two-sided p-value of the Mann-Whitney U test of ``a`` against ``b`` and Cliff's delta (from -1: ``b``
    always lower, to 1: ``b`` always higher)."""
    n1, n2 = len(a), len(b)
    if not n1 or not n2:
        return 1.0, 0.0
    pooled = sorted([(x, 0) for x in a] + [(y, 1) for y in b])
    ranks = [0.0] * len(pooled)
    ties = 0.0
    i = 0
    while i < len(pooled):
        j = i
        while j + 1 < len(pooled) and pooled[j + 1][0] == pooled[i][0]:
            j += 1
        for k in range(i, j + 1):
            ranks[k] = (i + j) / 2 + 1
        t = j - i + 1
        ties += t**3 - t
        i = j + 1
    r2 = sum(r for r, (_v, side) in zip(ranks, pooled, strict=True) if side == 1)
    u2 = r2 - n2 * (n2 + 1) / 2
    delta = (2 * u2) / (n1 * n2) - 1
    n = n1 + n2
    var = n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1))) if n > 1 else 0.0
    if var <= 0:
        return 1.0, delta
    z = (u2 - n1 * n2 / 2) / math.sqrt(var)
    return math.erfc(abs(z) / math.sqrt(2)), delta


def welch_p(base: dict[str, Any], post: dict[str, Any]) -> tuple[float, float]:
    """Two-sided p-value (normal approximation) of the difference of two stat blocks' means, and the
    standardized effect (difference of means over the pooled deviation)."""
    se = math.sqrt(base["variance"] / max(base["count"], 1) + post["variance"] / max(post["count"], 1))
    delta = post["mean"] - base["mean"]
    pooled = math.sqrt((base["variance"] + post["variance"]) / 2)
    effect = (
        max(-99.0, min(99.0, delta / pooled))
        if pooled
        else (0.0 if delta == 0 else math.copysign(99.0, delta))
    )
    if se == 0:
        return (1.0 if delta == 0 else 0.0), effect
    return math.erfc(abs(delta / se) / math.sqrt(2)), effect
