"""Hand-built memprof records in the exact shapes the runtime writes, for tests, benchmarks and docs.

Each builder returns a plain dict; keyword arguments override or add sections. Nothing here is used by
the analysis itself.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

MIB = 1024 * 1024
T0 = 1_764_400_000.0  # 2025-11-29T07:06:40Z


def sample(
    route: str = "/items/{item_id}",
    *,
    t: float = T0,
    rss: int = 100 * MIB,
    growth: int = 0,
    worker: str = "api-1:100",
    status: int = 200,
    limit: int | None = 1024 * MIB,
    phases: list[tuple[str, int]] | None = None,
    heap: tuple[int, int, int] | None = None,
    **sections: Any,
) -> dict[str, Any]:
    """A ``sample`` record: memory grows by ``growth`` bytes, in ``phases`` ((checkpoint, growth) pairs).
    ``heap`` = ``(start, peak, end)`` in bytes makes it a 1.1 record with ``memory.heap``."""
    host, _, pid = worker.partition(":")
    phases = (
        phases if phases is not None else [("app_start", 0), ("response_start", growth), ("response_end", 0)]
    )
    checkpoints = [{"name": "request_start", "ms": 0.0, "rss": rss}]
    current = rss
    for i, (name, grow) in enumerate(phases):
        current += grow
        checkpoints.append({"name": name, "ms": float(i + 1), "rss": current})
    checkpoints.append({"name": "request_end", "ms": float(len(phases) + 1), "rss": current})
    record: dict[str, Any] = {
        "schema": "memprof.sample",
        "version": "1.1" if heap else "1.0",
        "time": t,
        "pid": int(pid or 0),
        "host": host,
        "worker": worker,
        "mode": "aggressive",
        "detail": "full" if sections else "checkpoints",
        "request": {
            "id": f"r{int(t * 1000) % 10**9}",
            "method": "GET",
            "path": route.replace("{", "").replace("}", ""),
            "route": route,
            "status": status,
            "duration_ms": 5.0,
            "error": None,
        },
        "memory": {
            "limit": limit,
            "limit_source": "setting" if limit else None,
            "rss_start": rss,
            "rss_end": current,
            "rss_delta": current - rss,
            "peak": max(rss, current),
            "raised_peak": current > rss,
            "concurrency": {"at_start": 1, "max": 1},
            "shared": False,
        },
        "checkpoints": checkpoints,
        "dropped_checkpoints": 0,
        "overhead_ms": 0.01,
    }
    if heap:
        start, peak, end = heap
        record["memory"]["heap"] = {"start": start, "peak": peak, "end": end, "source": "tracemalloc"}
        for cp in checkpoints:
            cp["heap"] = start if cp["name"] == "request_start" else end
    record.update(sections)
    return record


def statement(
    sql: str, count: int = 1, *, rows: int = 1, instances: int = 1, rss_delta: int = 0, **extra: Any
) -> dict[str, Any]:
    """One entry of ``queries.statements``."""
    return {"sql": sql, "count": count, "total_ms": 0.5 * count, "max_ms": 0.5, "rss_delta_max": rss_delta,
            "rows": rows, "instances": instances, "n_plus_one": False, "lazy": False, "frame": None, **extra}  # fmt: skip


def queries(*statements: dict[str, Any]) -> dict[str, Any]:
    """A ``queries`` section holding ``statements``."""
    flagged = [s for s in statements if s.get("n_plus_one")]
    return {"count": sum(s["count"] for s in statements), "total_ms": sum(s["total_ms"] for s in statements),
            "statements": list(statements), "dropped_statements": 0, "n_plus_one": flagged or None}  # fmt: skip


def session(size: int, largest: dict[str, int] | None = None, id_hash: str | None = None) -> dict[str, Any]:
    """A ``session`` section."""
    keys = [{"key": k, "size": v} for k, v in (largest or {}).items()]
    return {"size": size, "keys": len(keys), "largest": keys, "id_hash": id_hash, "source": "scope"}


def dump(
    *, t: float = T0, worker: str = "api-1:100", rss: int = 900 * MIB, limit: int = 1024 * MIB,
    trigger: str = "threshold", name: str | None = None, route: str | None = None,
    inflight: list[str] | None = None, objects: dict[str, int] | None = None,
    stacks: list[list[str]] | None = None, caches: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """A ``dump`` record (the shape of :class:`memprof.records.models.Dump`)."""
    host, _, pid = worker.partition(":")
    counts = sorted((objects or {}).items(), key=lambda kv: -kv[1])

    def request(r: str) -> dict[str, Any]:
        return {
            "method": "GET",
            "path": r,
            "route": r,
            "started": t - 1,
            "checkpoints": ["request_start", "app_start"],
        }

    return {
        "schema": "memprof.dump", "version": "1.0", "trigger": trigger, "name": name, "time": t,
        "pid": int(pid or 0), "host": host, "worker": worker, "uptime_s": 60.0,
        "memory": {"rss": rss, "peak": rss, "limit": limit, "limit_source": "setting",
                   "percent": round(100.0 * rss / limit, 2), "threshold": int(limit * 0.9), "cgroup": {}},
        "request": request(route) if route else None,
        "inflight": [request(r) for r in inflight or ()], "inflight_total": len(inflight or ()),
        "objects": {"total": sum(v for _k, v in counts), "types": len(counts),
                    "top": [{"type": k, "count": v} for k, v in counts]},
        "modules": {"count": 0, "largest": []},
        "threads": [{"name": f"Thread-{i}", "ident": i, "daemon": False, "current": i == 0, "stack": st}
                    for i, st in enumerate(stacks or ())],
        "tasks": [], "session": None, "caches": caches or [], "gc": {},
    }  # fmt: skip


def crash(*, worker: str = "api-1:100", last_seen: float = T0, last_rss: int = 1000 * MIB,
          limit: int = 1024 * MIB, inflight: list[str] | None = None) -> dict[str, Any]:  # fmt: skip
    """A flight-recorder ``crash`` record (the shape of :class:`memprof.records.models.Crash`)."""
    host, _, pid = worker.partition(":")
    return {
        "schema": "memprof.crash", "version": "1.0", "pid": int(pid or 0), "host": host, "worker": worker,
        "started": last_seen - 600, "last_seen": last_seen, "uptime_s": 600.0, "last_rss": last_rss,
        "peak": last_rss, "limit": limit, "percent": round(100.0 * last_rss / limit, 2),
        "inflight_total": len(inflight or ()),
        "inflight": [{"method": "GET", "path": r, "route": r, "started": last_seen - 2, "rss_start": last_rss - MIB}
                     for r in inflight or ()],
        "detected_at": last_seen + 5, "detected_by": "startup",
    }  # fmt: skip


def state(
    caches: list[dict[str, Any]], *, t: float = T0, worker: str = "api-1:100", phase: str = "periodic"
) -> dict[str, Any]:
    """A ``state`` record (cache observations)."""
    host, _, pid = worker.partition(":")
    return {"schema": "memprof.state", "version": "1.0", "time": t, "pid": int(pid or 0), "worker": worker,
            "host": host, "phase": phase, "caches": caches}  # fmt: skip


def cache(
    name: str,
    size: int,
    maxsize: int | None = None,
    kind: str = "lru_cache",
    bytes_estimate: int | None = None,
) -> dict[str, Any]:
    """One cache observation (``bytes_estimate``: the runtime's estimate of its memory, 1.1)."""
    out = {"name": name, "kind": kind, "size": size, "maxsize": maxsize, "unbounded": maxsize is None}
    if bytes_estimate is not None:
        out["bytes_estimate"] = bytes_estimate
    return out


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> Path:
    """Write records as JSON Lines (creating parent dirs); return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec, separators=(",", ":")) + "\n")
    return path


def write_json(path: Path, record: dict[str, Any]) -> Path:
    """Write one record as a JSON document (a dump or crash file); return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    return path
