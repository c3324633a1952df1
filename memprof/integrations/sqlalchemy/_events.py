"""Execution listeners: time, memory, rows and parameters of each SQL execution.

They are dialect events (``do_execute``, ``do_execute_no_params``, ``do_executemany``): each runs the
execution itself, between its two halves (:func:`_start`, :func:`_finish`), exactly as SQLAlchemy
would have run it, and returns True. Connection events (``before/after_cursor_execute``) would cost
more on every request, profiled or not: an engine with any connection listener makes each new
Connection join the engine's event dispatch and run its event hooks at every step (about 100 more
Python calls per ``Session.get``). Rows are counted as they are fetched (SQLite's ``cursor.rowcount``
is -1 for a SELECT) by a fetch strategy (:mod:`._fetch`) that delegates every call to the one
SQLAlchemy would have used and only counts what comes back.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable
from typing import Any, cast

from memprof.heap import heap_at
from memprof.integrations.sqlalchemy import _orm as _sqla_orm
from memprof.integrations.sqlalchemy._collectors import (
    MAX_PARAM_SETS,
    MAX_STATEMENTS,
    QueryCollector,
    StatementStat,
    Unattributed,
)
from memprof.integrations.sqlalchemy._fetch import count_rows as _count_rows
from memprof.integrations.sqlalchemy._fetch import record_memory as _record_memory
from memprof.integrations.sqlalchemy._loops import observe_sites
from memprof.integrations.sqlalchemy._params import redact_params
from memprof.memory import rss_at
from memprof.profile import RequestProfile, _current
from memprof.runtime import _RUNTIMES, current_runtime
from memprof.safety.isolation import internal_error
from memprof.settings import MemprofSettings, load_settings

UNATTRIBUTED = Unattributed()
MAX_ENGINES = 64
# Every engine known (instrumented, seen executing SQL in every-engine mode, or used in a full profile), weakly: id -> ref.
ENGINES: dict[int, weakref.ref[Any]] = {}
_perf = time.perf_counter_ns

_settings_override: MemprofSettings | None = None
_default_settings: MemprofSettings | None = None


def set_settings(settings: MemprofSettings | None) -> None:
    """Settings given to ``instrument_sqlalchemy`` (None: the current runtime's)."""
    global _settings_override
    _settings_override = settings


def current_settings() -> MemprofSettings:
    """The settings in force: given to ``instrument_sqlalchemy``, else the newest middleware's."""
    global _default_settings
    if _settings_override is not None:
        return _settings_override
    runtime = current_runtime()
    if runtime is not None:
        return runtime.settings
    if _default_settings is None:
        _default_settings = load_settings()
    return _default_settings


def remember_engine(engine: Any) -> int:
    """Add an engine to :data:`ENGINES` (an ``OptionEngine`` counts as the engine it wraps); its id."""
    engine = getattr(engine, "_proxied", engine)
    key = id(engine)
    known = ENGINES.get(key)
    if known is None or known() is not engine:  # new, or a dead engine's id reused
        if len(ENGINES) >= MAX_ENGINES:
            for dead in [k for k, ref in ENGINES.items() if ref() is None]:
                del ENGINES[dead]
        if len(ENGINES) < MAX_ENGINES:
            ENGINES[key] = weakref.ref(engine)
    return key


def _settings_of(profile: RequestProfile) -> MemprofSettings:
    """The settings of the middleware that runs ``profile`` (several may live in one process). Once
    per full profile: the runtimes' weak references are read in place, newest first."""
    if _settings_override is None:
        request_id = profile.request_id
        for ref in reversed(_RUNTIMES):
            runtime = ref()
            if runtime is not None and request_id in runtime.active:
                return runtime.settings
    return current_settings()


def _queries(profile: RequestProfile) -> QueryCollector:
    found = profile.sections.get("queries")
    if found is None:
        if profile.full:
            settings = _settings_of(profile)
            found = QueryCollector(True, settings.n_plus_one_threshold, settings.record_sql_params)
        else:
            found = QueryCollector(False)  # light: count and time only, no setting needed
        profile.sections["queries"] = found
    return cast(QueryCollector, found)


def _start(
    profile: RequestProfile, statement: str, parameters: Any, context: Any
) -> tuple[Any, Any, Any, int, int]:
    """Before an execution in a profiled request: count it; in full profiles read RSS and heap, find the
    statement's counters and note its frame (first execution and at the N+1 threshold), lazy origin,
    parameters and loader criteria. The state handed to :func:`_finish`: (profile, queries, statement
    counters, RSS before, heap before)."""
    queries = _queries(profile)
    queries.count += 1
    if not queries.full:
        return (profile, queries, None, 0, 0)
    t0 = _perf()
    rss = rss_at(t0)  # shares a reading made under 20 µs before (see memprof.memory)
    heap = heap_at(t0)  # shares a recent reading too (see memprof.heap)
    queries.last_rss = rss
    conn = context.root_connection
    engine = conn.engine
    if id(engine) not in queries.engines:
        queries.engines.add(remember_engine(engine))
    stat = queries.statements.get(statement)
    if stat is None:
        if len(queries.statements) >= MAX_STATEMENTS:
            queries.dropped += 1
        else:
            stat = queries.statements[statement] = StatementStat(statement, rss, heap)
    if stat is not None:
        _observe(profile, queries, stat, statement, parameters, context)
    models: Any = profile.sections.get("models")  # Any: a cast() would be one more call
    if models is not None:
        models.sample_connection(conn)
    profile.overhead_ns += _perf() - t0
    return (profile, queries, stat, rss, heap)


def _remember_context_engine(context: Any) -> None:
    """Every-engine mode: note the engine behind an execution (no ``engine_connect`` listener: a
    connection event would make every Connection join its engine's dispatch)."""
    engine = context.root_connection.engine
    known = ENGINES.get(id(engine))
    if known is None or known() is not engine:
        remember_engine(engine)


_NO_PROFILE: tuple[Any, Any, Any, int, int] = (None, None, None, 0, 0)
_remember_all = False


def set_remember_all(on: bool) -> None:
    """Every-engine mode: remember each engine that executes SQL (for :func:`engine_states`)."""
    global _remember_all
    _remember_all = on


def _observe(
    profile: RequestProfile,
    queries: QueryCollector,
    stat: StatementStat,
    statement: str,
    parameters: Any,
    context: Any,
) -> None:
    n = stat.count = stat.count + 1
    if n <= 2 or queries.threshold - 1 <= n <= queries.threshold:
        observe_sites(stat, n, queries.threshold)  # its frames, library frame and loop (see _loops)
    load_options = context.execution_options.get("_sa_orm_load_options")
    if load_options is not None and getattr(load_options, "_lazy_loaded_from", None) is not None:
        stat.lazy += 1
    if queries.record_params and (stat.params is None or len(stat.params) < MAX_PARAM_SETS):
        compiled_params = getattr(context, "compiled_parameters", None)
        if context.compiled is not None and compiled_params:
            params = redact_params(compiled_params[0])
        else:
            params = redact_params(parameters[0] if context.executemany and parameters else parameters)
        if stat.params is None:
            stat.params = []
        stat.params.append(params)
    options = getattr(context.invoked_statement, "_with_options", None)
    if options:
        _sqla_orm.observe_criteria(profile, options, statement)


def _finish(
    state: tuple[Any, Any, Any, int, int], cursor: Any, statement: str, context: Any, ns: int
) -> None:
    """After a successful execution: its time; arrange for its rows to be counted as they are fetched."""
    try:
        profile, queries, stat, rss_before, heap_before = state
        if queries is None:
            UNATTRIBUTED.add(statement, ns)
            return
        queries.total_ns += ns
        if stat is None:
            return
        t1 = _perf()
        stat.total_ns += ns
        if ns > stat.max_ns:
            stat.max_ns = ns
        if cursor.description is None or not _count_rows(
            profile, queries, stat, rss_before, heap_before, context
        ):
            _record_memory(profile, queries, stat, rss_before, heap_before, t1)
        profile.overhead_ns += _perf() - t1
    except Exception as exc:
        internal_error("sqlalchemy.after_execute", exc)


def _failed(state: tuple[Any, Any, Any, int, int], statement: str, ns: int) -> None:
    """After a failed execution: its time is counted (the error goes on unchanged)."""
    try:
        _profile, queries, stat, _rss, _heap = state
        if queries is None:
            UNATTRIBUTED.add(statement, ns)
            return
        queries.total_ns += ns
        if stat is not None:
            stat.total_ns += ns
            if ns > stat.max_ns:
                stat.max_ns = ns
    except Exception as exc:
        internal_error("sqlalchemy.after_execute", exc)


def _rest_of_chain(me: Any, listeners: Any, default: Callable[..., Any], *args: Any) -> None:
    """Run what SQLAlchemy would have run after ``me``: the later listeners (the first that returns
    true executed the statement) or else the dialect's own method."""
    after = False
    for fn in list(listeners):
        if after:
            if fn(*args):
                return
        elif fn is me:
            after = True
    default(*args)


def _last(listeners: Any, me: Any) -> bool:
    own = listeners.listeners  # the dialect's own listeners run after its class's (parent_listeners)
    return (own[-1] if own else listeners.parent_listeners[-1]) is me


def do_execute(cursor: Any, statement: str, parameters: Any, context: Any) -> bool:
    """``DialectEvents.do_execute``: run the execution ourselves, timed, exactly as SQLAlchemy would
    have (the dialect's ``do_execute``, or the listeners registered after this one), and return True
    so that it is not run again. A dialect event, unlike ``before/after_cursor_execute``, does not make
    every Connection join its engine's event dispatch and run the engine's event hooks."""
    return _timed(do_execute, "do_execute", parameters, context, cursor, statement, parameters, context)


def do_execute_no_params(cursor: Any, statement: str, context: Any) -> bool:
    """``DialectEvents.do_execute_no_params``: as :func:`do_execute`, for a statement without
    parameters."""
    return _timed(do_execute_no_params, "do_execute_no_params", (), context, cursor, statement, context)


def do_executemany(cursor: Any, statement: str, parameters: Any, context: Any) -> bool:
    """``DialectEvents.do_executemany``: as :func:`do_execute`, for ``cursor.executemany``."""
    return _timed(
        do_executemany, "do_executemany", parameters, context, cursor, statement, parameters, context
    )


def _timed(
    me: Any, event: str, parameters: Any, context: Any, cursor: Any, statement: str, *rest: Any
) -> bool:
    """The body of the three dialect listeners: ``me`` is the listener, ``event`` the dialect method and
    event name, ``(cursor, statement, *rest)`` the arguments SQLAlchemy passed."""
    if context is None:  # SQLAlchemy's own executions outside a statement (sequences): not ours
        return False
    profile = _current.get()
    try:
        if profile is None or profile.finished:  # unprofiled: only timed, as unattributed SQL
            state = _NO_PROFILE
            if _remember_all:
                _remember_context_engine(context)
        else:
            state = _start(profile, statement, parameters, context)
    except Exception as exc:
        internal_error("sqlalchemy.before_execute", exc)
        return False
    dialect = context.dialect
    listeners = getattr(dialect.dispatch, event)
    default = getattr(dialect, event)
    t0 = _perf()
    try:
        if _last(listeners, me):
            default(cursor, statement, *rest)
        else:
            _rest_of_chain(me, listeners, default, cursor, statement, *rest)
    except BaseException:
        _failed(state, statement, _perf() - t0)
        raise
    _finish(state, cursor, statement, context, _perf() - t0)
    return True
