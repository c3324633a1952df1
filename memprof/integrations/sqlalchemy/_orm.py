"""ORM listeners: instances loaded, created, updated and deleted per mapped class, Sessions used, and
the loader criteria (``with_loader_criteria``) each statement carried.

All of them only read: the class of an instance, the length of an identity map, the options of the
statement being executed. The per-object listener is the hot one (it runs once per object built): it
does one dict lookup and three increments, and it exists only where it is needed, see
:func:`on_begin`.
"""

from __future__ import annotations

import linecache
import time
import weakref
from typing import Any, cast

from sqlalchemy import event
from sqlalchemy.orm.util import LoaderCriteriaOption

from memprof.integrations.sqlalchemy._collectors import (
    MAX_CRITERIA,
    CriteriaStat,
    ModelCollector,
    QueryCollector,
    ScopeCollector,
)
from memprof.integrations.sqlalchemy._frames import short_path
from memprof.integrations.sqlalchemy._params import mask_literals
from memprof.memory import rss_at
from memprof.profile import RequestProfile, _current
from memprof.safety.isolation import internal_error

_DESCRIPTIONS: dict[Any, str] = {}  # criteria key -> description, shared by requests (plain strings)
_MAX_DESCRIPTIONS = 512
# Indexes in a ModelCollector entry: [name, loaded, created, updated, deleted, rss_first, rss_last]
# (on_load writes 1 and 6 as literals: a global lookup per instance is measurable).
_CREATED, _UPDATED, _DELETED, _RSS_LAST = 2, 3, 4, 6


def models_of(profile: RequestProfile) -> ModelCollector:
    """The request's model collector, attached on first use."""
    found = profile.sections.get("models")
    if found is None:
        found = profile.sections["models"] = ModelCollector()
    return cast(ModelCollector, found)


def _full_profile() -> RequestProfile | None:
    profile = _current.get()
    if profile is None or not profile.full or profile.finished:
        return None
    return profile


def _last_rss(profile: RequestProfile) -> int:
    queries = profile.sections.get("queries")
    rss = cast(QueryCollector, queries).last_rss if queries is not None else 0
    return rss or rss_at(time.perf_counter_ns())


def on_load(state: Any, context: Any) -> None:
    """``Mapper.load`` (raw), or through :func:`on_loaded`: one object built from rows. The hot path:
    one contextvar read, an identity check of the class loaded last, three increments (typed loosely
    on purpose: ``cast`` is a call)."""
    profile = _current.get()
    if profile is None or not profile.full or profile.finished:
        return
    try:
        models: Any = profile.sections.get("models")
        if models is not None and models.hot_class is state.class_:
            entry = models.hot_entry
            queries = models.hot_queries
            entry[1] += 1  # loaded
            entry[6] = queries.last_rss  # rss_last
            current = queries.current
            if current is not None:
                current.instances += 1
            return
        _load(profile, state)
    except Exception as exc:
        internal_error("sqlalchemy.load", exc)


def on_loaded(session: Any, state: Any) -> None:
    """``SessionEvents.loaded_as_persistent`` (raw), on one Session: one object built from rows."""
    if not _everywhere:  # the Mapper listener counts it
        on_load(state, None)


def _load(profile: RequestProfile, state: Any) -> None:
    """``on_load`` for a class other than the one loaded last (or before any statement)."""
    sections: Any = profile.sections
    queries = sections.get("queries")
    models = sections.get("models")
    if models is None:
        models = sections["models"] = ModelCollector()
    cls = state.class_
    entry = models.classes.get(id(cls))
    rss = queries.last_rss if queries is not None else 0
    if entry is None:
        entry = models.entry(cls, rss or rss_at(time.perf_counter_ns()))
        if entry is None:
            return
    entry[1] += 1  # loaded
    entry[6] = rss  # rss_last
    if queries is not None:
        if queries.current is not None:
            queries.current.instances += 1
        models.hot_class, models.hot_entry, models.hot_queries = cls, entry, queries


def _count(mapper: Any, index: int) -> None:
    profile = _full_profile()
    if profile is None:
        return
    rss = _last_rss(profile)
    entry = models_of(profile).entry(mapper.class_, rss)
    if entry is not None:
        entry[index] += 1
        entry[_RSS_LAST] = rss


def after_insert(mapper: Any, connection: Any, target: Any) -> None:
    """``Mapper.after_insert``: an instance went from pending to persistent."""
    try:
        _count(mapper, _CREATED)
    except Exception as exc:
        internal_error("sqlalchemy.after_insert", exc)


def after_update(mapper: Any, connection: Any, target: Any) -> None:
    """``Mapper.after_update``: an UPDATE was emitted for an instance."""
    try:
        _count(mapper, _UPDATED)
    except Exception as exc:
        internal_error("sqlalchemy.after_update", exc)


def after_delete(mapper: Any, connection: Any, target: Any) -> None:
    """``Mapper.after_delete``: a DELETE was emitted for an instance."""
    try:
        _count(mapper, _DELETED)
    except Exception as exc:
        internal_error("sqlalchemy.after_delete", exc)


def watch_session(session: Any, *_args: Any) -> None:
    """Session events (``do_orm_execute``, ``after_flush``, ``after_transaction_end``): note the
    Session (weakly) and its identity-map size."""
    profile = _full_profile()
    if profile is None:
        return
    try:
        models_of(profile).watch_session(session)
    except Exception as exc:
        internal_error("sqlalchemy.session", exc)


def on_begin(session: Any, transaction: Any, connection: Any) -> None:
    """``Session.after_begin``: in a full-detail request, note the Session (weakly) and the connection
    it runs its SQL on, and count the objects it builds; elsewhere stop counting them."""
    profile = _current.get()
    if profile is None or not profile.full or profile.finished:
        if _SESSIONS and id(session) in _SESSIONS:
            try:
                _stop_counting(session)
            except Exception as exc:
                internal_error("sqlalchemy.after_begin", exc)
        return
    try:
        if _counting and not _everywhere and id(session) not in _SESSIONS:
            _start_counting(session)
        models_of(profile).watch_session(session, connection)
    except Exception as exc:
        internal_error("sqlalchemy.after_begin", exc)


# -- objects built ----------------------------------------------------------------------------------
# A Mapper ``load`` listener runs for every object built, in every request, profiled or not (about 1 µs
# each). It is added only where (nearly) every request is profiled in full: a runtime configured in
# aggressive mode at sample rate 1 (``count_everywhere``, at start-up). Elsewhere objects are counted by
# a ``loaded_as_persistent`` listener on each Session whose transaction begins in a full-detail request:
# SQLAlchemy asks once per query whether a Session has such listeners
# (``bool(session.dispatch.loaded_as_persistent)`` in orm/loading.py), so the Sessions of light and
# unprofiled requests pay nothing per object; adding one costs about 25 µs, once per Session. A
# Session's listener is added and removed only at its ``after_begin``, in the thread that uses it and
# before it loads anything, and the Mapper listener is never removed while serving: SQLAlchemy's
# listener lists must not change while their event runs ("deque mutated during iteration").
_counting = True  # instrument_sqlalchemy(count_instances=...)
_everywhere = False  # the Mapper ``load`` listener is in place
_SESSIONS: dict[int, weakref.ref[Any]] = {}  # id -> the Sessions with our listener, weakly


def counting_instances() -> bool:
    """Whether ORM objects are counted (``instrument_sqlalchemy(count_instances=...)``)."""
    return _counting


def count_instances(on: bool) -> None:
    """Count ORM objects or not; off removes the listener from every Session that has it (the Mapper
    listener is the caller's to remove)."""
    global _counting, _everywhere
    _counting = on
    if not on:
        _everywhere = False
        for ref in list(_SESSIONS.values()):
            session = ref()
            if session is not None:
                _stop_counting(session)
        _SESSIONS.clear()


def set_everywhere(on: bool) -> None:
    """The Mapper ``load`` listener was added (True) or removed (False) by the caller."""
    global _everywhere
    _everywhere = on


def _start_counting(session: Any) -> None:
    key = id(session)
    event.listen(session, "loaded_as_persistent", on_loaded, raw=True)
    _SESSIONS[key] = weakref.ref(session, lambda _ref: _SESSIONS.pop(key, None))


def _stop_counting(session: Any) -> None:
    ref = _SESSIONS.pop(id(session), None)
    if ref is not None and ref() is session and event.contains(session, "loaded_as_persistent", on_loaded):
        event.remove(session, "loaded_as_persistent", on_loaded)


# -- loader criteria --------------------------------------------------------------------------------
def _target_name(option: Any) -> tuple[int, str]:
    entity = option.entity
    cls = entity.class_ if entity is not None else option.root_entity
    return id(cls), f"{cls.__module__}.{cls.__qualname__}"


def _describe_criteria(option: Any) -> tuple[tuple[Any, ...], str, str, str | None]:
    """(key, kind, description, where) of one LoaderCriteriaOption."""
    original = option._where_crit_orig
    code = getattr(original, "__code__", None) if option.deferred_where_criteria else None
    if code is not None:
        where = f"{short_path(code.co_filename)}:{code.co_firstlineno}"
        key: tuple[Any, ...] = ("lambda", where)
        desc = _DESCRIPTIONS.get(key)
        if desc is None:
            line = linecache.getline(code.co_filename, code.co_firstlineno).strip()
            desc = f"lambda at {where}: {line[:200]}" if line else f"lambda at {where}"
            if len(_DESCRIPTIONS) < _MAX_DESCRIPTIONS:
                _DESCRIPTIONS[key] = desc
        return key, "lambda", desc, where
    # A plain expression: identified by its structure (SQLAlchemy's cache key, without values);
    # its text is compiled once per process and kept, as it costs 50-150 µs.
    cache_key = option.where_criteria._generate_cache_key()
    key = ("expression", hash(cache_key.key) if cache_key is not None else id(original))
    desc = _DESCRIPTIONS.get(key)
    if desc is None:
        desc = mask_literals(str(option.where_criteria))[:300]
        if len(_DESCRIPTIONS) < _MAX_DESCRIPTIONS:
            _DESCRIPTIONS[key] = desc
    return key, "expression", desc, None


def observe_criteria(profile: RequestProfile, options: Any, sql: str) -> None:
    """Count the loader criteria of one executed statement; flag one applied twice to it."""
    scopes: ScopeCollector | None = None
    seen: list[tuple[Any, ...]] = []
    for option in options:
        if not isinstance(option, LoaderCriteriaOption):
            continue
        if scopes is None:
            found = profile.sections.get("scopes")
            if found is None:
                found = profile.sections["scopes"] = ScopeCollector()
            scopes = cast(ScopeCollector, found)
        key, kind, desc, where = _describe_criteria(option)
        cls_id, cls_name = _target_name(option)
        full_key = (*key, cls_id)
        stat = scopes.criteria.get(full_key)
        if stat is None:
            if len(scopes.criteria) >= MAX_CRITERIA:
                scopes.dropped += 1
                continue
            stat = scopes.criteria[full_key] = CriteriaStat(cls_name, kind, desc, where)
        if full_key in seen:
            stat.duplicates += 1
        else:
            seen.append(full_key)
        stat.applied_to(sql)
