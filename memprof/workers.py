"""Worker identity and liveness: the one check of whether the process that wrote a file still runs.

A pid alone is not enough (pids are reused): a worker is alive when a process with its pid exists, is not
a zombie, and started no later than the worker did.
"""

from __future__ import annotations

import os
import socket
import time

import psutil


def worker_id() -> str:
    """``<host>-<pid>``: names this worker's status and flight files and its Redis key."""
    return f"{socket.gethostname()}-{os.getpid()}"


def process_started(pid: int | None = None) -> float:
    """The start time (unix seconds) of ``pid`` (default: this process); now when it cannot be read."""
    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.Error, OSError):
        return time.time()


def worker_alive(pid: int, started: float | None) -> bool:
    """Whether the worker ``pid`` that started at ``started`` still runs (a reused pid with a later start
    is not it; with ``started`` unknown, any live non-zombie process with that pid counts)."""
    if pid <= 0:
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return started is None or bool(proc.create_time() <= started + 1.0)
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    except psutil.Error:
        return True  # cannot tell: leave its files alone
