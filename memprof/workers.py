"""Worker identity and liveness: the one check of whether the process that wrote a file still runs.

A pid alone is not enough (pids are reused): a worker is alive when a process with its pid exists, is not
a zombie, and started no later than the worker did. On Linux this reads ``/proc`` (a worker never loads
psutil, about 0.8 MB of RSS); elsewhere psutil answers.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

_PROC = Path("/proc")


def worker_id() -> str:
    """``<host>-<pid>``: names this worker's status and flight files and its Redis key."""
    return f"{socket.gethostname()}-{os.getpid()}"


def _boot_time() -> float:
    for line in (_PROC / "stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    raise OSError("no btime in /proc/stat")


def _proc_stat(pid: int) -> tuple[str, float]:
    """(state, start time in unix seconds) of ``pid`` from ``/proc/<pid>/stat``; OSError if it is gone."""
    text = (_PROC / str(pid) / "stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()  # the name in parentheses may hold spaces
    started = _boot_time() + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    return fields[0], started


def process_started(pid: int | None = None) -> float:
    """The start time (unix seconds) of ``pid`` (default: this process); now when it cannot be read."""
    pid = os.getpid() if pid is None else pid
    if _PROC.is_dir():
        try:
            return _proc_stat(pid)[1]
        except (OSError, ValueError, IndexError):
            return time.time()
    import psutil

    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.Error, OSError):
        return time.time()


def worker_alive(pid: int, started: float | None) -> bool:
    """Whether the worker ``pid`` that started at ``started`` still runs (a reused pid with a later start
    is not it; with ``started`` unknown, any live non-zombie process with that pid counts)."""
    if pid <= 0:
        return False
    if _PROC.is_dir():
        try:
            state, created = _proc_stat(pid)
        except FileNotFoundError:
            return False
        except (OSError, ValueError, IndexError):
            return True  # cannot tell: leave its files alone
        return state != "Z" and (started is None or created <= started + 1.0)
    return _alive_psutil(pid, started)


def _alive_psutil(pid: int, started: float | None) -> bool:
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return started is None or bool(proc.create_time() <= started + 1.0)
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    except psutil.Error:
        return True
