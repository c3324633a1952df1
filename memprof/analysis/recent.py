"""The most recent samples (``memprof analyze --recent N``), rebuilt from the ``samples`` table in the
shape of a sample record (the fields the analyzer keeps; strings already cut)."""

from __future__ import annotations

from typing import Any

from memprof.analysis.engine import Engine


def record(row: dict[str, Any]) -> dict[str, Any]:
    """A sample record from its ``samples`` row."""
    rec: dict[str, Any] = {
        "schema": "memprof.sample",
        "time": row["time"],
        "pid": row["pid"],
        "host": row["host"],
        "worker": row["worker"],
        "mode": row["mode"],
        "detail": row["detail"],
        "request": {"method": row["method"], "path": row["path"], "route": row["route"], "status": row["status"],
                    "duration_ms": row["duration_ms"], "error": row["error"]},
        "memory": {"limit": row["mem_limit"], "rss_start": row["rss_start"], "rss_end": row["rss_end"],
                   "shared": row["shared"]},
        "checkpoints": [{k: v for k, v in cp.items() if v is not None} for cp in row["checkpoints"] or ()],
    }  # fmt: skip
    if row["statements"] is not None or row["query_count"]:
        rec["queries"] = {"count": row["query_count"]}
        if row["statements"] is not None:
            rec["queries"]["statements"] = row["statements"]
    if row["models"]:
        rec["models"] = {"classes": row["models"]}
    if row["scopes"]:
        rec["scopes"] = {"classes": row["scopes"]}
    if row["session_size"] is not None:
        rec["session"] = {"size": row["session_size"], "id_hash": row["session_id"],
                          "largest": row["session_keys"] or []}  # fmt: skip
    if row["engines"]:
        rec["engines"] = row["engines"]
    return rec


def recent_records(e: Engine, paths: list[str], n: int) -> list[tuple[dict[str, Any], str]]:
    """The ``n`` most recent filtered samples, newest first (among equal times, the one read last first)."""
    rows = e.dicts(f"SELECT * FROM s ORDER BY time DESC, file_id DESC, line DESC LIMIT {int(n)}")
    return [(record(r), f"{paths[r['file_id']]}:{r['line']}") for r in rows]
