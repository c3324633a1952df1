"""Bounded aggregates of the full-detail sample sections: SQL statements, ORM models, loader criteria,
engines and HTTP sessions. Each keeps a capped number of distinct keys; the rest is counted."""

from __future__ import annotations

from collections import Counter
from typing import Any

MAX_STATEMENTS = 2000
MAX_CLASSES = 1000
MAX_SESSIONS = 20000
MAX_KEYS = 2000
MAX_ROUTES_PER_KEY = 50


class StatementAgg:
    """One distinct SQL text over every request that ran it."""

    __slots__ = ("cartesian", "executions", "frames", "instances", "large", "lazy", "max_count", "max_ms",
                 "max_rss_delta", "n1_frames", "n1_last_ref", "n1_routes", "n_plus_one", "n_plus_one_refs", "requests", "routes", "rows", "total_ms",
                 "worst_ref")  # fmt: skip

    def __init__(self) -> None:
        self.executions = 0
        self.requests = 0
        self.total_ms = 0.0
        self.max_ms = 0.0
        self.max_count = 0
        self.rows = 0
        self.instances = 0
        self.max_rss_delta = 0
        self.worst_ref: str | None = None
        self.lazy = False
        self.n_plus_one = 0
        self.n_plus_one_refs: list[str] = []
        self.n1_last_ref: str | None = None
        self.frames: Counter[str] = Counter()
        # where and on which routes it ran as an N+1 (a statement can also run once elsewhere)
        self.n1_frames: Counter[str] = Counter()
        self.n1_routes: Counter[str] = Counter()
        self.routes: Counter[str] = Counter()
        # worst single-request figures: (rows, instances, ref) and (instances, rss_delta, ref)
        self.cartesian: tuple[int, int, str] | None = None
        self.large: tuple[int, int, str] | None = None


class SqlAggregates:
    """Accumulates statements, models, scopes, engines and sessions across samples."""

    def __init__(self) -> None:
        self.statements: dict[str, StatementAgg] = {}
        self.dropped_statements = 0
        self.requests_with_queries = 0
        self.models: dict[str, dict[str, Any]] = {}
        self.scopes: dict[tuple[str, str], dict[str, Any]] = {}
        self.engines: dict[str, dict[str, Any]] = {}
        self.session_count = 0
        self.session_keys: dict[str, list[Any]] = {}  # key -> [max size, seen, ref of max]
        self.sessions: dict[
            str, list[Any]
        ] = {}  # id hash -> [first t, first size, last t, last size, n, max, last ref, route at max, t at max]
        self.max_session: tuple[int, str] | None = None

    def add_statement(self, st: dict[str, Any], route: str, ref: str, *, flagged_only: bool = False) -> None:
        sql = st["sql"]
        agg = self.statements.get(sql)
        if agg is None:
            if len(self.statements) >= MAX_STATEMENTS:
                self.dropped_statements += 1
                return
            agg = self.statements[str(sql)] = StatementAgg()
        count = st.get("count") or 0
        if st.get("n_plus_one") or flagged_only:
            if agg.n1_last_ref != ref:
                agg.n1_last_ref = ref
                agg.n_plus_one += 1
                if len(agg.n_plus_one_refs) < 5:
                    agg.n_plus_one_refs.append(ref)
                if route in agg.n1_routes or len(agg.n1_routes) < MAX_ROUTES_PER_KEY:
                    agg.n1_routes[route] += 1
                n1_frame = st.get("frame")
                if n1_frame and (n1_frame in agg.n1_frames or len(agg.n1_frames) < MAX_ROUTES_PER_KEY):
                    agg.n1_frames[str(n1_frame)] += 1
            agg.max_count = max(agg.max_count, count)
            if flagged_only:
                return
        agg.executions += count
        agg.requests += 1
        agg.total_ms += st.get("total_ms") or 0.0
        max_ms = st.get("max_ms") or 0.0
        if max_ms > agg.max_ms:
            agg.max_ms = max_ms
        if count > agg.max_count:
            agg.max_count = count
        rows = st.get("rows") or 0
        instances = st.get("instances") or 0
        delta = st.get("rss_delta_max") or 0
        agg.rows += rows
        agg.instances += instances
        if delta > agg.max_rss_delta or agg.worst_ref is None:
            agg.max_rss_delta = max(delta, agg.max_rss_delta)
            agg.worst_ref = ref
        if st.get("lazy"):
            agg.lazy = True
        routes = agg.routes
        if route in routes:
            routes[route] += 1
        elif len(routes) < MAX_ROUTES_PER_KEY:
            routes[route] = 1
        frame = st.get("frame")
        if frame:
            frames = agg.frames
            if frame in frames:
                frames[frame] += 1
            elif len(frames) < MAX_ROUTES_PER_KEY:
                frames[str(frame)] = 1
        if instances and rows > instances:
            worst = agg.cartesian
            if worst is None or rows / instances > worst[0] / max(worst[1], 1):
                agg.cartesian = (rows, instances, ref)
        large = agg.large
        if large is None or instances > large[0] or (instances == large[0] and delta > large[1]):
            agg.large = (instances, delta, ref)

    def add_models(self, models: dict[str, Any], route: str, ref: str) -> int:
        loaded_total = 0
        for name, counts in (models.get("classes") or {}).items():
            agg = self.models.get(name)
            if agg is None:
                if len(self.models) >= MAX_CLASSES:
                    continue
                agg = self.models[name] = {"loaded": 0, "created": 0, "updated": 0, "deleted": 0,
                                           "requests": 0, "max_loaded": 0, "ref": ref, "routes": Counter()}  # fmt: skip
            loaded = int(counts.get("loaded") or 0)
            loaded_total += loaded
            for key in ("created", "updated", "deleted"):
                agg[key] += int(counts.get(key) or 0)
            agg["loaded"] += loaded
            agg["requests"] += 1
            if loaded > agg["max_loaded"]:
                agg["max_loaded"], agg["ref"] = loaded, ref
            if len(agg["routes"]) < MAX_ROUTES_PER_KEY or route in agg["routes"]:
                agg["routes"][route] += loaded
        return loaded_total

    def add_scopes(self, scopes: dict[str, Any], route: str, ref: str) -> None:
        for cls, items in (scopes.get("classes") or {}).items():
            for item in items or ():
                key = (str(cls), str(item.get("criteria", "")))
                agg = self.scopes.get(key)
                if agg is None:
                    if len(self.scopes) >= MAX_KEYS:
                        continue
                    agg = self.scopes[key] = {"applied": 0, "requests": 0, "max_applied": 0, "duplicates": 0,
                                              "kind": item.get("kind"), "where": item.get("where"), "ref": ref,
                                              "routes": Counter()}  # fmt: skip
                applied = int(item.get("applied") or 0)
                agg["applied"] += applied
                agg["requests"] += 1
                agg["duplicates"] += int(item.get("duplicates") or 0)
                if applied > agg["max_applied"]:
                    agg["max_applied"], agg["ref"] = applied, ref
                if len(agg["routes"]) < MAX_ROUTES_PER_KEY or route in agg["routes"]:
                    agg["routes"][route] += 1

    def add_engines(self, engines: list[dict[str, Any]], worker: str, t: float) -> None:
        for eng in engines:
            key = f"{worker} {eng.get('name')}"
            size = eng.get("compiled_cache")
            if size is None:
                continue
            agg = self.engines.get(key)
            if agg is None:
                if len(self.engines) >= MAX_KEYS:
                    continue
                agg = self.engines[key] = {"worker": worker, "name": eng.get("name"), "first": (t, size),
                                           "last": (t, size), "max": size, "decreases": 0, "observations": 0,
                                           "maxsize": eng.get("compiled_cache_max")}  # fmt: skip
            if t >= agg["last"][0]:
                if size < agg["last"][1]:
                    agg["decreases"] += 1
                agg["last"] = (t, size)
            agg["max"] = max(agg["max"], size)
            agg["observations"] += 1

    def add_session(self, session: dict[str, Any], t: float, ref: str, route: str = "") -> None:
        size = int(session["size"])
        self.session_count += 1
        if self.max_session is None or size > self.max_session[0]:
            self.max_session = (size, ref)
        for item in session.get("largest") or ():
            key = str(item.get("key"))
            ksize = int(item.get("size") or 0)
            agg = self.session_keys.get(key)
            if agg is None:
                if len(self.session_keys) >= MAX_KEYS:
                    continue
                agg = self.session_keys[key] = [0, 0, ref]
            if ksize > agg[0]:
                agg[0], agg[2] = ksize, ref
            agg[1] += 1
        ident = session.get("id_hash")
        if ident:
            s = self.sessions.get(ident)
            if s is None:
                if len(self.sessions) >= MAX_SESSIONS:
                    return
                self.sessions[ident] = [t, size, t, size, 1, size, ref, route, t]
                return
            if t < s[0]:
                s[0], s[1] = t, size
            if t >= s[2]:
                s[2], s[3], s[6] = t, size, ref
            s[4] += 1
            if size > s[5] or (size == s[5] and t < s[8]):
                s[5], s[7], s[8] = size, route, t  # the route whose request brought it to its maximum
