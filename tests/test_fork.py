"""Fork safety with a real os.fork(): the child gets fresh threads, locks, files and Redis clients."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from memprof import MemprofMiddleware
from memprof.safety import control as control_mod
from memprof.safety.control import redis_client
from tests.apps import starlette_app
from tests.conftest import IN_CI

REDIS_URL = os.environ.get("MEMPROF_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


async def _call(app: Any, path: str) -> tuple[int, bytes]:
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET"}
    scope |= {"scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b""}
    scope |= {"root_path": "", "headers": [(b"host", b"t")], "client": ("127.0.0.1", 1), "server": ("t", 80)}
    out: dict[str, Any] = {"body": b""}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            out["status"] = message["status"]
        else:
            out["body"] += message.get("body", b"")

    await app(scope, receive, send)
    return out["status"], out["body"]


def _lines(data_dir: Path, pid: int) -> int:
    return sum(len(p.read_text().splitlines()) for p in data_dir.glob(f"samples-*-{pid}-*.jsonl"))


def _child(mw: MemprofMiddleware, data_dir: Path, parent_thread: int | None) -> dict[str, Any]:
    rt = mw.runtime
    report: dict[str, Any] = {}
    poller = control_mod.POLLER.thread
    report["poller_restarted"] = poller is not None and poller.is_alive() and poller.ident != parent_thread
    # The parent's helper thread still "holds" these locks in the copied memory; fresh ones are free.
    report["locks_free"] = all(
        lock.acquire(timeout=1) and (lock.release() or True)
        for lock in (rt.writer._lock, rt.breaker._lock, rt.control._lock, rt._refresh_lock)
    )
    loop = asyncio.new_event_loop()
    statuses = [loop.run_until_complete(_call(mw, f"/users/{i}"))[0] for i in range(5)]
    report["statuses"] = statuses
    report["flushed"] = rt.writer.flush(5)
    report["child_lines"] = _lines(data_dir, os.getpid())
    deadline = time.monotonic() + 5
    while rt.control._redis is None and time.monotonic() < deadline:
        time.sleep(0.02)
    report["redis_ok"] = rt.control.redis_ok
    report["redis_client_pid"] = getattr(rt.control._redis, "_memprof_pid", None)
    (data_dir / "DISABLED").touch()
    while rt.paused is None and time.monotonic() < deadline:
        time.sleep(0.02)
    report["kill_switch"] = rt.paused
    status_file = data_dir / "status" / f"{rt.host}-{os.getpid()}.json"
    while not status_file.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    report["status_pid"] = json.loads(status_file.read_text())["pid"] if status_file.exists() else None
    return report


@pytest.mark.slow
def test_forked_child_recreates_threads_locks_files_and_redis(
    make_settings: Callable[..., Any], data_dir: Path
) -> None:
    try:
        redis_client(REDIS_URL).ping()
    except Exception as exc:
        if IN_CI:
            pytest.fail(f"Redis at {REDIS_URL} is required under CI: {exc!r}")
        pytest.skip(f"no Redis at {REDIS_URL}")
    settings = make_settings(
        redis_url=REDIS_URL, redis_prefix="memprof-fork-test:", control_poll_interval_s=0.05
    )
    mw = MemprofMiddleware(starlette_app(), settings=settings)
    rt = mw.runtime
    loop = asyncio.new_event_loop()
    assert [loop.run_until_complete(_call(mw, f"/users/{i}"))[0] for i in range(3)] == [200] * 3
    loop.close()
    assert rt.writer.flush(5)
    deadline = time.monotonic() + 5
    while rt.control._redis is None and time.monotonic() < deadline:
        time.sleep(0.02)
    parent_client = rt.control._redis
    assert parent_client is not None
    parent_client._memprof_pid = os.getpid()
    parent_lines = _lines(data_dir, os.getpid())
    assert parent_lines == 3
    poller = control_mod.POLLER.thread
    parent_thread = poller.ident if poller is not None else None

    # A thread of the parent holds memprof's locks at the moment of the fork.
    locks = [rt.writer._lock, rt.breaker._lock, rt.control._lock, rt._refresh_lock]
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        for lock in locks:
            lock.acquire()
        held.set()
        release.wait(10)
        for lock in reversed(locks):
            lock.release()

    holder = threading.Thread(target=hold)
    holder.start()
    assert held.wait(5)
    read_fd, write_fd = os.pipe()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe and never returns to pytest
        code = 1
        try:
            os.close(read_fd)
            report = _child(mw, data_dir, parent_thread)
            os.write(write_fd, json.dumps(report).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    # Forking a process with threads running (memprof's, and the holder) warns from 3.12 on; memprof's
    # at-fork handler adds no warning of its own on any Python.
    threaded = [w for w in caught if w.category is DeprecationWarning and "multi-threaded" in str(w.message)]
    assert len(threaded) == (1 if sys.version_info >= (3, 12) else 0), [str(w.message) for w in caught]
    assert len(caught) == len(threaded), [str(w.message) for w in caught]
    release.set()
    holder.join(5)
    deadline = time.monotonic() + 30
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung (a lock inherited from the parent?)")
        time.sleep(0.05)
    with os.fdopen(read_fd) as fh:
        report = json.loads(fh.read() or "{}")
    assert os.waitstatus_to_exitcode(status) == 0, report
    assert report == {
        "poller_restarted": True,
        "locks_free": True,
        "statuses": [200] * 5,
        "flushed": True,
        "child_lines": 5,
        "redis_ok": True,
        "redis_client_pid": None,  # a new client, not the parent's
        "kill_switch": "kill_switch_file",
        "status_pid": pid,
    }
    assert _lines(data_dir, os.getpid()) == parent_lines  # the child wrote nothing into the parent's file
    (data_dir / "DISABLED").unlink()
