"""Accumulating the rarer records: critical dumps, flight-recorder crash records, cache observations.

They are few (a dump is one file), so each is kept as a compact dict; stack frames and object counts
are aggregated with caps.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from memprof.analysis.filters import Filters, dump_haystack, stacks_of

MAX_DUMPS = 2000
MAX_CRASHES = 1000
MAX_CACHES = 5000
TOP_OBJECTS = 200


def _worker(rec: dict[str, Any]) -> str:
    return str(rec.get("worker") or f"{rec.get('host')}:{rec.get('pid')}")


def _text(value: Any) -> str | None:
    return None if value is None else value if isinstance(value, str) else str(value)


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _type_counts(objects: Any) -> dict[str, int]:
    """Object counts by type from a dump: ``{"top": [{"type", "count"}]}`` or a plain ``{type: count}``."""
    pairs: list[tuple[str, int]] = []
    if isinstance(objects, dict) and isinstance(objects.get("top"), list):
        pairs = [(str(t.get("type")), int(t["count"])) for t in objects["top"]
                 if isinstance(t, dict) and isinstance(t.get("count"), int)]  # fmt: skip
    elif isinstance(objects, dict):
        pairs = [
            (str(k), int(v)) for k, v in objects.items() if isinstance(v, int) and not isinstance(v, bool)
        ]
    pairs.sort(key=lambda kv: (-kv[1], kv[0]))
    return dict(pairs[:TOP_OBJECTS])


class EventCollector:
    """Dumps, crashes and cache observations, filtered like samples."""

    def __init__(self, filters: Filters) -> None:
        self.filters = filters
        self._pattern = filters.pattern.lower() if filters.pattern else None
        self.dumps: list[dict[str, Any]] = []
        self.dropped_dumps = 0
        self.frames: Counter[str] = Counter()
        self.crashes: list[dict[str, Any]] = []
        self.caches: dict[tuple[str, str], dict[str, Any]] = {}
        # Per worker, its latest count of SQL outside profiled requests: (time, data, ref).
        self.sql_outside: dict[str, tuple[float, dict[str, Any], str]] = {}
        self.state_records = 0
        self.filtered_out = 0

    def add(self, tag: str, rec: dict[str, Any], ref: str) -> None:
        if tag == "memprof.dump":
            self.add_dump(rec, ref)
        elif tag == "memprof.crash":
            self.add_crash(rec, ref)
        elif tag == "memprof.state":
            self.add_state(rec, ref)

    def _keep(self, t: float | None, rec: dict[str, Any], routes: list[str]) -> bool:
        f = self.filters
        if not f.active:
            return True
        ok = (
            f.time_ok(t)
            and f.worker_ok(_worker(rec), rec.get("pid"), rec.get("host"))
            and (f.route is None or any(f.route_ok(r) for r in routes))
        )
        if not ok:
            self.filtered_out += 1
        return ok

    def add_dump(self, rec: dict[str, Any], ref: str) -> None:
        t = _num(rec.get("time"))
        req = rec.get("request") if isinstance(rec.get("request"), dict) else None
        inflight = [r for r in rec.get("inflight") or () if isinstance(r, dict)]
        routes = ([str(req.get("route"))] if req and req.get("route") else []) + [
            str(r["route"]) for r in inflight if r.get("route")
        ]
        if not self._keep(t, rec, routes):
            return
        if self._pattern is not None and self._pattern not in dump_haystack(rec):
            self.filtered_out += 1
            return
        if len(self.dumps) >= MAX_DUMPS:
            self.dropped_dumps += 1
            return
        mem = rec.get("memory") or {}
        phase = None
        if req and isinstance(req.get("checkpoints"), list) and req["checkpoints"]:
            last = req["checkpoints"][-1]
            phase = "after " + str(last.get("name") if isinstance(last, dict) else last)
        objects = _type_counts(rec.get("objects"))
        self.dumps.append(
            {
                "ref": ref,
                "time": t,
                "worker": _worker(rec),
                "trigger": _text(rec.get("trigger")),
                "name": _text(rec.get("name")),
                "rss": _num(mem.get("rss")),
                "limit": _num(mem.get("limit")),
                "percent": _num(mem.get("percent")),
                "route": _text(req.get("route")) if req else None,
                "phase": phase,
                "inflight": routes[1:] if req and req.get("route") else routes,
                "objects": objects,
            }
        )
        frames = {
            frame for key in ("threads", "tasks") for stack in stacks_of(rec.get(key)) for frame in stack
        }
        for frame in frames:  # counted once per dump: "in how many dumps does this frame appear"
            if len(self.frames) < 20000 or frame in self.frames:
                self.frames[frame] += 1
        caches = rec.get("caches")
        if isinstance(caches, dict):
            caches = caches.get("lru_caches") or caches.get("caches") or []
        if isinstance(caches, list) and t is not None:
            self._observe_caches(_worker(rec), t, caches, ref)

    def add_crash(self, rec: dict[str, Any], ref: str) -> None:
        t = _num(rec.get("last_seen"))
        inflight = [r for r in rec.get("inflight") or () if isinstance(r, dict)]
        routes = [str(r.get("route")) for r in inflight if r.get("route")]
        if not self._keep(t, rec, routes) or len(self.crashes) >= MAX_CRASHES:
            return
        if self._pattern is not None and not any(self._pattern in r.lower() for r in routes):
            self.filtered_out += 1
            return
        self.crashes.append(
            {
                "ref": ref,
                "worker": _worker(rec),
                "pid": rec.get("pid"),
                "host": rec.get("host"),
                "started": _num(rec.get("started")),
                "last_seen": t,
                "uptime_s": _num(rec.get("uptime_s")),
                "last_rss": _num(rec.get("last_rss")),
                "limit": _num(rec.get("limit")),
                "inflight": [
                    {
                        "method": _text(r.get("method")),
                        "route": _text(r.get("route")),
                        "started": _num(r.get("started")),
                        "rss_start": _num(r.get("rss_start")),
                    }
                    for r in inflight[:50]
                ],
            }
        )

    def add_state(self, rec: dict[str, Any], ref: str) -> None:
        t = float(rec["time"])
        if not self._keep(t, rec, []):
            return
        self.state_records += 1
        worker = _worker(rec)
        self._observe_caches(worker, t, rec.get("caches") or [], ref)
        outside = rec.get("sql_outside_requests")
        if isinstance(outside, dict) and (worker not in self.sql_outside or t >= self.sql_outside[worker][0]):
            self.sql_outside[worker] = (t, outside, ref)  # cumulative: the latest observation holds it all

    def _observe_caches(self, worker: str, t: float, caches: list[Any], ref: str) -> None:
        for cache in caches:
            if not isinstance(cache, dict) or not isinstance(cache.get("size"), int):
                continue
            key = (worker, str(cache.get("name")))
            size = int(cache["size"])
            agg = self.caches.get(key)
            if agg is None:
                if len(self.caches) >= MAX_CACHES:
                    continue
                agg = self.caches[key] = {
                    "worker": worker,
                    "name": str(cache.get("name")),
                    "kind": _text(cache.get("kind")),
                    "maxsize": cache.get("maxsize") if isinstance(cache.get("maxsize"), int) else None,
                    "unbounded": bool(cache.get("unbounded", cache.get("maxsize") is None)),
                    "first": [t, size, ref],
                    "last": [t, size, ref],
                    "min": size,
                    "max": size,
                    "observations": 0,
                    "decreases": 0,
                }
            if t < agg["first"][0]:
                agg["first"] = [t, size, ref]
            if t >= agg["last"][0]:
                if size < agg["last"][1]:
                    agg["decreases"] += 1
                agg["last"] = [t, size, ref]
            agg["min"] = min(agg["min"], size)
            agg["max"] = max(agg["max"], size)
            agg["observations"] += 1
