"""Workers killed since the last start: flight-recorder files left behind by dead workers of this host.

Read-only: the crash record is built in memory (as ``memprof postmortem`` or the next start would
write it) and never written, so analysing a data dir changes nothing in it. A worker file with fields of
the wrong type is reported (``on_bad``) and left where it is.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from memprof.analysis.documents import integer, num
from memprof.records.versions import WORKER_SCHEMA
from memprof.watchdog.flight import WORKERS_DIR, crash_record
from memprof.workers import worker_alive


def check_worker(doc: Any) -> str | None:
    """Why a flight-recorder worker file cannot be turned into a crash record (None: it can)."""
    if not isinstance(doc, dict) or doc.get("schema") != WORKER_SCHEMA:
        return "not a memprof worker file"
    pid = integer(doc.get("pid"))
    if pid is None or not 0 < pid < 2**31:
        return "pid is not a process id"
    for key in ("started", "last_seen"):
        if doc.get(key) is not None and num(doc.get(key)) is None:
            return f"{key} is not a time"
    for key in ("rss", "limit", "peak", "inflight_total"):
        if doc.get(key) is not None and integer(doc.get(key)) is None:
            return f"{key} is not an integer"
    if not isinstance(doc.get("host", ""), str):
        return "host is not a string"
    inflight = doc.get("inflight")
    if inflight is not None and not (
        isinstance(inflight, list) and all(isinstance(r, dict) for r in inflight)
    ):
        return "inflight is not a list of requests"
    return None


def dead_worker_crashes(
    paths: list[str], on_bad: Callable[[str, str], None] | None = None
) -> Iterator[tuple[dict[str, Any], str]]:
    """``(crash record, worker file)`` for each worker file of this host whose process is gone."""
    import orjson

    host = socket.gethostname()
    for raw in paths:
        workers = Path(raw) / WORKERS_DIR
        if raw == "-" or not workers.is_dir():
            continue
        for path in sorted(workers.glob("*.json")):
            try:
                if not path.is_file() or path.stat().st_size > 16 * 1024 * 1024:
                    raise ValueError("not a regular file of a sane size")
                doc = orjson.loads(path.read_bytes())
            except (OSError, ValueError) as exc:
                if on_bad is not None:
                    on_bad(str(path), f"unreadable worker file: {str(exc)[:200]}")
                continue
            problem = check_worker(doc)
            if problem is not None:
                if on_bad is not None and not (isinstance(doc, dict) and doc.get("schema") != WORKER_SCHEMA):
                    on_bad(str(path), f"invalid worker file: {problem}")
                continue
            pid = int(doc["pid"])
            if doc.get("host") != host or pid == os.getpid():
                continue  # another host's worker cannot be checked from here
            if worker_alive(pid, float(doc.get("started") or 0)):
                continue
            yield crash_record(doc, "postmortem"), str(path)
