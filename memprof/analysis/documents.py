"""Dump and crash records (one JSON document each) turned into rows of the ``dumps`` and ``crashes``
tables. They are few (a dump is one file), so Python reads them; every value of the wrong type becomes
null, every string is cut, lists are capped.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from memprof.analysis.engine import MAX_NAME, MAX_TEXT

TOP_OBJECTS = 200
MAX_FRAMES = 2000
MAX_INFLIGHT = 50
MAX_CACHES = 500
MAX_DOCUMENT = 256 * 1024 * 1024


def text(value: Any, n: int = MAX_NAME) -> str | None:
    """A string from a record, cut to ``n`` characters; None for None."""
    if value is None:
        return None
    s = value if isinstance(value, str) else str(value) if isinstance(value, int | float | bool) else None
    if s is None:
        return None
    return s if len(s) <= n else s[: n - 1] + "…"


def num(value: Any) -> float | None:
    """A finite number, or None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        f = float(value)
    except OverflowError:
        return None
    return f if math.isfinite(f) else None


def integer(value: Any) -> int | None:
    """An integer of at most 53 bits (a float with a fraction, a huge or a non-number value: None)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if abs(value) < 2**53 else None
    if isinstance(value, float) and math.isfinite(value) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return None


def _worker(rec: dict[str, Any]) -> str | None:
    return text(rec.get("worker") or f"{text(rec.get('host'))}:{integer(rec.get('pid'))}")


def _stacks(value: Any) -> Iterator[list[Any]]:
    """Stacks of a dump's ``threads``/``tasks``: a list of frames, a list of lists, or objects with frames."""
    if isinstance(value, dict):
        value = list(value.values())
    if not isinstance(value, list):
        return
    for item in value:
        if isinstance(item, str):
            yield [item]
        elif isinstance(item, list):
            yield item
        elif isinstance(item, dict):
            frames = item.get("stack") or item.get("frames") or []
            yield frames if isinstance(frames, list) else []


def _objects(objects: Any) -> list[dict[str, Any]]:
    """Object counts by type: ``{"top": [{"type", "count"}]}`` or a plain ``{type: count}``."""
    pairs: list[tuple[str, int]] = []
    if isinstance(objects, dict) and isinstance(objects.get("top"), list):
        for t in objects["top"]:
            if isinstance(t, dict) and integer(t.get("count")) is not None:
                pairs.append((text(t.get("type")) or "None", integer(t["count"]) or 0))
    elif isinstance(objects, dict):
        pairs = [(text(k) or "", integer(v) or 0) for k, v in objects.items() if integer(v) is not None]
    pairs.sort(key=lambda kv: (-kv[1], kv[0]))
    return [{"type": k, "count": v} for k, v in pairs[:TOP_OBJECTS]]


def caches(value: Any) -> list[dict[str, Any]]:
    """Cache observations of a dump or state record (those with a size)."""
    if isinstance(value, dict):
        value = value.get("lru_caches") or value.get("caches") or []
    out: list[dict[str, Any]] = []
    for c in value if isinstance(value, list) else ():
        if isinstance(c, dict) and integer(c.get("size")) is not None and len(out) < MAX_CACHES:
            maxsize = integer(c.get("maxsize"))
            unbounded = c.get("unbounded", c.get("maxsize") is None)
            out.append({"name": text(c.get("name")), "kind": text(c.get("kind")), "size": integer(c["size"]),
                        "maxsize": maxsize, "unbounded": bool(unbounded) if isinstance(unbounded, bool) else maxsize is None})  # fmt: skip
    return out


def dump_row(rec: dict[str, Any], file_id: int, line: int) -> dict[str, Any]:
    """The ``dumps`` row of a dump record."""
    mem: dict[str, Any] = rec["memory"] if isinstance(rec.get("memory"), dict) else {}
    req = rec.get("request") if isinstance(rec.get("request"), dict) else None
    inflight = (
        [r for r in rec.get("inflight") or () if isinstance(r, dict)]
        if isinstance(rec.get("inflight"), list)
        else []
    )
    phase = None
    if req and isinstance(req.get("checkpoints"), list) and req["checkpoints"]:
        last = req["checkpoints"][-1]
        phase = text("after " + str(text(last.get("name")) if isinstance(last, dict) else text(last)))
    frames: dict[str, None] = {}
    for key in ("threads", "tasks"):
        for stack in _stacks(rec.get(key)):
            for frame in stack:
                f = text(frame, MAX_TEXT)
                if f is not None and len(frames) < MAX_FRAMES:
                    frames[f] = None
    return {
        "file_id": file_id, "line": line, "time": num(rec.get("time")), "worker": _worker(rec),
        "host": text(rec.get("host")), "pid": integer(rec.get("pid")), "trigger": text(rec.get("trigger")),
        "name": text(rec.get("name")), "rss": integer(mem.get("rss")), "mem_limit": integer(mem.get("limit")),
        "percent": num(mem.get("percent")), "route": text(req.get("route")) if req else None, "phase": phase,
        "inflight": [r for r in (text(x.get("route")) for x in inflight[:MAX_INFLIGHT]) if r],
        "objects": _objects(rec.get("objects")), "frames": list(frames), "caches": caches(rec.get("caches")),
    }  # fmt: skip


def crash_row(rec: dict[str, Any], file_id: int, line: int) -> dict[str, Any]:
    """The ``crashes`` row of a crash record."""
    inflight = (
        [r for r in rec.get("inflight") or () if isinstance(r, dict)]
        if isinstance(rec.get("inflight"), list)
        else []
    )
    return {
        "file_id": file_id, "line": line, "worker": _worker(rec), "host": text(rec.get("host")),
        "pid": integer(rec.get("pid")), "started": num(rec.get("started")), "last_seen": num(rec.get("last_seen")),
        "uptime_s": num(rec.get("uptime_s")), "last_rss": integer(rec.get("last_rss")),
        "mem_limit": integer(rec.get("limit")),
        "inflight": [{"method": text(r.get("method")), "route": text(r.get("route")), "started": num(r.get("started")),
                      "rss_start": integer(r.get("rss_start"))} for r in inflight[:MAX_INFLIGHT]],
    }  # fmt: skip
