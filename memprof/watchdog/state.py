"""Cache state: ``functools.lru_cache`` functions, SQLAlchemy caches and user providers, over time.

Caches are discovered once by scanning loaded modules (module-level functions and methods of
module-level classes), and again for modules loaded since the last scan; they are held by weak
reference. :func:`snapshot` reads each cache's size and max size, empty caches included (so growth from
empty shows), and estimates the bytes each holds from a bounded sample of its entries
(:mod:`memprof.watchdog.state_bytes`). The watchdog records a snapshot at start-up, 10, 30 and 60 s
later, then every ``MEMPROF_STATE_INTERVAL_S``, at every dump and at shutdown as ``memprof.state``
lines in ``DATA_DIR/state-<start>-<pid>.jsonl``, so a cache that only grows is visible long before memory
runs out.

Apps add their own with :func:`register_state`: ``fn()`` returns a size (an int), a sized container
(its bytes are estimated too), or a mapping with ``size`` and optionally ``maxsize`` and ``bytes``.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import sysconfig
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from memprof import events
from memprof.background import acquire
from memprof.files import append_whole
from memprof.records.versions import STATE_SCHEMA, STATE_VERSION
from memprof.safety.isolation import internal_error
from memprof.watchdog.state_bytes import Budget, container_bytes, lru_bytes


def _is_memprof_internal(module_name: str) -> bool:
    """memprof's own modules are not the app's caches (its bundled demo app is an app like any other)."""
    return module_name.split(".", 1)[0] == "memprof" and not module_name.startswith("memprof.demo")


LOCK_WAIT_S = 1.0  # the locks below guard a scan or a copy; past this the step is skipped (shutdown)
MAX_CACHES = 300  # per observation; the unbounded and the largest ones are kept first
KEEP_STATE_FILES = 100  # state files of past processes kept in a data dir, newest first

StateProvider = Callable[[], Any]

_providers: dict[str, StateProvider] = {}
_lock = threading.Lock()


def register_state(name: str, fn: StateProvider) -> None:
    """Report a cache or store of your own in memprof's state observations and dumps.

    ``fn()`` is called from memprof's background thread (never on the request path) and returns the
    current size: an ``int``, a sized container (its ``len``; its bytes are estimated from a sample of its
    entries), or a mapping ``{"size": n, "maxsize": m, "bytes": b}`` (``maxsize`` None or absent:
    unbounded; ``bytes`` optional). Registering a name again replaces the provider.
    """
    if not callable(fn):
        raise TypeError(f"register_state({name!r}, fn): fn must be callable")
    with _lock:
        _providers[str(name)] = fn


def unregister_state(name: str) -> None:
    """Forget a provider registered with :func:`register_state`."""
    with _lock:
        _providers.pop(name, None)


def _stdlib_prefixes() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    site = (paths["purelib"], paths["platlib"])
    out = {paths["stdlib"], paths["platstdlib"]} - set(site)
    return tuple(p.rstrip(os.sep) + os.sep for p in out)


class CacheRegistry:
    """lru_cache functions found in loaded modules, held weakly, rescanned as modules load."""

    def __init__(self) -> None:
        self._found: dict[str, weakref.ref[Any]] = {}
        self._scanned: set[str] = set()
        self._skip_prefixes = _stdlib_prefixes()
        self._lock = threading.Lock()

    def discover(self) -> int:
        """Scan modules loaded since the last call; return how many caches are known."""
        if not acquire(self._lock, LOCK_WAIT_S, "the cache registry"):
            return len(self._found)
        try:
            # Every name, not a count: a module removed and another loaded leave the count unchanged.
            for mod_name, module in list(sys.modules.items()):
                if mod_name in self._scanned:
                    continue
                self._scanned.add(mod_name)
                if module is None or _is_memprof_internal(mod_name) or self._is_stdlib(module):
                    continue
                try:
                    self._scan(mod_name, module)
                except Exception:  # a module with a hostile __dict__ is skipped, not an error
                    continue
            return len(self._found)
        finally:
            self._lock.release()

    def reinit_after_fork(self) -> None:
        """A forked child: a fresh lock, and the scan starts over (a fork may have cut one short)."""
        self._lock = threading.Lock()
        self._found = {}
        self._scanned = set()

    def _is_stdlib(self, module: Any) -> bool:
        file = getattr(module, "__file__", None)
        if not isinstance(file, str):
            return True  # builtins and namespace packages have no caches of interest
        return file.startswith(self._skip_prefixes) and "site-packages" not in file

    def _scan(self, mod_name: str, module: Any) -> None:
        namespace = getattr(module, "__dict__", None)
        if not isinstance(namespace, dict):
            return
        for attr, value in list(namespace.items()):
            if _is_lru(value):
                self._add(f"{mod_name}.{attr}", value, mod_name)
            elif isinstance(value, type) and getattr(value, "__module__", None) == mod_name:
                for cattr, cvalue in list(vars(value).items()):
                    func = getattr(cvalue, "__func__", cvalue)  # staticmethod / classmethod
                    if _is_lru(func):
                        self._add(f"{mod_name}.{value.__qualname__}.{cattr}", func, mod_name)

    def _add(self, name: str, func: Any, mod_name: str) -> None:
        if getattr(func, "__module__", mod_name) != mod_name:
            return  # a cache imported from elsewhere is reported where it is defined
        if name not in self._found:
            try:
                self._found[name] = weakref.ref(func)
            except TypeError:
                pass

    def observe(self, budget: Budget) -> list[dict[str, Any]]:
        """Size, max size and estimated bytes of every live cache found, empty ones included (a cache
        that grows from empty is seen from its first observation); the largest are sized first."""
        found = []
        if not acquire(self._lock, LOCK_WAIT_S, "the cache registry"):
            return []
        try:
            items = list(self._found.items())
        finally:
            self._lock.release()
        for name, ref in items:
            func = ref()
            if func is None:
                continue
            try:
                info = func.cache_info()
            except Exception:
                continue
            found.append((int(info.currsize), name, func, info.maxsize))
        found.sort(key=lambda item: -item[0])
        out = []
        for size, name, func, maxsize in found:
            try:
                estimate = lru_bytes(func, size, maxsize, budget)
            except Exception as exc:
                internal_error("state_cache_bytes", exc)
                estimate = None
            out.append(_entry(name, "lru_cache", size, maxsize, estimate))
        return out


_LRU_TYPE: type = functools._lru_cache_wrapper


def _is_lru(value: Any) -> bool:
    # The exact type: duck typing would take any object whose __getattr__ answers everything.
    return isinstance(value, _LRU_TYPE)


def _entry(
    name: str, kind: str, size: int | None, maxsize: int | None, bytes_estimate: int | None = None
) -> dict[str, Any]:
    return {
        "name": name,
        "kind": kind,
        "size": size,
        "maxsize": maxsize,
        "unbounded": maxsize is None,
        "bytes_estimate": bytes_estimate,
    }


def _provider_entries(budget: Budget) -> list[dict[str, Any]]:
    if not acquire(_lock, LOCK_WAIT_S, "the state providers"):
        return []
    try:
        providers = list(_providers.items())
    finally:
        _lock.release()
    out = []
    for name, fn in providers:
        try:
            value = fn()
            maxsize: int | None = None
            estimate: int | None = None
            if isinstance(value, Mapping):
                size = value.get("size")
                maxsize = value.get("maxsize")
                estimate = value.get("bytes")
                estimate = None if estimate is None else int(estimate)
            elif isinstance(value, bool):
                raise TypeError("a provider must return a size, not a bool")
            elif isinstance(value, int):
                size = value
            else:
                size = len(value)
                estimate = container_bytes(value, size, budget)
            del value
            out.append(_entry(name, "provider", None if size is None else int(size), maxsize, estimate))
        except Exception as exc:
            internal_error(f"state_provider:{name}", exc)
    return out


MAX_IDENTITY_MAPS = 50


def _identity_maps() -> list[dict[str, Any]]:
    """Identity maps of live ORM Sessions (SQLAlchemy keeps a weak registry of them), largest first."""
    module = sys.modules.get("sqlalchemy.orm.session")
    registry_ = getattr(module, "_sessions", None)
    if registry_ is None:
        return []
    sizes = []
    for session in list(registry_.values()):
        size = len(session.identity_map)
        if size:
            sizes.append((size, type(session).__name__))
    sizes.sort(reverse=True)
    # Named by rank, not by session: sessions come and go, "the largest identity map" is a series.
    return [
        _entry(f"{cls} identity map #{rank}", "identity_map", size, None)
        for rank, (size, cls) in enumerate(sizes[:MAX_IDENTITY_MAPS], start=1)
    ]


registry = CacheRegistry()


def reinit_after_fork() -> None:
    """In a forked child (see :mod:`memprof.forksafe`): fresh locks for the providers and the registry."""
    global _lock
    _lock = threading.Lock()
    registry.reinit_after_fork()


def snapshot(discover: bool = True) -> list[dict[str, Any]]:
    """Every known cache with its size: lru_caches, SQLAlchemy caches, providers. Not for the request path."""
    if discover:
        registry.discover()
    budget = Budget()
    caches = registry.observe(budget)
    try:
        caches.extend(_identity_maps())
    except Exception as exc:
        internal_error("state_identity_maps", exc)
    caches.extend(events.state_entries())
    caches.extend(_provider_entries(budget))
    if len(caches) > MAX_CACHES:
        caches.sort(key=lambda c: (c["kind"] == "lru_cache", not c["unbounded"], -(c["size"] or 0)))
        caches = caches[:MAX_CACHES]
    caches.sort(key=lambda c: c["name"])
    return caches


MAX_OUTSIDE_STATEMENTS = 20


def sql_outside_requests() -> dict[str, Any] | None:
    """SQL run outside profiled requests, as the SQLAlchemy integration counts it (None without it:
    memprof never imports SQLAlchemy for an app that does not use it)."""
    data = events.sql_outside()
    if data is None:
        return None
    data["statements"] = data["statements"][:MAX_OUTSIDE_STATEMENTS]
    return data


class StateLog:
    """Appends ``memprof.state`` observations to ``DATA_DIR/state-<start>-<pid>.jsonl``."""

    def __init__(self, data_dir: Path, host: str) -> None:
        self.data_dir = data_dir
        self.host = host
        self.pid = os.getpid()
        self.path = data_dir / f"state-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{self.pid}.jsonl"
        self._pruned = False
        _LOGS[data_dir] = self

    def _prune(self) -> None:
        files = sorted(self.data_dir.glob("state-*.jsonl"), key=lambda p: p.name, reverse=True)
        for old in files[KEEP_STATE_FILES:]:
            if old != self.path:
                try:
                    old.unlink()
                except OSError:
                    pass

    def record(self, phase: str, caches: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Observe every cache now (unless ``caches`` were just observed) and append one line with
        ``phase`` (startup, periodic, dump, shutdown)."""
        pid = os.getpid()
        record = {
            "schema": STATE_SCHEMA,
            "version": STATE_VERSION,
            "time": time.time(),
            "pid": pid,
            "host": self.host,
            "worker": f"{self.host}:{pid}",
            "phase": phase,
            "caches": snapshot() if caches is None else caches,
        }
        outside = sql_outside_requests()
        if outside is not None:
            record["sql_outside_requests"] = outside
        if self._pruned and not self.data_dir.is_dir():
            return record  # the data dir was removed on purpose: do not bring it back
        line = json.dumps(record, separators=(",", ":"), default=str) + "\n"
        append_whole(self.path, line.encode())
        if not self._pruned:
            self._pruned = True
            self._prune()
        return record


# The state log of each data dir in this process (the watchdog's), for the observation at each dump.
_LOGS: weakref.WeakValueDictionary[Path, StateLog] = weakref.WeakValueDictionary()


def record_at_dump(data_dir: Path, caches: list[dict[str, Any]]) -> None:
    """A dump just observed ``caches``: the same observation goes to the data dir's state log (phase
    ``dump``), so the series of cache sizes is whole in one place. Nothing when no watchdog keeps a log."""
    log = _LOGS.get(data_dir)
    if log is not None and log.pid == os.getpid():
        log.record("dump", caches)
