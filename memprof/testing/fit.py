"""Pure fitting: least-squares lines, goodness of fit, growth per step, and which variable explains memory.

No I/O and no memprof state here: the harness measures, this module judges the numbers.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Fit:
    """A least-squares line ``y = slope * x + intercept`` and its coefficient of determination."""

    slope: float
    intercept: float
    r2: float
    n: int
    x_range: float

    @property
    def effect(self) -> float:
        """The change the line predicts across the measured range of x (absolute)."""
        return abs(self.slope) * self.x_range


def linear_fit(xs: Sequence[float], ys: Sequence[float]) -> Fit:
    """Fit ``ys`` against ``xs`` by least squares.

    R² is 1 - SS_res / SS_tot; it is 0.0 when ``ys`` do not vary at all (nothing to explain) or when
    ``xs`` do not vary (the slope is then 0). Raises ValueError for fewer than two points or lengths
    that differ.
    """
    n = len(xs)
    if n != len(ys):
        raise ValueError(f"linear_fit needs as many x as y values (got {n} and {len(ys)})")
    if n < 2:
        raise ValueError("linear_fit needs at least two points")
    mean_x = math.fsum(xs) / n
    mean_y = math.fsum(ys) / n
    sxx = math.fsum((x - mean_x) ** 2 for x in xs)
    sxy = math.fsum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    ss_tot = math.fsum((y - mean_y) ** 2 for y in ys)
    x_range = max(xs) - min(xs)
    if sxx == 0.0:
        return Fit(0.0, mean_y, 0.0, n, x_range)
    slope = sxy / sxx
    intercept = mean_y - slope * mean_x
    if ss_tot == 0.0:
        return Fit(slope, intercept, 0.0, n, x_range)
    ss_res = math.fsum((y - (slope * x + intercept)) ** 2 for x, y in zip(xs, ys, strict=True))
    r2 = max(0.0, 1.0 - ss_res / ss_tot)
    return Fit(slope, intercept, r2, n, x_range)


def growth_per_step(values: Sequence[float]) -> Fit:
    """Fit a series measured after each step (request, iteration) against the step index."""
    return linear_fit([float(i) for i in range(len(values))], values)


def robust_growth(values: Sequence[float]) -> float:
    """Growth per step of a series, robust to a stray reading: the Theil-Sen estimator (the median of
    the slopes between every pair of points). A background thread that allocates at the moment of one
    measurement moves a least-squares slope; it barely moves this one. 0.0 for fewer than two points."""
    slopes = sorted(
        (values[j] - values[i]) / (j - i) for i in range(len(values)) for j in range(i + 1, len(values))
    )
    if not slopes:
        return 0.0
    mid = len(slopes) // 2
    return slopes[mid] if len(slopes) % 2 else (slopes[mid - 1] + slopes[mid]) / 2.0


MIN_TREND_R2 = 0.3
"""How much of a series' variance a trend must explain before it counts as growth (see keeps_growing)."""


def keeps_growing(values: Sequence[float], tolerance: float) -> bool:
    """Whether a series measured after each iteration keeps growing by more than ``tolerance`` a step.

    Growing means: the (robust) growth per step is above ``tolerance``, the series rose in most steps (a
    single jump, like a cache filled once, is not a leak), as in SQLAlchemy's "does memory level off?"
    tests, and the trend explains at least ``MIN_TREND_R2`` of the variance: readings scattered around a
    flat line also have a slope, but not a trend (a leak with one stray reading keeps R² well above it).
    """
    if len(values) < 3:
        return False
    rises = sum(1 for a, b in itertools.pairwise(values) if b > a)
    if robust_growth(values) <= tolerance or rises * 2 <= len(values) - 1:
        return False
    return growth_per_step([float(v) for v in values]).r2 >= MIN_TREND_R2


@dataclass(frozen=True, slots=True)
class Explanation:
    """The variable memory follows, with its fit."""

    variable: str
    fit: Fit


def explain(
    fits: dict[str, Fit], noise: dict[str, float], *, min_r2: float = 0.9, min_effect: float = 0.0
) -> Explanation | None:
    """Name the variable that explains memory: a good fit (R² >= ``min_r2``) whose effect across its
    range is above both three times its noise and ``min_effect``. Of several, the largest effect wins.
    None when no variable qualifies.
    """
    best: Explanation | None = None
    for name, fit in fits.items():
        if fit.n < 3 or fit.r2 < min_r2:
            continue
        if fit.effect <= max(3.0 * noise.get(name, 0.0), min_effect):
            continue
        if best is None or fit.effect > best.fit.effect:
            best = Explanation(name, fit)
    return best
