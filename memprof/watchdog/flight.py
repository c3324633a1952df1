"""The flight recorder: a small live file per worker that outlives a SIGKILL, and the crash records made
from it.

Each worker keeps ``DATA_DIR/workers/<host>-<pid>.json`` (pid, start time, latest RSS and limit, its
in-flight requests, profiled or not: method, route, start time, RSS at start when profiled), rewritten atomically by the
watchdog (on memprof's background thread) when something changed (at most a few times a second, never on the request path). A
clean shutdown removes it. A file whose worker is gone is evidence of a kill: the next memprof start in
the same data dir, or ``memprof postmortem``, turns it into ``DATA_DIR/crashes/crash-<time>-<pid>.json``
(a ``memprof.crash`` record).
"""

from __future__ import annotations

import json
import os
import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from memprof.files import write_private
from memprof.records.versions import CRASH_SCHEMA, CRASH_VERSION, WORKER_SCHEMA, WORKER_VERSION
from memprof.workers import process_started, worker_alive

WORKERS_DIR = "workers"
CRASHES_DIR = "crashes"
MAX_INFLIGHT = 50
_KEPT = ("id", "method", "path", "route", "started", "rss_start", "heap_growth", "detail")
REFRESH_S = 1.0  # the file is rewritten at most this often (and at least this often: last_seen)
RSS_JUMP = 0.02  # ... unless RSS rose by this fraction of the limit since the last write
_MB = 1024 * 1024


class FlightRecorder:
    """The live file of this worker for one data dir."""

    def __init__(self, data_dir: Path, host: str) -> None:
        self.data_dir = data_dir
        self.host = host
        self.pid = os.getpid()
        self.started = process_started()
        self.path = data_dir / WORKERS_DIR / f"{host}-{self.pid}.json"
        self._written = 0.0
        self._rss_written = 0
        self.writes = 0
        self.closed = False  # removed by a clean shutdown: never written again

    def update(
        self,
        inflight: list[dict[str, Any]],
        total: int,
        limit: int,
        rss: int,
        peak: int,
        *,
        force: bool = False,
    ) -> bool:
        """Rewrite the file about once a second (sooner when RSS jumps); True if written.

        Under load the in-flight set changes on every tick, so changes alone do not force a write: a
        request killed mid-flight that ran for more than a second is in the file, and a fast climb of
        memory is written at once. A data dir removed after the first write is not recreated. ``inflight``:
        summaries of the requests in flight (at most :data:`MAX_INFLIGHT` are kept), ``total`` of them.
        """
        if self.closed:
            return False
        now = time.time()
        jumped = rss - self._rss_written >= RSS_JUMP * limit
        if not force and not jumped and now - self._written < REFRESH_S:
            return False
        if self.writes and not self.path.parent.is_dir():
            return False  # the data dir was removed on purpose: do not bring it back
        kept = [{k: summary[k] for k in _KEPT if k in summary} for summary in inflight[:MAX_INFLIGHT]]
        doc = {
            "schema": WORKER_SCHEMA,
            "version": WORKER_VERSION,
            "pid": self.pid,
            "host": self.host,
            "worker": f"{self.host}:{self.pid}",
            "started": self.started,
            "last_seen": now,
            "rss": rss,
            "peak": peak,
            "limit": limit,
            "inflight_total": total,
            "inflight": kept,
        }
        # not durable: a SIGKILL keeps the page cache, only a host crash loses it
        write_private(self.path, json.dumps(doc, separators=(",", ":")).encode(), durable=False)
        if self.closed:  # a shutdown removed the file while this write ran: it stays removed
            self.path.unlink(missing_ok=True)
            return False
        self._written = now
        self._rss_written = rss
        self.writes += 1
        return True

    def remove(self) -> None:
        """A clean shutdown: this worker leaves no evidence of a crash. Takes no lock and waits for
        nothing: an update running meanwhile removes what it wrote itself (see :meth:`update`)."""
        self.closed = True
        self.path.unlink(missing_ok=True)


def crash_record(doc: dict[str, Any], detected_by: str) -> dict[str, Any]:
    """The ``memprof.crash`` record of a worker file left behind."""
    started = float(doc.get("started") or 0.0)
    last_seen = float(doc.get("last_seen") or started)
    rss = int(doc.get("rss") or 0)
    limit = int(doc.get("limit") or 0)
    return {
        "schema": CRASH_SCHEMA,
        "version": CRASH_VERSION,
        "pid": int(doc["pid"]),
        "host": str(doc.get("host", "")),
        "worker": str(doc.get("worker", f"{doc.get('host', '')}:{doc['pid']}")),
        "started": started,
        "last_seen": last_seen,
        "uptime_s": round(max(0.0, last_seen - started), 3),
        "last_rss": rss,
        "peak": doc.get("peak"),
        "limit": limit or None,
        "percent": round(100.0 * rss / limit, 2) if limit else None,
        "inflight_total": int(doc.get("inflight_total") or 0),
        "inflight": list(doc.get("inflight") or []),
        "detected_at": time.time(),
        "detected_by": detected_by,
    }


def _read(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("schema") != WORKER_SCHEMA or "pid" not in doc:
        return None
    return doc


def live_workers(data_dir: Path) -> list[dict[str, Any]]:
    """Worker files of workers still running (any host's files are listed as they are)."""
    out = []
    for path in sorted((data_dir / WORKERS_DIR).glob("*.json")):
        doc = _read(path)
        if doc is not None:
            out.append(doc)
    return out


def collect_crashes(data_dir: Path, detected_by: str, host: str | None = None) -> list[Path]:
    """Turn the files of this host's dead workers into crash records; return the records' paths.

    A file is claimed by renaming it first, so two workers starting at once never report one crash
    twice. Files of other hosts (a shared data dir) are left to those hosts.
    """
    host = host or socket.gethostname()
    made = []
    workers = data_dir / WORKERS_DIR
    for path in sorted(workers.glob(f"{host}-*.json")):
        doc = _read(path)
        if doc is None or doc.get("host") != host:
            continue
        try:  # validated before it is claimed: a malformed file stays where it is, for the analyzer to report
            pid = int(doc["pid"])
            started = float(doc.get("started") or 0)
            record = crash_record(doc, detected_by)
            stamp = datetime.fromtimestamp(record["last_seen"], UTC).strftime("%Y%m%dT%H%M%S%f")
            if pid == os.getpid() and started >= process_started() - 1.0:
                continue  # this very process's own file
            if pid != os.getpid() and worker_alive(pid, started):
                continue
        except (KeyError, TypeError, ValueError, OverflowError, OSError):
            continue
        claim = workers / f".{path.name}.{os.getpid()}.claim"
        try:
            os.rename(path, claim)
        except OSError:
            continue  # another process claimed it
        out = data_dir / CRASHES_DIR / f"crash-{stamp}-{pid}.json"
        try:
            write_private(out, json.dumps(record, indent=1).encode())
        except OSError:
            os.rename(claim, path)  # (a full disk) the evidence stays for the next try
            raise
        claim.unlink(missing_ok=True)
        made.append(out)
    return made


def read_crashes(data_dir: Path) -> list[dict[str, Any]]:
    """Every crash record of a data dir, newest first."""
    out = []
    for path in sorted((data_dir / CRASHES_DIR).glob("crash-*.json"), reverse=True):
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict) and doc.get("schema") == CRASH_SCHEMA:
            doc["file"] = str(path)
            out.append(doc)
    return out
