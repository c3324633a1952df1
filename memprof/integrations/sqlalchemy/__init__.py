"""SQLAlchemy instrumentation: what each profiled request did with the database.

    from memprof import instrument_sqlalchemy

    instrument_sqlalchemy(engine)      # an Engine or AsyncEngine; no argument: every engine

Listeners are registered once, through a registry that :func:`uninstrument_sqlalchemy` empties. They
only observe: statements are never rewritten and no attribute that could trigger a load is read (the
execution listeners run each execution as SQLAlchemy would, see :mod:`._events`). What
they learn goes into the current request's profile (``profile.sections``: ``queries``, ``models``,
``scopes``, ``engines``); SQL run outside any profiled request is counted per process
(:func:`unattributed`). See README "SQLAlchemy" for the record fields.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Mapper, Session

from memprof import events
from memprof.integrations.sqlalchemy import _events as _sqla_events
from memprof.integrations.sqlalchemy import _orm as _sqla_orm
from memprof.integrations.sqlalchemy._collectors import EngineCollector, QueryCollector, state_dict
from memprof.profile import RequestProfile
from memprof.runtime import FINISH_HOOKS, Scope, register_hooks
from memprof.safety.isolation import internal_error
from memprof.settings import MemprofSettings

__all__ = [
    "engine_states",
    "instrument_sqlalchemy",
    "is_instrumented",
    "reset_unattributed",
    "unattributed",
    "uninstrument_sqlalchemy",
]

# (event, listener, keywords): dialect events only (on an engine they land on its dialect, on Engine on
# Dialect): a connection event would make every Connection join its engine's dispatch (see _events).
_ENGINE_EVENTS: tuple[tuple[str, Callable[..., Any], dict[str, Any]], ...] = (
    ("do_execute", _sqla_events.do_execute, {}),
    ("do_execute_no_params", _sqla_events.do_execute_no_params, {}),
    ("do_executemany", _sqla_events.do_executemany, {}),
)

_lock = threading.RLock()
# Every listener added: (weak reference to its target, event name, function). Targets are weak so the
# registry never keeps an engine alive; a dead engine took its listeners with it.
_registry: list[tuple[Callable[[], Any], str, Callable[..., Any]]] = []
_global = False
_orm_installed = False
# Engines with their own listeners, weakly (an id alone could be reused by a later engine).
_own: dict[int, weakref.ref[Engine]] = {}


def _has_own_listeners(engine: Engine) -> bool:
    ref = _own.get(id(engine))
    return ref is not None and ref() is engine


def _sync_engine(engine: Any) -> Engine:
    sync = getattr(engine, "sync_engine", engine)  # AsyncEngine wraps a sync Engine
    if not isinstance(sync, Engine):
        raise TypeError(
            f"instrument_sqlalchemy() needs an Engine or AsyncEngine, not {type(engine).__name__}"
        )
    return sync


class _Strong:
    """A 'reference' to a class-level target (Engine, Mapper, Session): those live forever anyway."""

    __slots__ = ("target",)

    def __init__(self, target: Any) -> None:
        self.target = target

    def __call__(self) -> Any:
        return self.target


def _listen(target: Any, name: str, fn: Callable[..., Any], **kw: Any) -> None:
    event.listen(target, name, fn, **kw)
    ref: Callable[[], Any] = weakref.ref(target) if isinstance(target, Engine) else _Strong(target)
    _registry.append((ref, name, fn))


def instrument_sqlalchemy(
    engine: Any = None, *, settings: MemprofSettings | None = None, count_instances: bool | None = None
) -> None:
    """Record SQL, ORM and engine activity into profiled requests. Idempotent.

    ``engine``: an ``Engine`` or ``AsyncEngine``; None instruments every engine, present and future
    (what :class:`memprof.MemprofMiddleware` does by itself, unless ``MEMPROF_SQLALCHEMY=off``).
    ``settings``: the settings to use (threshold of N+1, parameter recording); by default those of
    the middleware that profiles the request. ``count_instances=False`` leaves out the count of ORM
    objects built (per-class ``loaded`` and per-statement ``instances`` are then 0, the rest is
    unchanged); it applies to every engine and the last call that gives it decides (None keeps the
    current choice, True at first). Objects are counted only in full-detail requests, by a listener
    on each Session whose transaction begins in one: other requests pay nothing per object. Call this
    at start-up: adding or removing listeners while other threads run SQL is not something SQLAlchemy
    guards against.
    """
    with _lock:
        if settings is not None:
            _sqla_events.set_settings(settings)
        if engine is None:
            if not _global:
                _instrument_all()
        else:
            sync = _sync_engine(engine)
            _sqla_events.remember_engine(sync)
            if not _global and not _has_own_listeners(sync):
                for name, fn, kw in _ENGINE_EVENTS:
                    _listen(sync, name, fn, **kw)
                _own[id(sync)] = weakref.ref(sync)
        _install_orm()
        if count_instances is not None and count_instances != _sqla_orm.counting_instances():
            if not count_instances:
                _remove_mapper_load()
            _sqla_orm.count_instances(count_instances)
        register_hooks(on_finish=_on_finish)


def count_everywhere() -> None:
    """Count ORM objects with one Mapper ``load`` listener rather than per Session: cheaper where every
    request is profiled in full (the composition root calls it at start-up for a runtime configured in
    aggressive mode at sample rate 1). Never removed while serving; nothing when instrumenting left
    objects out (``count_instances=False``) or SQLAlchemy is not instrumented."""
    with _lock:
        if _orm_installed and _sqla_orm.counting_instances() and not _mapper_load():
            _listen(Mapper, "load", _sqla_orm.on_load, raw=True)
            _sqla_orm.set_everywhere(True)


def _mapper_load() -> tuple[Callable[[], Any], str, Callable[..., Any]] | None:
    return next((entry for entry in _registry if entry[2] is _sqla_orm.on_load), None)


def _remove_mapper_load() -> None:
    entry = _mapper_load()
    if entry is not None:
        event.remove(Mapper, "load", _sqla_orm.on_load)
        _registry.remove(entry)
    _sqla_orm.set_everywhere(False)


def _instrument_all() -> None:
    global _global
    # Engine-level listeners would run a second time under class-level ones: drop them first.
    for ref, name, fn in list(_registry):
        target = ref()
        if isinstance(target, Engine):
            if event.contains(target, name, fn):
                event.remove(target, name, fn)
            _registry.remove((ref, name, fn))
    _own.clear()
    for name, fn, kw in _ENGINE_EVENTS:
        _listen(Engine, name, fn, **kw)
    _sqla_events.set_remember_all(True)  # engines are noted as they execute SQL
    _global = True


def _install_orm() -> None:
    global _orm_installed
    if not _orm_installed:
        # Listening on the Mapper class (without propagate) covers every mapped class, even later ones.
        # No Mapper ``load`` listener: it would run for every object built, in every request (see _orm).
        _listen(Mapper, "after_insert", _sqla_orm.after_insert)
        _listen(Mapper, "after_update", _sqla_orm.after_update)
        _listen(Mapper, "after_delete", _sqla_orm.after_delete)
        _listen(Session, "after_begin", _sqla_orm.on_begin)
        _listen(Session, "after_flush", _sqla_orm.watch_session)
        _listen(Session, "after_transaction_end", _sqla_orm.watch_session)
        _orm_installed = True


def uninstrument_sqlalchemy() -> None:
    """Remove every listener :func:`instrument_sqlalchemy` added (engines, mappers, sessions, hooks)."""
    global _global, _orm_installed
    with _lock:
        for ref, name, fn in reversed(_registry):
            target = ref()
            if target is not None and event.contains(target, name, fn):
                event.remove(target, name, fn)
        _registry.clear()
        _sqla_orm.count_instances(False)  # the Sessions' own listeners removed
        _sqla_orm.count_instances(True)  # the default restored
        _sqla_orm.set_everywhere(False)
        _own.clear()
        _global = False
        _orm_installed = False
        _sqla_events.set_remember_all(False)
        _sqla_events.set_settings(None)
        if _on_finish in FINISH_HOOKS:
            FINISH_HOOKS.remove(_on_finish)


def is_instrumented(engine: Any = None) -> bool:
    """Whether ``engine`` (or, with no argument, every engine) is instrumented."""
    with _lock:
        if engine is None:
            return _global
        return _global or _has_own_listeners(_sync_engine(engine))


def describe() -> str:
    """What is instrumented, for the start-up line: ``every engine``, ``N engine(s)`` or ``no engine``."""
    with _lock:
        if _global:
            return "every engine"
        n = sum(1 for ref in _own.values() if ref() is not None)
        return f"{n} engine{'s' if n != 1 else ''}" if n else "no engine"


def engine_state(engine: Engine) -> dict[str, Any]:
    """One engine's state as an ``EngineState`` dict: compiled-statement cache and pool use."""
    return state_dict(_engine_figures(engine))


_names: dict[int, tuple[weakref.ref[Any], str]] = {}  # id(engine) -> (engine, its name), weakly
_MAX_NAMES = 64


def _engine_name(engine: Any) -> str:
    found = _names.get(id(engine))
    if found is not None and found[0]() is engine:
        return found[1]
    url = engine.url
    name = f"{url.drivername}:{url.database or ''}"
    if len(_names) >= _MAX_NAMES:
        for dead in [key for key, (ref, _name) in list(_names.items()) if ref() is None]:
            del _names[dead]
    if len(_names) < _MAX_NAMES:
        _names[id(engine)] = (weakref.ref(engine), name)
    return name


def _engine_figures(engine: Engine) -> tuple[str, int | None, int | None, int | None, int | None]:
    """What ``EngineState`` holds, as read now (request end): plain values; the dict is built by
    :func:`state_dict` on the background thread."""
    cache = engine._compiled_cache
    pool = engine.pool
    checked_out = getattr(pool, "checkedout", None)
    size = getattr(pool, "size", None)
    return (
        _engine_name(engine),
        len(cache) if cache is not None else None,
        getattr(cache, "capacity", None),
        checked_out() if callable(checked_out) else None,
        size() if callable(size) else None,
    )


def engine_states() -> list[dict[str, Any]]:
    """The state of every engine memprof knows (instrumented, or seen executing SQL), for dumps."""
    out = []
    for ref in list(_sqla_events.ENGINES.values()):
        engine = ref()
        if engine is not None:
            try:
                out.append(engine_state(engine))
            except Exception as exc:
                internal_error("sqlalchemy.engine_state", exc)
    return out


def _on_finish(profile: RequestProfile, scope: Scope) -> None:
    """Request end (full profiles): identity-map sizes of the Sessions used, state of the engines."""
    models = profile.sections.get("models")
    if models is not None:
        models.request_end()  # type: ignore[attr-defined]
    queries = profile.sections.get("queries")
    if isinstance(queries, QueryCollector) and queries.engines:
        states = []
        for engine_id in queries.engines:
            ref = _sqla_events.ENGINES.get(engine_id)
            engine = ref() if ref is not None else None
            if engine is not None:
                states.append(_engine_figures(engine))
        profile.sections["engines"] = EngineCollector(states)


def unattributed() -> dict[str, Any]:
    """SQL executed in this process outside any profiled request: count, time, top statements."""
    return _sqla_events.UNATTRIBUTED.snapshot()


def reset_unattributed() -> None:
    """Forget the unattributed counts (tests, or after reading them)."""
    _sqla_events.UNATTRIBUTED.reset()


def _compiled_caches() -> list[dict[str, Any]]:
    """Cache entries for state records and dumps: each known engine's compiled-statement cache."""
    out = []
    for data in engine_states():
        if data.get("compiled_cache") is not None:
            maxsize = data.get("compiled_cache_max")
            out.append(
                {
                    "name": f"{data.get('name', 'engine')} compiled cache",
                    "kind": "sqlalchemy_compiled",
                    "size": data["compiled_cache"],
                    "maxsize": maxsize,
                    "unbounded": maxsize is None,
                }
            )
    return out


# What the watchdog records: the compiled caches and the SQL run outside requests.
events.add_state_source("sqlalchemy", _compiled_caches)
events.set_sql_outside_source(unattributed)


def _reinit_after_fork() -> None:
    """A forked child: fresh locks (an app thread may have held one at the fork; see memprof.forksafe)."""
    global _lock
    _lock = threading.RLock()
    _sqla_events.UNATTRIBUTED.reinit_after_fork()


os.register_at_fork(after_in_child=_reinit_after_fork)
