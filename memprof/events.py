"""Process-level events that integrations listen to, and state they contribute, without the core knowing them.

The core announces (:func:`guard_tripped`, :func:`dump_written`); integrations register listeners
(OpenTelemetry counts trips and dumps). Integrations also contribute to what the watchdog records:
cache entries for state lines and dumps (:func:`add_state_source`: SQLAlchemy's compiled caches), the
count of SQL run outside requests (:func:`set_sql_outside_source`), and per-request sections of a dump
(:func:`add_dump_section`: the session). Every listener and source is called guarded: a failing one is
counted as an internal error and never reaches the caller.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from typing import Any

from memprof.safety.isolation import internal_error

Listener = Callable[[str], None]
StateSource = Callable[[], list[dict[str, Any]]]
DumpSection = Callable[[MutableMapping[str, Any]], Any]

_GUARD_TRIP: list[Listener] = []
_DUMP_WRITTEN: list[Listener] = []
_STATE_SOURCES: dict[str, StateSource] = {}
_DUMP_SECTIONS: dict[str, DumpSection] = {}
_SQL_OUTSIDE: list[Callable[[], dict[str, Any]]] = []


def on_guard_trip(listener: Listener) -> None:
    """Call ``listener(kind)`` when a guard trips (memory, overhead, circuit_breaker, kill_switch)."""
    if listener not in _GUARD_TRIP:
        _GUARD_TRIP.append(listener)


def on_dump_written(listener: Listener) -> None:
    """Call ``listener(trigger)`` after each dump written."""
    if listener not in _DUMP_WRITTEN:
        _DUMP_WRITTEN.append(listener)


def remove_listener(listener: Listener) -> None:
    """Stop calling ``listener`` for any event."""
    for listeners in (_GUARD_TRIP, _DUMP_WRITTEN):
        if listener in listeners:
            listeners.remove(listener)


def _emit(listeners: list[Listener], label: str, place: str) -> None:
    for listener in list(listeners):
        try:
            listener(label)
        except Exception as exc:
            internal_error(place, exc)


def guard_tripped(kind: str) -> None:
    """A guard tripped: tell the listeners. Never raises."""
    _emit(_GUARD_TRIP, kind, "event_guard_trip")


def dump_written(trigger: str) -> None:
    """A dump was written: tell the listeners. Never raises."""
    _emit(_DUMP_WRITTEN, trigger, "event_dump_written")


def add_state_source(name: str, source: StateSource) -> None:
    """Contribute cache entries (``{"name", "kind", "size", "maxsize", "unbounded"}``) to state records."""
    _STATE_SOURCES[name] = source


def state_entries() -> list[dict[str, Any]]:
    """Every contributed cache entry (background threads only)."""
    out: list[dict[str, Any]] = []
    for name, source in list(_STATE_SOURCES.items()):
        try:
            out.extend(source())
        except Exception as exc:
            internal_error(f"state_source:{name}", exc)
    return out


def set_sql_outside_source(source: Callable[[], dict[str, Any]]) -> None:
    """The source of the count of SQL run outside profiled requests (the SQLAlchemy integration)."""
    _SQL_OUTSIDE[:] = [source]


def sql_outside() -> dict[str, Any] | None:
    """SQL run outside profiled requests, or None when no integration counts it."""
    for source in _SQL_OUTSIDE:
        try:
            return source()
        except Exception as exc:
            internal_error("state_sql_outside", exc)
    return None


def add_dump_section(name: str, section: DumpSection) -> None:
    """Contribute a section of a dump about the request it names (``section(scope)``)."""
    _DUMP_SECTIONS[name] = section


def dump_sections(scope: MutableMapping[str, Any]) -> dict[str, Any]:
    """The contributed sections for the request of ``scope``; a failing one is None."""
    out: dict[str, Any] = {}
    for name, section in list(_DUMP_SECTIONS.items()):
        try:
            out[name] = section(scope)
        except Exception as exc:  # e.g. the app changed its session while it was read
            internal_error(f"dump_{name}", exc)
            out[name] = None
    return out
