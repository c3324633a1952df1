"""The streaming accumulator for ``sample`` records: compact columns per route and worker, bounded
aggregates of SQL, models, loader criteria and sessions.

One pass, constant memory per distinct key and a few dozen bytes per sample (array columns), so a
million samples fit in well under 300 MB. Everything derived (statistics, findings) is computed from
here afterwards by :mod:`memprof.analysis.summary` and :mod:`memprof.analysis.findings`.
"""

from __future__ import annotations

import heapq
from array import array
from collections.abc import Sequence
from itertools import islice
from operator import le
from typing import Any

from memprof.analysis.events import EventCollector
from memprof.analysis.filters import Filters, sample_haystack
from memprof.analysis.phases import PhaseAcc
from memprof.analysis.sources import LoadReport, Progress, Source, VersionCheck, read_source
from memprof.analysis.sqlagg import SqlAggregates
from memprof.analysis.stats import describe_merged

MAX_ROUTES = 5000
TOP_HIGH = 25


class RouteAcc:
    """Columns of one route template's samples."""

    __slots__ = ("_sorted", "duration", "errors", "growth", "instances", "max_ref", "queries", "rss", "session",
                 "statuses")  # fmt: skip

    def __init__(self) -> None:
        self.rss = array("q")
        self.growth = array("q")
        self.duration = array("f")
        self.queries = array("i")
        self.instances = array("i")  # -1: not counted (checkpoint-only sample)
        self.session = array("i")  # -1: no session recorded
        self.statuses: dict[int, int] = {}
        self.errors = 0
        self.max_ref: tuple[int, str] | None = None
        self._sorted: dict[str, array[Any]] = {}

    def sorted_column(self, name: str, *, keep: bool = True) -> array[Any]:
        """A column in ascending order (read it only after the last sample); kept for the next call
        unless ``keep`` is False."""
        cached = self._sorted.get(name)
        if cached is None:
            column = getattr(self, name)
            cached = array(column.typecode, sorted(column))
            if keep:
                self._sorted[name] = cached
        return cached


class WorkerAcc:
    """Columns of one worker's samples (for memory over time and leak detection)."""

    __slots__ = ("_order", "base", "first", "host", "last", "limit", "pid", "rss", "time")

    def __init__(self, pid: Any, host: Any) -> None:
        self.pid = pid
        self.host = host
        self.time = array("d")
        self.rss = array("q")  # RSS at the end of each request (charts)
        self.base = array("q")  # RSS at the start of each request (leak detection: the resting level)
        self.first: tuple[float, int, int] = (float("inf"), 0, 0)  # (time, file id, line)
        self.last: tuple[float, int, int] = (float("-inf"), 0, 0)
        self.limit: int | None = None
        self._order: Sequence[int] | None = None

    def order(self) -> Sequence[int]:
        """Indexes of the samples in time order (computed once; read it only after the last sample)."""
        if self._order is None:
            t = self.time
            in_order = all(map(le, t, islice(t, 1, None)))
            self._order = range(len(t)) if in_order else sorted(range(len(t)), key=t.__getitem__)
        return self._order


class Collector:
    """Feed it records with :meth:`add`; read the accumulated state afterwards."""

    def __init__(
        self, filters: Filters | None = None, *, recent: int = 0, files: list[str] | None = None
    ) -> None:
        self.filters = filters or Filters()
        self._filtering = self.filters.active
        self._pattern = self.filters.pattern.lower() if self.filters.pattern else None
        self.routes: dict[str, RouteAcc] = {}
        self.other_routes = 0
        self.workers: dict[str, WorkerAcc] = {}
        self.phases = PhaseAcc()
        self.sql = SqlAggregates()
        self.events = EventCollector(self.filters)
        self.high: list[tuple[int, int, str, str, str, float]] = []  # min-heap of the largest growths
        self.recent_n = recent
        self.recent: list[tuple[float, int, dict[str, Any], str]] = []
        self.samples = 0
        self.filtered_out = 0
        self.invalid = 0
        self._overall: dict[str, dict[str, Any]] = {}
        self.files: list[str] = list(files or ())  # file ids: shared by collectors that will be merged
        self._file_ids: dict[str, int] = {f: i for i, f in enumerate(self.files)}

    def overall(self, name: str) -> dict[str, Any]:
        """Statistics of a column over every route (computed once, after the last sample)."""
        cached = self._overall.get(name)
        if cached is None:
            parts = [acc.sorted_column(name, keep=name == "growth") for acc in self.routes.values()]
            cached = self._overall[name] = describe_merged(parts)
        return cached

    def window(self) -> tuple[float | None, float | None]:
        """Time of the first and the last sample."""
        times = [(min(w.time), max(w.time)) for w in self.workers.values() if w.time]
        if not times:
            return None, None
        return min(t[0] for t in times), max(t[1] for t in times)

    def limit(self) -> int | None:
        """The memory limit most samples reported."""
        weights: dict[int, int] = {}
        for w in self.workers.values():
            if w.limit:
                weights[int(w.limit)] = weights.get(int(w.limit), 0) + len(w.time)
        return max(weights, key=lambda k: (weights[k], k)) if weights else None

    def ref(self, file: int, line: int) -> str:
        """The record reference ``path:line`` of a file id and line."""
        return f"{self.files[file]}:{line}"

    # -- dispatch ---------------------------------------------------------------------------------
    def add(self, tag: str, rec: dict[str, Any], file: str, line: int) -> bool:
        """Add one record; False when it was malformed (the caller counts it as a problem)."""
        try:
            if tag == "memprof.sample":
                fid = self._file_ids.get(file)
                if fid is None:
                    fid = self._file_ids[file] = len(self.files)
                    self.files.append(file)
                self.add_sample(rec, fid, line)
            else:
                self.events.add(tag, rec, f"{file}:{line}" if line else file)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError):
            self.invalid += 1
            return False
        return True

    # -- samples ----------------------------------------------------------------------------------
    def add_sample(self, rec: dict[str, Any], fid: int, line: int) -> None:
        """Accumulate one sample record (raises KeyError/TypeError/ValueError when malformed)."""
        req = rec["request"]
        mem = rec["memory"]
        route = req["route"]
        if type(route) is not str:
            route = str(route)
        t = rec["time"]
        if type(t) is not float and type(t) is not int:  # checked before anything is appended
            raise TypeError("time")
        worker = rec.get("worker") or f"{rec.get('host')}:{rec.get('pid')}"
        if type(worker) is not str:
            worker = str(worker)
        if self._filtering:
            f = self.filters
            if not (
                f.time_ok(t)
                and f.route_ok(route)
                and f.worker_ok(worker, rec.get("pid"), rec.get("host"))
                and (self._pattern is None or self._pattern in sample_haystack(rec))
            ):
                self.filtered_out += 1
                return
        rss_start = mem["rss_start"]
        rss_end = mem["rss_end"]
        checkpoints = rec.get("checkpoints") or []
        rss = [cp["rss"] for cp in checkpoints]
        peak = max(rss) if rss else rss_end
        if rss_end > peak:
            peak = rss_end
        growth = peak - rss_start
        acc = self.routes.get(route)
        if acc is None:
            if len(self.routes) >= MAX_ROUTES:
                route = "<other>"
                self.other_routes += 1
            acc = self.routes.setdefault(route, RouteAcc())
        duration = req.get("duration_ms") or 0.0
        if type(duration) is not float and type(duration) is not int:
            raise TypeError("duration_ms")
        queries = instances = 0
        session = -1
        if "queries" in rec or "session" in rec or "models" in rec or "scopes" in rec or "engines" in rec:
            queries, instances, session = self._details(rec, route, self.ref(fid, line))
        if rec.get("detail") != "full":
            instances = -1  # checkpoint-only samples (light mode, memory guard) did not count ORM objects
        if rss:
            self.phases.add(checkpoints, rss, fid, line)
        acc.rss.append(peak)
        acc.growth.append(growth)
        acc.duration.append(duration)
        acc.queries.append(queries)
        acc.instances.append(instances)
        acc.session.append(session)
        status = req.get("status")
        status = status if type(status) is int else 0
        acc.statuses[status] = acc.statuses.get(status, 0) + 1
        if req.get("error"):
            acc.errors += 1
        if acc.max_ref is None or growth > acc.max_ref[0]:
            acc.max_ref = (growth, self.ref(fid, line))

        w = self.workers.get(worker)
        if w is None:
            w = self.workers[worker] = WorkerAcc(rec.get("pid"), rec.get("host"))
        w.time.append(t)
        w.rss.append(rss_end)
        w.base.append(rss_start)
        if t < w.first[0]:
            w.first = (t, fid, line)
        if t >= w.last[0]:
            w.last = (t, fid, line)
        limit = mem.get("limit")
        if limit:
            w.limit = limit

        self.samples += 1
        high = self.high
        if len(high) < TOP_HIGH or growth > high[0][0]:
            # (growth, -sequence): among equal growths the earliest sample is kept and listed first
            entry = (growth, -self.samples, self.ref(fid, line), route, worker, t)
            if len(high) < TOP_HIGH:
                heapq.heappush(high, entry)
            else:
                heapq.heapreplace(high, entry)
        if self.recent_n:
            item = (t, self.samples, rec, self.ref(fid, line))
            if len(self.recent) < self.recent_n:
                heapq.heappush(self.recent, item)
            elif t >= self.recent[0][0]:
                heapq.heapreplace(self.recent, item)

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
            self.sql.add_session(session, float(rec["time"]), ref, route)
        return n_queries, instances, size

    # -- results ----------------------------------------------------------------------------------
    def recent_records(self) -> list[tuple[dict[str, Any], str]]:
        """The most recent samples kept for ``--recent``, newest first."""
        return [(rec, ref) for _t, _s, rec, ref in sorted(self.recent, reverse=True)]

    def high_samples(self) -> list[tuple[int, int, str, str, str, float]]:
        """The largest memory growths seen, largest first."""
        return sorted(self.high, reverse=True)


def collect_sources(
    sources: list[Source],
    filters: Filters | None = None,
    *,
    recent: int = 0,
    progress: Progress | None = None,
    files: list[str] | None = None,
) -> tuple[Collector, LoadReport]:
    """Stream every record of ``sources`` into a new Collector; problems go into the LoadReport.

    (:func:`memprof.analysis.sources.iter_records` unrolled: one generator level less per record.)
    """
    collector = Collector(filters, recent=recent, files=files)
    report = LoadReport()
    check = VersionCheck()
    add = collector.add
    counts = report.records
    for source in sources:
        report.files += 1
        path = source.path
        try:
            for tag, rec, line in read_source(source, report, check):
                if add(tag, rec, path, line):
                    counts[tag] += 1
                else:
                    report.problem(
                        path, line or None, f"invalid record: {tag} with missing or malformed fields"
                    )
        except (OSError, EOFError) as exc:  # EOFError: a truncated .gz file
            report.problem(path, None, f"unreadable: {exc}")
        if progress is not None:
            progress(source.size)
    return collector, report
