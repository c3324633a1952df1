"""The streaming accumulator for ``sample`` records: compact columns per route and worker, bounded
aggregates of SQL, models, loader criteria and sessions.

One pass, constant memory per distinct key and a few dozen bytes per sample (array columns), so a
million samples fit in well under 300 MB. Everything derived (statistics, findings) is computed from
here afterwards by :mod:`memprof.analysis.summary` and :mod:`memprof.analysis.findings`.
"""

from __future__ import annotations

import heapq
from array import array
from collections import Counter
from typing import Any

from memprof.analysis.events import EventCollector
from memprof.analysis.filters import Filters, sample_haystack
from memprof.analysis.sqlagg import SqlAggregates

MAX_ROUTES = 5000
TOP_HIGH = 25


class RouteAcc:
    """Columns of one route template's samples."""

    __slots__ = ("duration", "errors", "growth", "instances", "max_ref", "phase", "queries", "rss",
                 "session", "statuses", "time")  # fmt: skip

    def __init__(self) -> None:
        self.rss = array("q")
        self.growth = array("q")
        self.duration = array("d")
        self.queries = array("l")
        self.instances = array("l")
        self.session = array("q")
        self.phase = array("l")
        self.time = array("d")
        self.statuses: Counter[int] = Counter()
        self.errors = 0
        self.max_ref: tuple[int, str] | None = None


class WorkerAcc:
    """Columns of one worker's samples (for memory over time and leak detection)."""

    __slots__ = ("base", "first_ref", "host", "last_ref", "limit", "pid", "rss", "time")

    def __init__(self, pid: Any, host: Any) -> None:
        self.pid = pid
        self.host = host
        self.time = array("d")
        self.rss = array("q")  # RSS at the end of each request (charts)
        self.base = array("q")  # RSS at the start of each request (leak detection: the resting level)
        self.first_ref: tuple[float, str] | None = None
        self.last_ref: tuple[float, str] | None = None
        self.limit: int | None = None


class Collector:
    """Feed it records with :meth:`add`; read the accumulated state afterwards."""

    def __init__(self, filters: Filters | None = None, *, recent: int = 0) -> None:
        self.filters = filters or Filters()
        self._pattern = self.filters.pattern.lower() if self.filters.pattern else None
        self.routes: dict[str, RouteAcc] = {}
        self.other_routes = 0
        self.workers: dict[str, WorkerAcc] = {}
        self.phase_names: list[str] = []
        self._phase_ids: dict[tuple[str | None, str], int] = {}
        self.phase_count: list[int] = []
        self.phase_sum: list[float] = []
        self.phase_max: list[int] = []
        self.phase_max_ref: list[str] = []
        self.sql = SqlAggregates()
        self.events = EventCollector(self.filters)
        self.high: list[tuple[int, int, str, str, str, float]] = []  # min-heap of the largest growths
        self.recent_n = recent
        self.recent: list[tuple[float, int, dict[str, Any], str]] = []
        self.samples = 0
        self.filtered_out = 0
        self.invalid = 0
        self.first_time: float | None = None
        self.last_time: float | None = None
        self.limits: Counter[int] = Counter()
        self._seq = 0

    # -- dispatch ---------------------------------------------------------------------------------
    def add(self, tag: str, rec: dict[str, Any], file: str, line: int) -> bool:
        """Add one record; False when it was malformed (the caller counts it as a problem)."""
        try:
            if tag == "memprof.sample":
                self.add_sample(rec, f"{file}:{line}")
            else:
                self.events.add(tag, rec, f"{file}:{line}" if line else file)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError):
            self.invalid += 1
            return False
        return True

    # -- samples ----------------------------------------------------------------------------------
    def add_sample(self, rec: dict[str, Any], ref: str) -> None:
        """Accumulate one sample record (raises KeyError/TypeError/ValueError when malformed)."""
        req = rec["request"]
        mem = rec["memory"]
        route = str(req["route"])
        t = float(rec["time"])
        worker = rec.get("worker") or f"{rec.get('host')}:{rec.get('pid')}"
        f = self.filters
        if f.active and not (
            f.time_ok(t)
            and f.route_ok(route)
            and f.worker_ok(worker, rec.get("pid"), rec.get("host"))
            and (self._pattern is None or self._pattern in sample_haystack(rec))
        ):
            self.filtered_out += 1
            return
        rss_start = int(mem["rss_start"])
        rss_end = int(mem["rss_end"])
        peak = rss_end
        best_phase = -1
        best_growth = 0
        prev_name: str | None = None
        prev_rss = rss_start
        ids = self._phase_ids
        for cp in rec.get("checkpoints") or ():
            name = cp["name"]
            rss = int(cp["rss"])
            if rss > peak:
                peak = rss
            before = cp.get("rss_before")
            if before is not None:
                key: tuple[str | None, str] = (None, name)
                growth = rss - int(before)
            elif prev_name is not None:
                key = (prev_name, name)
                growth = rss - prev_rss
            else:
                prev_name, prev_rss = name, rss
                continue
            pid_ = ids.get(key)
            if pid_ is None:
                pid_ = self._new_phase(key)
            self.phase_count[pid_] += 1
            self.phase_sum[pid_] += growth
            if growth > self.phase_max[pid_]:
                self.phase_max[pid_] = growth
                self.phase_max_ref[pid_] = ref
            if growth > best_growth:
                best_growth, best_phase = growth, pid_
            prev_name, prev_rss = name, rss
        growth = peak - rss_start

        acc = self.routes.get(route)
        if acc is None:
            if len(self.routes) >= MAX_ROUTES:
                route = "<other>"
                self.other_routes += 1
            acc = self.routes.setdefault(route, RouteAcc())
        queries = instances = 0
        session = -1
        if rec.get("detail") == "full" or "queries" in rec:
            queries, instances, session = self._details(rec, route, ref)
        acc.rss.append(peak)
        acc.growth.append(growth)
        acc.duration.append(float(req.get("duration_ms") or 0.0))
        acc.queries.append(queries)
        acc.instances.append(instances)
        acc.session.append(session)
        acc.phase.append(best_phase)
        acc.time.append(t)
        status = req.get("status")
        acc.statuses[status if isinstance(status, int) else 0] += 1
        if req.get("error"):
            acc.errors += 1
        if acc.max_ref is None or growth > acc.max_ref[0]:
            acc.max_ref = (growth, ref)

        w = self.workers.get(worker)
        if w is None:
            w = self.workers[worker] = WorkerAcc(rec.get("pid"), rec.get("host"))
        w.time.append(t)
        w.rss.append(rss_end)
        w.base.append(rss_start)
        if w.first_ref is None or t < w.first_ref[0]:
            w.first_ref = (t, ref)
        if w.last_ref is None or t >= w.last_ref[0]:
            w.last_ref = (t, ref)
        limit = mem.get("limit")
        if limit:
            w.limit = int(limit)
            self.limits[int(limit)] += 1

        self.samples += 1
        self._seq += 1
        if self.first_time is None or t < self.first_time:
            self.first_time = t
        if self.last_time is None or t > self.last_time:
            self.last_time = t
        entry = (growth, self._seq, ref, route, worker, t)
        if len(self.high) < TOP_HIGH:
            heapq.heappush(self.high, entry)
        elif growth > self.high[0][0]:
            heapq.heapreplace(self.high, entry)
        if self.recent_n:
            item = (t, self._seq, rec, ref)
            if len(self.recent) < self.recent_n:
                heapq.heappush(self.recent, item)
            elif t >= self.recent[0][0]:
                heapq.heapreplace(self.recent, item)

    def _new_phase(self, key: tuple[str | None, str]) -> int:
        pid_ = len(self.phase_names)
        self.phase_names.append(key[1] if key[0] is None else f"{key[0]}→{key[1]}")
        self._phase_ids[key] = pid_
        self.phase_count.append(0)
        self.phase_sum.append(0.0)
        self.phase_max.append(0)
        self.phase_max_ref.append("")
        return pid_

    def _details(self, rec: dict[str, Any], route: str, ref: str) -> tuple[int, int, int]:
        """Full-detail sections: SQL, models, scopes, session. Returns (queries, instances, session size)."""
        queries = rec.get("queries") or {}
        n_queries = int(queries.get("count") or 0)
        instances = 0
        for st in queries.get("statements") or ():
            instances += int(st.get("instances") or 0)
            self.sql.add_statement(st, route, ref)
        for st in queries.get("n_plus_one") or ():
            self.sql.add_statement(st, route, ref, flagged_only=True)
        models = rec.get("models")
        if models:
            loaded = self.sql.add_models(models, route, ref)
            instances = max(instances, loaded)
        scopes = rec.get("scopes")
        if scopes:
            self.sql.add_scopes(scopes, route, ref)
        engines = rec.get("engines")
        if engines:
            self.sql.add_engines(engines, str(rec.get("worker") or ""), float(rec["time"]))
        session = rec.get("session")
        size = -1
        if session:
            size = int(session["size"])
            self.sql.add_session(session, float(rec["time"]), ref)
        return n_queries, instances, size

    # -- results ----------------------------------------------------------------------------------
    def recent_records(self) -> list[tuple[dict[str, Any], str]]:
        """The most recent samples kept for ``--recent``, newest first."""
        return [(rec, ref) for _t, _s, rec, ref in sorted(self.recent, reverse=True)]

    def high_samples(self) -> list[tuple[int, int, str, str, str, float]]:
        """The largest memory growths seen, largest first."""
        return sorted(self.high, reverse=True)
