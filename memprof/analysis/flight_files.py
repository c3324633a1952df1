"""Workers killed since the last start: flight-recorder files left behind by dead workers of this host.

Read-only: the crash record is built in memory (as ``memprof postmortem`` or the next start would
write it) and never written, so analysing a data dir changes nothing in it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from memprof.watchdog.flight import WORKERS_DIR, crash_record, live_workers
from memprof.workers import worker_alive


def dead_worker_crashes(paths: list[str]) -> Iterator[tuple[dict[str, Any], str]]:
    """``(crash record, worker file)`` for each worker file of this host whose process is gone."""
    host = socket.gethostname()
    for raw in paths:
        data_dir = Path(raw)
        if raw == "-" or not (data_dir / WORKERS_DIR).is_dir():
            continue
        for doc in live_workers(data_dir):
            try:
                pid = int(doc["pid"])
                if doc.get("host") != host or pid == os.getpid():
                    continue  # another host's worker cannot be checked from here
                if worker_alive(pid, float(doc.get("started") or 0)):
                    continue
                record = crash_record(doc, "postmortem")
            except (KeyError, TypeError, ValueError):
                continue
            yield record, str(data_dir / WORKERS_DIR / f"{host}-{pid}.json")
