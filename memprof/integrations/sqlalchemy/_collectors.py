"""What the SQLAlchemy listeners collect for one request, as plain data, and its record sections.

Each collector is attached to ``profile.sections`` and turned into one section of the ``sample`` record
by ``to_record()`` on the background thread (shapes: :mod:`memprof.records.models` ``Queries``, ``Models``,
``Scopes``, ``EngineState``). Nothing here references the app's objects except Sessions, and those only
weakly; every collection is capped.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable
from typing import Any

from memprof.integrations.sqlalchemy._frames import describe_library, describe_site
from memprof.integrations.sqlalchemy._loops import loop_site
from memprof.integrations.sqlalchemy._params import mask_literals

MAX_STATEMENTS = 200  # distinct statements per request; more are counted in ``dropped_statements``
MAX_SQL_CHARS = 2000
MAX_PARAM_SETS = 3  # parameter sets kept per statement (only with record_sql_params)
MAX_CLASSES = 200
MAX_CRITERIA = 100
MAX_CRITERIA_STATEMENTS = 10
MAX_SESSIONS = 32
MAX_UNATTRIBUTED = 200


def _ms(ns: int) -> float:
    return round(ns / 1e6, 3)


def _cap(sql: str) -> str:
    """SQL as recorded: string literals masked, length capped (on the background thread)."""
    sql = mask_literals(sql)
    return sql if len(sql) <= MAX_SQL_CHARS else sql[:MAX_SQL_CHARS] + "..."


class StatementStat:
    """Counters of one distinct statement in one request."""

    __slots__ = (
        "count",
        "frame",
        "heap_after",
        "heap_before",
        "heap_delta_max",
        "instances",
        "lazy",
        "library",
        "loop",
        "max_ns",
        "params",
        "rows",
        "rss_after",
        "rss_before",
        "rss_delta_max",
        "sql",
        "stack",
        "total_ns",
    )

    def __init__(self, sql: str, rss_before: int, heap_before: int = 0) -> None:
        self.sql = sql
        self.count = 0
        self.total_ns = 0
        self.max_ns = 0
        self.rss_before = rss_before
        self.rss_after = rss_before
        self.rss_delta_max = 0
        self.heap_before = heap_before
        self.heap_after = heap_before
        self.heap_delta_max = 0
        self.rows = 0
        self.instances = 0
        self.lazy = 0
        self.frame: tuple[str, int, str] | None = None  # (file, line, function): see describe_site
        self.library: tuple[str, int, str] | None = None  # the installed package's frame that issued it
        self.loop: Any = None  # the loop's candidate frames (see _loops), resolved in the writer thread
        self.stack: Any = None  # the capture of the execution before, while a loop is being looked for
        self.params: list[Any] | None = None

    def to_record(self, threshold: int) -> dict[str, Any]:
        out: dict[str, Any] = {
            "sql": _cap(self.sql),
            "count": self.count,
            "total_ms": _ms(self.total_ns),
            "max_ms": _ms(self.max_ns),
            "rss_before": self.rss_before,
            "rss_after": self.rss_after,
            "rss_delta_max": self.rss_delta_max,
            "heap_before": self.heap_before,
            "heap_after": self.heap_after,
            "heap_delta_max": self.heap_delta_max,
            "rows": self.rows,
            "instances": self.instances,
            "n_plus_one": self.count >= threshold,
            "lazy": self.lazy > 0,
            "frame": describe_site(self.frame),
            "loop": describe_site(loop_site(self.loop)),
            "library": describe_library(self.library),
        }
        if self.params is not None:
            out["params"] = self.params
        return out


class QueryCollector:
    """``profile.sections["queries"]``: the request's SQL. Light profiles keep only count and time."""

    __slots__ = (
        "count",
        "current",
        "dropped",
        "engines",
        "full",
        "last_rss",
        "record_params",
        "statements",
        "threshold",
        "total_ns",
    )

    def __init__(self, full: bool, threshold: int = 10, record_params: bool = False) -> None:
        self.full = full
        self.threshold = threshold
        self.record_params = record_params
        self.count = 0
        self.total_ns = 0
        self.dropped = 0
        self.statements: dict[str, StatementStat] = {}
        self.current: StatementStat | None = None  # the statement whose rows were fetched last
        self.last_rss = 0
        self.engines: set[int] = set()  # ids of the engines used (see the engine registry)

    def to_record(self) -> dict[str, Any]:
        out: dict[str, Any] = {"count": self.count, "total_ms": _ms(self.total_ns)}
        if self.full:
            stats = [s.to_record(self.threshold) for s in list(self.statements.values())]
            out["statements"] = stats
            out["dropped_statements"] = self.dropped
            out["n_plus_one"] = [s for s in stats if s["n_plus_one"]]
        return out


class ModelCollector:
    """``profile.sections["models"]``: per mapped class counts and Sessions' identity-map sizes."""

    __slots__ = ("by_connection", "classes", "dropped", "hot_class", "hot_entry", "hot_queries", "sessions")

    def __init__(self) -> None:
        # id(class) -> [name, loaded, created, updated, deleted, rss_first, rss_last]
        self.classes: dict[int, list[Any]] = {}
        # The class loaded last, its entry and the request's QueryCollector: the per-instance ``load``
        # listener's shortcut (a class is referenced only while the request runs).
        self.hot_class: type | None = None
        self.hot_entry: list[Any] = []
        self.hot_queries: Any = None
        self.dropped = 0
        # id(session) -> [weakref to the Session, largest identity-map size seen]
        self.sessions: dict[int, list[Any]] = {}
        self.by_connection: dict[int, list[Any]] = {}  # id(Connection) -> the same entries

    def entry(self, cls: type, rss: int) -> list[Any] | None:
        """The counters of ``cls`` (created on first use), or None past the cap."""
        found = self.classes.get(id(cls))
        if found is None:
            if len(self.classes) >= MAX_CLASSES:
                self.dropped += 1
                return None
            found = self.classes[id(cls)] = [f"{cls.__module__}.{cls.__qualname__}", 0, 0, 0, 0, rss, rss]
        return found

    def watch_session(self, session: Any, connection: Any = None) -> None:
        """Remember a Session used in this request (weakly), the connection it runs its SQL on, and
        its identity-map size now."""
        found = self.sessions.get(id(session))
        if found is None or found[0]() is not session:  # new, or a dead Session's id reused
            if len(self.sessions) >= MAX_SESSIONS:
                return
            if found is not None:  # keep the dead Session's figure under a key no id can take
                self.sessions[-len(self.sessions)] = found
            found = self.sessions[id(session)] = [weakref.ref(session), 0]
        if connection is not None and len(self.by_connection) < MAX_SESSIONS:
            self.by_connection[id(connection)] = found
        size = len(session.identity_map)
        if size > found[1]:
            found[1] = size

    def sample_connection(self, connection: Any) -> None:
        """Before a statement: the identity-map size of the Session running on ``connection``."""
        found = self.by_connection.get(id(connection))
        if found is not None:
            session = found[0]()
            if session is not None:
                size = len(session.identity_map)
                if size > found[1]:
                    found[1] = size

    def request_end(self) -> None:
        """Request end: sample every Session still alive; drop the reference to the class loaded last."""
        self.hot_class = self.hot_queries = None
        self.hot_entry = []
        self.sample_sessions()

    def sample_sessions(self) -> None:
        """Read the identity-map size of every watched Session still alive (request end)."""
        for found in self.sessions.values():
            session = found[0]()
            if session is not None:
                size = len(session.identity_map)
                if size > found[1]:
                    found[1] = size

    def to_record(self) -> dict[str, Any]:
        classes = {}
        for name, loaded, created, updated, deleted, first, last in list(self.classes.values()):
            classes[name] = {
                "loaded": loaded,
                "created": created,
                "updated": updated,
                "deleted": deleted,
                "rss_first": first,
                "rss_last": last,
            }
        out: dict[str, Any] = {
            "classes": classes,
            "identity_maps": [size for _ref, size in list(self.sessions.values())],
        }
        if self.dropped:
            out["dropped_classes"] = self.dropped
        return out


class CriteriaStat:
    """One ``with_loader_criteria`` option (by definition site or text) applied during a request."""

    __slots__ = ("applied", "cls_name", "criteria", "duplicates", "kind", "statements", "where")

    def __init__(self, cls_name: str, kind: str, criteria: str, where: str | None) -> None:
        self.cls_name = cls_name
        self.kind = kind
        self.criteria = criteria
        self.where = where
        self.applied = 0
        self.duplicates = 0
        self.statements: list[str] = []

    def applied_to(self, sql: str) -> None:
        self.applied += 1
        if len(self.statements) < MAX_CRITERIA_STATEMENTS and sql not in self.statements:
            self.statements.append(sql)


class ScopeCollector:
    """``profile.sections["scopes"]``: loader criteria applied per mapped class."""

    __slots__ = ("criteria", "dropped")

    def __init__(self) -> None:
        self.criteria: dict[tuple[Any, ...], CriteriaStat] = {}
        self.dropped = 0

    def to_record(self) -> dict[str, Any]:
        classes: dict[str, list[dict[str, Any]]] = {}
        for stat in list(self.criteria.values()):
            classes.setdefault(stat.cls_name, []).append(
                {
                    "criteria": stat.criteria,
                    "kind": stat.kind,
                    "where": stat.where,
                    "applied": stat.applied,
                    "statements": [_cap(s)[:300] for s in stat.statements],
                    "duplicates": stat.duplicates,
                }
            )
        out: dict[str, Any] = {"classes": classes}
        if self.dropped:
            out["dropped_criteria"] = self.dropped
        return out


def state_dict(figures: tuple[str, int | None, int | None, int | None, int | None]) -> dict[str, Any]:
    """An ``EngineState`` dict from (name, compiled cache size, its capacity, pool checked out, pool
    size)."""
    name, cache, capacity, checked_out, size = figures
    return {
        "name": name,
        "compiled_cache": cache,
        "compiled_cache_max": capacity,
        "pool_checked_out": checked_out,
        "pool_size": size,
    }


class EngineCollector:
    """``profile.sections["engines"]``: the state of the engines a request used, read at its end
    (plain figures; the dicts are built on the background thread)."""

    __slots__ = ("states",)

    def __init__(self, states: Iterable[tuple[str, int | None, int | None, int | None, int | None]]) -> None:
        self.states = list(states)

    def to_record(self) -> list[dict[str, Any]]:
        return [state_dict(figures) for figures in self.states]


class Unattributed:
    """SQL executed outside any profiled request, per process (start-up, jobs, tests, unsampled).

    Counters are updated without a lock: under threads an increment can rarely be lost, which is
    acceptable for these totals and keeps the unprofiled path cheap.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0
        self.total_ns = 0
        self.dropped = 0
        self.statements: dict[str, list[int]] = {}

    def add(self, sql: str, ns: int) -> None:
        self.count += 1
        self.total_ns += ns
        found = self.statements.get(sql)
        if found is None:
            if len(self.statements) >= MAX_UNATTRIBUTED:
                self.dropped += 1
                return
            found = self.statements.setdefault(sql, [0, 0])
        found[0] += 1
        found[1] += ns

    def snapshot(self) -> dict[str, Any]:
        items = sorted(list(self.statements.items()), key=lambda kv: -kv[1][1])
        return {
            "count": self.count,
            "total_ms": _ms(self.total_ns),
            "statements": [{"sql": _cap(sql), "count": c, "total_ms": _ms(ns)} for sql, (c, ns) in items],
            "dropped_statements": self.dropped,
        }

    def reinit_after_fork(self) -> None:
        self._lock = threading.Lock()

    def reset(self) -> None:
        with self._lock:
            self.count = 0
            self.total_ns = 0
            self.dropped = 0
            self.statements = {}
