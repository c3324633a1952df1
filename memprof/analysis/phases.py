"""Phases: the memory growth between consecutive checkpoints (or inside a checkpoint span), per phase.

Streaming cost matters (a million samples, five checkpoints each), so a sample only appends its RSS
readings to the columns of its *plan* (its sequence of checkpoint names, shared by most requests). The
per-phase figures are computed afterwards column by column with C-level slicing, ``sum`` and ``map``.
"""

from __future__ import annotations

import itertools
from array import array
from collections.abc import Callable
from operator import sub
from typing import Any

INT32 = 2**31 - 1


def _offsets(values: list[int], base: int) -> list[int]:
    out = list(map(base.__rsub__, values))  # v - base, in C
    if max(out) > INT32 or min(out) < -INT32:  # over 2 GiB away from the request's start
        out = [max(-INT32, min(INT32, v)) for v in out]
    return out


class Plan:
    """Samples sharing one sequence of checkpoint names: their RSS readings, relative to the RSS at the
    first checkpoint (4 bytes each), as one flat column."""

    __slots__ = ("before", "files", "intervals", "k", "lines", "rss", "spans")

    def __init__(self, k: int, intervals: list[tuple[int, int, int]], spans: list[int]) -> None:
        self.k = k
        self.intervals = intervals  # (checkpoint index, phase id, span index or -1)
        self.spans = spans  # checkpoint indexes that are spans (carry rss_before)
        self.rss = array("i")
        self.before = array("i")
        self.files = array("I")
        self.lines = array("I")


class PhaseAcc:
    """Accumulates every sample's checkpoints; :meth:`rows` turns them into per-phase figures."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self._ids: dict[str, int] = {}
        self._plans: dict[tuple[str, ...], Plan] = {}

    def _phase(self, name: str) -> int:
        pid = self._ids.get(name)
        if pid is None:
            pid = self._ids[name] = len(self.names)
            self.names.append(name)
        return pid

    def _plan(self, names: tuple[str, ...], checkpoints: list[dict[str, Any]]) -> Plan:
        intervals: list[tuple[int, int, int]] = []
        spans: list[int] = []
        for i, cp in enumerate(checkpoints):
            if cp.get("rss_before") is not None:
                intervals.append((i, self._phase(names[i]), len(spans)))
                spans.append(i)
            elif i > 0:
                intervals.append((i, self._phase(f"{names[i - 1]}→{names[i]}"), -1))
        plan = self._plans[names] = Plan(len(names), intervals, spans)
        return plan

    def add(self, checkpoints: list[dict[str, Any]], rss: list[int], file: int, line: int) -> None:
        """One sample: its checkpoints, their RSS values and where it came from."""
        names = tuple([cp["name"] for cp in checkpoints])
        plan = self._plans.get(names)
        if plan is None:
            plan = self._plan(names, checkpoints)
        base = rss[0]
        if plan.spans:
            before = [checkpoints[i].get("rss_before") or rss[i] for i in plan.spans]
            plan.before.extend(_offsets(before, base))
        plan.rss.extend(_offsets(rss, base))
        plan.files.append(file)
        plan.lines.append(line)

    def rows(self, threshold: int, ref: Callable[[int, int], str]) -> list[dict[str, Any]]:
        """Per phase: count, mean and max growth (with the record of the max), and ``high``: in how many
        samples with growth >= ``threshold`` this phase grew the most."""
        n_phases = len(self.names)
        count, total, high = [0] * n_phases, [0] * n_phases, [0] * n_phases
        best: list[int | None] = [None] * n_phases
        best_ref: list[str | None] = [None] * n_phases
        for plan in self._plans.values():
            n = len(plan.files)
            if not n:
                continue
            k, s = plan.k, max(len(plan.spans), 1)
            # a sample's growth: its highest checkpoint above the first (columns maxed in C)
            peaks = map(max, *[plan.rss[j::k] for j in range(k)]) if k > 1 else plan.rss
            hot = list(itertools.compress(itertools.count(), map(threshold.__le__, peaks)))  # in C
            hot_best = [0] * len(hot)
            hot_pid = [-1] * len(hot)
            for i, pid, span in plan.intervals:
                lower = plan.before[span::s] if span >= 0 else plan.rss[i - 1 :: k]
                growth = list(map(sub, plan.rss[i::k], lower))
                count[pid] += n
                total[pid] += sum(growth)
                top = max(growth)
                current = best[pid]
                if current is None or top > current:
                    best[pid] = top
                    x = growth.index(top)
                    best_ref[pid] = ref(plan.files[x], plan.lines[x])
                for h, x in enumerate(hot):
                    if growth[x] > hot_best[h]:
                        hot_best[h], hot_pid[h] = growth[x], pid
            for pid in hot_pid:
                if pid >= 0:
                    high[pid] += 1
        rows: list[dict[str, Any]] = [
            {
                "phase": name,
                "count": count[pid],
                "mean": round(total[pid] / count[pid], 1) if count[pid] else 0.0,
                "max": best[pid] or 0,
                "high": high[pid],
                "max_ref": best_ref[pid] if best[pid] else None,
            }
            for pid, name in enumerate(self.names)
        ]
        rows.sort(key=lambda r: (-r["high"], -r["max"], r["phase"]))
        return rows
