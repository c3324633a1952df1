"""Critical dumps: the whole state of the process in one JSON file, written before memory runs out.

A dump (``memprof.dump`` record, see :class:`memprof.records.models.Dump`) holds memory figures with the
cgroup's, the current request and every in-flight request, object counts by type, loaded modules,
the stacks of every thread and asyncio task (no local variables), the current request's session
breakdown, cache state and gc statistics; tracemalloc's top sites only when the user turned tracing on.

Files: ``DATA_DIR/dumps/dump-<UTC time>-<pid>-<trigger>[-<name>].json``, written to a temporary file,
fsynced and renamed (a reader never sees a partial dump), mode 0600 in a 0700 directory, capped in
size; after each successful write, dumps past the count, age or total-size limits are removed, oldest
first. One process lock makes sure two dumps are never taken at once.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from memprof import events
from memprof.files import ensure_private_dir, write_private
from memprof.heap import heap_bytes
from memprof.memory import cgroup_memory, peak_rss_bytes, rss_bytes
from memprof.profile import RequestProfile, current_profile
from memprof.records.versions import DUMP_SCHEMA, DUMP_VERSION
from memprof.routes import find_route_template, route_template
from memprof.runtime import Runtime, Scope, current_runtime
from memprof.safety.isolation import internal_error
from memprof.safety.redaction import redact_request
from memprof.watchdog import collect
from memprof.watchdog.retention import apply_retention, dump_filename
from memprof.watchdog.state import record_at_dump, snapshot

TRIGGERS = ("threshold", "custom", "manual", "memory_error", "signal")
DUMPS_DIR = "dumps"
MAX_INFLIGHT = 100

_lock = threading.Lock()  # never two dumps at once in one process
_MB = 1024 * 1024


def dumps_dir(data_dir: Path) -> Path:
    """Where dumps of a data dir go."""
    return data_dir / DUMPS_DIR


def request_summary(runtime: Runtime, profile: RequestProfile) -> dict[str, Any]:
    """A small description of an in-flight request: method, path, route template, start, RSS at start."""
    summary = profile.summary()
    summary["detail"] = "full" if profile.full else "checkpoints"
    scope = runtime.scopes.get(profile.request_id)
    if summary.get("route") is None and scope is not None:
        summary["route"] = find_route_template(scope)  # a profiled request: its table may be walked
    return redact_request(summary)


def unprofiled_summary(started: float, scope: Scope) -> dict[str, Any]:
    """The same description of an in-flight request memprof does not profile (no RSS at start)."""
    return redact_request(
        {
            "method": scope.get("method", ""),
            "path": scope.get("path", ""),
            "route": route_template(scope) if "route" in scope or "router" not in scope else None,
            "started": started,
            "elapsed_ms": round((time.time() - started) * 1000.0, 3),
            "detail": "unprofiled",
        }
    )


def inflight_summaries(runtime: Runtime, limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` requests in flight, profiled first, then the others, oldest first in each."""
    out = [request_summary(runtime, p) for p in list(runtime.active.values())[:limit]]
    if len(out) < limit:
        others = sorted(list(runtime.unprofiled.values()), key=lambda entry: entry[0])
        out.extend(unprofiled_summary(started, scope) for started, scope in others[: limit - len(out)])
    return out


def pick_request(runtime: Runtime, profile: RequestProfile | None = None) -> RequestProfile | None:
    """The request a dump is about: the given one, the caller's own, else the costliest in flight."""
    if profile is None:
        profile = current_profile()
    if profile is not None and not profile.finished:
        return profile
    return costliest(runtime)


def costliest(runtime: Runtime, fallback: RequestProfile | None = None) -> RequestProfile | None:
    """The profiled request in flight whose heap grew the most (its highest reading minus its start);
    when none grew: ``fallback`` if still in flight, else the longest-running one."""
    active = [p for p in list(runtime.active.values()) if not p.finished]
    if not active:
        return None
    best = max(active, key=lambda p: (p.heap_growth, -p.start_ns))
    if best.heap_growth > 0:
        return best
    if fallback is not None and fallback.request_id in runtime.active:
        return fallback
    return min(active, key=lambda p: p.start_ns)


def build_dump(
    runtime: Runtime,
    trigger: str,
    name: str | None,
    profile: RequestProfile | None,
    request: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Collect a dump record. Takes about 100 ms on a 200 MB heap (see docs/performance.md)."""
    now = time.time()
    rss = rss_bytes()
    limit = runtime.limit
    pid = os.getpid()
    settings = runtime.settings
    memory: dict[str, Any] = {
        "rss": rss,
        "peak": peak_rss_bytes(),
        "limit": limit.bytes,
        "limit_source": limit.source,
        "percent": round(100.0 * rss / limit.bytes, 2) if limit.bytes else None,
        "threshold": int(limit.bytes * settings.dump_threshold),
        "cgroup": cgroup_memory(),
        "tracemalloc": collect.tracemalloc_top() if settings.tracemalloc > 0 else None,
    }
    memory["heap"], memory["heap_source"] = heap_bytes()
    # Sections integrations contribute about the request (the session's breakdown).
    sections: dict[str, Any] = {"session": None}
    if profile is not None and request is None:
        request = request_summary(runtime, profile)
        scope = runtime.scopes.get(profile.request_id)
        if scope is not None:
            sections.update(events.dump_sections(scope))
    elif request is not None:
        request = redact_request(dict(request))  # made on the request path (a MemoryError): raw
    return {
        "schema": DUMP_SCHEMA,
        "version": DUMP_VERSION,
        "trigger": trigger,
        "name": name,
        "time": now,
        "pid": pid,
        "host": runtime.host,
        "worker": f"{runtime.host}:{pid}",
        "uptime_s": round(now - runtime.started, 3),
        "memory": memory,
        "memory_guard": bool(getattr(runtime, "memory_guard", False)),
        "request": request,
        "inflight": inflight_summaries(runtime, MAX_INFLIGHT),
        "inflight_total": runtime.inflight,
        "objects": collect.object_counts(),
        "modules": collect.modules(),
        "threads": collect.thread_stacks(),
        "tasks": collect.task_stacks(_loop(runtime)),
        **sections,
        "caches": snapshot(),
        "gc": collect.gc_stats(),
        "truncated": False,
    }


def _loop(runtime: Runtime) -> Any:
    ref = getattr(runtime, "loop_ref", None)
    return ref() if ref is not None else None


# Sections shortened, in this order, until a dump fits its size cap.
_TRIMS: list[tuple[str, int]] = [("tasks", 20), ("inflight", 20), ("caches", 50), ("modules", 0)]


def _encode(record: dict[str, Any], cap: int) -> bytes:
    data = json.dumps(record, separators=(",", ":"), default=str).encode()
    for key, keep in _TRIMS:
        if len(data) <= cap:
            break
        record["truncated"] = True
        value = record.get(key)
        if isinstance(value, list):
            record[key] = value[:keep]
        elif isinstance(value, dict) and "largest" in value:
            value["largest"] = value["largest"][:keep]
        data = json.dumps(record, separators=(",", ":"), default=str).encode()
    if len(data) > cap:
        for thread in record.get("threads", []):
            thread["stack"] = thread["stack"][-10:]
        for task in record.get("tasks", []):
            task["stack"] = task["stack"][-10:]
        record["objects"]["top"] = record["objects"]["top"][:20]
        data = json.dumps(record, separators=(",", ":"), default=str).encode()
    return data


def write_dump(
    runtime: Runtime,
    trigger: str,
    name: str | None = None,
    profile: RequestProfile | None = None,
    *,
    request: dict[str, Any] | None = None,
    wait: float = 10.0,
) -> Path | None:
    """Take and write one dump. Returns its path, or None when another dump held the lock past ``wait``."""
    if trigger not in TRIGGERS:
        raise ValueError(f"unknown dump trigger {trigger!r}; one of {', '.join(TRIGGERS)}")
    if not _lock.acquire(timeout=wait):
        return None
    try:
        settings = runtime.settings
        record = build_dump(runtime, trigger, name, profile, request)
        directory = ensure_private_dir(dumps_dir(settings.data_dir))
        os.chmod(directory, 0o700)
        path = directory / dump_filename(record["time"], record["pid"], trigger, name)
        caches = list(record["caches"])  # before the size cap may shorten them
        write_private(path, _encode(record, int(settings.dump_max_mb * _MB)))
        apply_retention(
            directory,
            keep=settings.dump_keep,
            max_age_s=settings.dump_max_age_hours * 3600.0,
            max_total_bytes=int(settings.dump_max_total_mb * _MB),
            protect=path,
        )
        events.dump_written(trigger)
    finally:
        _lock.release()
    try:
        record_at_dump(settings.data_dir, caches)
    except Exception as exc:
        internal_error("state_at_dump", exc)
    return path


def reinit_after_fork() -> None:
    """A child forked while a dump ran would otherwise wait for the lock forever."""
    global _lock
    _lock = threading.Lock()


def dump(name: str | None = None) -> str | None:
    """Take a critical dump now (trigger ``custom``) and return its path; None when memprof is off.

    Runs in the caller's thread and takes about 100 ms on a 200 MB heap: call it from a thread
    (``await anyio.to_thread.run_sync(memprof.dump, "name")``) when the event loop must not wait.
    """
    runtime = current_runtime()
    if runtime is None or not runtime.enabled:
        return None
    try:
        path = write_dump(runtime, "custom", name, pick_request(runtime))
    except Exception as exc:
        internal_error("dump", exc)
        return None
    return None if path is None else str(path)
