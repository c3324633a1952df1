"""The result of a reproduction: per-variant measurements, fits per numeric variable, the verdict.

Plain data and pure functions (no I/O): :mod:`memprof.testing.harness` fills it, renderers read it.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from memprof._units import format_size
from memprof.testing.fit import Explanation, Fit, robust_growth

GROWTH_NOISE = 2048
"""Retained growth per request below which repeated requests are said to level off (bytes)."""


@dataclass(frozen=True)
class Measurement:
    """One measured request. Bytes are Python allocations traced by tracemalloc during the request."""

    status: int
    peak: int
    retained: int
    rss_delta: int
    queries: int | None = None
    instances: int | None = None
    session_size: int | None = None


@dataclass
class VariantResult:
    """One variant: the values of every variable, and each run's measured requests (runs x repeats)."""

    label: str
    variable: str | None
    value: Any
    values: dict[str, Any]
    runs: list[list[Measurement]] = field(default_factory=list)

    @property
    def run_peaks(self) -> list[int]:
        """Per run, the highest peak of its requests."""
        return [max(m.peak for m in run) for run in self.runs if run]

    @property
    def peak(self) -> int:
        """Median over runs of the highest request peak (traced bytes above the start of the request)."""
        return int(statistics.median(self.run_peaks))

    @property
    def retained(self) -> int:
        """Median over runs of what all its requests left allocated (after gc)."""
        return int(statistics.median(run[-1].retained for run in self.runs if run))

    @property
    def noise(self) -> int:
        """Spread of the peak between runs (0 with a single run)."""
        peaks = self.run_peaks
        return max(peaks) - min(peaks) if peaks else 0

    @property
    def growth_per_request(self) -> float | None:
        """Median over runs of the retained memory's growth per request (Theil-Sen slope; needs >= 2
        requests a run).

        With 3 or more requests the first is left out of the fit: what stays after the first request
        of a client (about 1 KB of test-client and writer state) is set-up, not accumulation.
        """
        slopes = [
            robust_growth([float(m.retained) for m in (run[1:] if len(run) >= 3 else run)])
            for run in self.runs
            if len(run) >= 2
        ]
        return statistics.median(slopes) if slopes else None

    def _last(self, attr: str) -> int | None:
        values = [getattr(m, attr) for run in self.runs for m in run if getattr(m, attr) is not None]
        return max(values) if values else None

    @property
    def queries(self) -> int | None:
        """Most SQL statements one request executed (None without the SQLAlchemy integration)."""
        return self._last("queries")

    @property
    def instances(self) -> int | None:
        """Most ORM instances one request loaded (None without the SQLAlchemy integration)."""
        return self._last("instances")

    @property
    def session_size(self) -> int | None:
        """Largest session seen (None without the sessions integration)."""
        return self._last("session_size")

    @property
    def statuses(self) -> list[int]:
        """Distinct response statuses."""
        return sorted({m.status for run in self.runs for m in run})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary of the variant."""
        return {
            "label": self.label,
            "variable": self.variable,
            "value": self.value,
            "values": self.values,
            "peak": self.peak,
            "retained": self.retained,
            "noise": self.noise,
            "growth_per_request": self.growth_per_request,
            "queries": self.queries,
            "instances": self.instances,
            "session_size": self.session_size,
            "statuses": self.statuses,
            "runs": [[m.__dict__ for m in run] for run in self.runs],
        }


@dataclass(frozen=True)
class VariableEffect:
    """How memory (the variant peak) moved with one variable."""

    variable: str
    numeric: bool
    unit: str | None
    noise: float
    spread: float
    fit: Fit | None = None

    def describe(self) -> str:
        """``permissions: +1.2 MB per permission, R² 0.98`` or the spread of a non-numeric variable."""
        if self.fit is not None:
            per = self.unit or f"unit of {self.variable}"
            few = ", too few values to name it (3 or more are needed)" if self.fit.n < 3 else ""
            return (
                f"{self.variable}: {format_size(self.fit.slope, signed=True)} per {per}, "
                f"R² {self.fit.r2:.2f} ({format_size(self.fit.effect)} across the range, noise "
                f"{format_size(self.noise)}{few})"
            )

        return (
            f"{self.variable}: peaks differ by {format_size(self.spread)} (noise {format_size(self.noise)})"
        )


@dataclass
class ReproductionResult:
    """Every variant's measurements, the effect of each variable, and the variable memory follows."""

    request: str
    repeats: int
    runs: int
    isolated: bool
    variants: list[VariantResult]
    effects: dict[str, VariableEffect]
    explained_by: Explanation | None
    samples_dir: str | None = None

    def variant(self, label: str) -> VariantResult:
        """The variant called ``label`` (``baseline`` or ``name=value``)."""
        for v in self.variants:
            if v.label == label:
                return v
        raise KeyError(f"no variant {label!r}; variants: {[v.label for v in self.variants]}")

    @property
    def baseline(self) -> VariantResult:
        """The variant with every variable at its default."""
        return self.variants[0]

    def summary(self) -> list[str]:
        """Sentences for people: the verdict, each variable's effect, growth per request."""
        lines = []
        if self.explained_by is not None:
            effect = self.effects[self.explained_by.variable]
            lines.append(f"memory follows {effect.describe()}")
        elif self.effects:
            lines.append("no variable explains memory: every effect is within noise or fits poorly")
        lines.extend(
            e.describe()
            for name, e in self.effects.items()
            if self.explained_by is None or name != self.explained_by.variable
        )
        growth = self.baseline.growth_per_request
        if growth is not None:
            verdict = (
                "accumulates" if growth > GROWTH_NOISE else f"levels off (under {format_size(GROWTH_NOISE)})"
            )
            lines.append(
                f"repeated requests: {format_size(growth, signed=True)} retained per request, memory {verdict} "
                f"(baseline, {self.repeats} requests a run)"
            )
        return lines

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready result (the CLI's --json)."""
        explained = self.explained_by
        return {
            "request": self.request,
            "repeats": self.repeats,
            "runs": self.runs,
            "isolated": self.isolated,
            "measure": "tracemalloc: Python allocations, bytes above the start of each request",
            "explained_by": explained.variable if explained else None,
            "effects": {
                name: {
                    "numeric": e.numeric,
                    "unit": e.unit,
                    "noise": e.noise,
                    "spread": e.spread,
                    "slope": e.fit.slope if e.fit else None,
                    "intercept": e.fit.intercept if e.fit else None,
                    "r2": e.fit.r2 if e.fit else None,
                    "text": e.describe(),
                }
                for name, e in self.effects.items()
            },
            "summary": self.summary(),
            "variants": [v.to_dict() for v in self.variants],
            "samples_dir": self.samples_dir,
        }
