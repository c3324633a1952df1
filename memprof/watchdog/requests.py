"""Manual dumps asked from outside the process: ``memprof dump DATA_DIR`` writes a request file that
every worker's watchdog sees within one tick (one ``stat`` per tick), and answers with a dump
(trigger ``manual``). No signal, no port: only the data dir the workers already write to.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from memprof.files import ensure_private_dir, write_private

REQUEST_FILE = "dump-request.json"


def ask_for_dump(data_dir: Path, name: str | None = None, pids: list[int] | None = None) -> float:
    """Ask the workers of ``data_dir`` (only ``pids`` when given) for a manual dump; return the request time."""
    now = time.time()
    ensure_private_dir(data_dir)
    body = {"time": now, "name": name, "pids": pids}
    write_private(data_dir / REQUEST_FILE, json.dumps(body).encode())
    return now


class RequestWatch:
    """A worker's view of the request file: each request (newer than the worker) is answered once."""

    def __init__(self, data_dir: Path, since: float) -> None:
        self.path = data_dir / REQUEST_FILE
        self.seen = since  # requests made before this worker started are not for it
        self._mtime = 0.0

    def poll(self) -> dict[str, Any] | None:
        """The pending request for this process, if any (then marked answered)."""
        try:
            mtime = self.path.stat().st_mtime
        except OSError:
            return None
        if mtime == self._mtime:
            return None
        self._mtime = mtime
        try:
            body = json.loads(self.path.read_text())
            when = float(body["time"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if when <= self.seen:
            return None
        self.seen = when
        pids = body.get("pids")
        if isinstance(pids, list) and os.getpid() not in pids:
            return None
        name = body.get("name")
        return {"time": when, "name": str(name) if name else None}
