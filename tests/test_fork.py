"""Fork safety with a real os.fork() (gunicorn --preload, multiprocessing).

memprof's background thread is parked inside each of its critical sections (a lock that, once the thread
holds it, waits for the test: deterministic, not timing), the process forks, and the child must serve
requests, tick its own watchdog, write its own flight file and shut down cleanly. Locks held by the app's
own threads inside memprof's request path at the fork, and a fork that must wait for a job in progress,
are covered too; so is a parent that only built the app (a gunicorn master): nothing starts there.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from memprof import MemprofMiddleware, lifecycle, memory
from memprof import background as background_mod
from memprof.background import BACKGROUND
from memprof.integrations import sqlalchemy as sqla_mod
from memprof.integrations.sqlalchemy import _events as sqla_events
from memprof.safety import control as control_mod
from memprof.safety import isolation
from memprof.safety.control import redis_client
from memprof.watchdog import dump as dump_mod
from memprof.watchdog import state as state_mod
from memprof.watchdog.thread import WATCHDOG
from tests.apps import serving, starlette_app
from tests.conftest import IN_CI
from tests.parking import ParkingLock

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

REDIS_URL = os.environ.get("MEMPROF_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
SECRET = "fork-secret-0123456789abcdef"


async def _call(app: Any, path: str) -> int:
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET"}
    scope |= {"scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b""}
    scope |= {"root_path": "", "headers": [(b"host", b"t")], "client": ("127.0.0.1", 1), "server": ("t", 80)}
    out: dict[str, Any] = {}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            out["status"] = message["status"]

    await app(scope, receive, send)
    return int(out["status"])


def _get(app: Any, path: str) -> int:
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(_call(app, path))
    finally:
        loop.close()


def _lines(data_dir: Path, pid: int) -> int:
    return sum(len(p.read_text().splitlines()) for p in data_dir.glob(f"samples-*-{pid}-*.jsonl"))


def _wait(predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    return predicate()


def _fork(child: Callable[[], dict[str, Any]], timeout: float = 40.0) -> dict[str, Any]:
    """Fork; the child runs ``child()`` and reports its dict through a pipe. A child that hangs fails."""
    read_fd, write_fd = os.pipe()
    threads_running = threading.active_count() > 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe and never returns to pytest
        code = 1
        try:
            os.close(read_fd)
            report = child()
            code = 0
        except BaseException as exc:
            report = {"error": repr(exc)}
        finally:
            try:
                os.write(write_fd, json.dumps(report).encode())
            finally:
                os._exit(code)
    os.close(write_fd)
    # Forking a process with threads running (memprof's, the test's) warns from 3.12 on; memprof's
    # at-fork hooks add no warning of their own on any Python.
    threaded = [w for w in caught if w.category is DeprecationWarning and "multi-threaded" in str(w.message)]
    expected = 1 if sys.version_info >= (3, 12) and threads_running else 0
    assert len(threaded) == expected, [str(w.message) for w in caught]
    assert len(caught) == len(threaded), [str(w.message) for w in caught]
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung (a lock or a thread inherited from the parent?)")
        time.sleep(0.02)
    with os.fdopen(read_fd) as fh:
        report = json.loads(fh.read() or "{}")
    assert os.waitstatus_to_exitcode(status) == 0, report
    report["pid"] = pid
    return report


def _child_serves(mw: MemprofMiddleware, data_dir: Path, forked_at: float) -> dict[str, Any]:
    """In the child: serve, see the watchdog tick and write this pid's flight file, shut down."""
    rt = mw.runtime
    report: dict[str, Any] = {"serving_before": rt.serving, "thread_before": BACKGROUND.thread is not None}
    report["statuses"] = [_get(mw, f"/users/{i}") for i in range(3)]
    flight = data_dir / "workers" / f"{rt.host}-{os.getpid()}.json"

    def ticked() -> dict[str, Any] | None:
        if WATCHDOG.ticks < 2 or not flight.exists():
            return None
        doc: dict[str, Any] = json.loads(flight.read_text())
        return doc if doc["last_seen"] >= forked_at else None

    doc = _wait(ticked)
    report["flight_pid"] = doc["pid"] if doc else None
    report["flushed"] = rt.writer.flush(5)
    report["lines"] = _lines(data_dir, os.getpid())
    # A dump (its lock) and an internal error counted (the counter's lock, the breakers' locks).
    report["dumped"] = dump_mod.write_dump(rt, "custom", "child") is not None
    isolation.errors.record("child_check", RuntimeError("counted in the child"))
    report["errors_counted"] = isolation.errors.counts["child_check"]
    rt.shutdown(5.0)
    report["flight_left"] = flight.exists()
    report["timeouts"] = sorted(background_mod._timeouts_logged)  # no lock waited out in the child
    return report


def _expected_child(pid: int) -> dict[str, Any]:
    return {
        "serving_before": False,  # a child serves only once it serves requests
        "thread_before": False,  # the parent's background thread is not the child's
        "statuses": [200, 200, 200],
        "flight_pid": pid,
        "flushed": True,
        "lines": 3,
        "dumped": True,
        "errors_counted": 1,
        "flight_left": False,
        "timeouts": [],
        "pid": pid,
    }


@pytest.fixture
def fast_fork(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fork waits for a running job at most 0.1 s here: every case below parks the job for good."""
    monkeypatch.setattr(background_mod, "FORK_WAIT_S", 0.1)


@pytest.fixture
def app(make_settings: Callable[..., Any]) -> Iterator[MemprofMiddleware]:
    settings = make_settings(
        watchdog_interval_ms=20,
        control_poll_interval_s=0.05,
        circuit_breaker_failures=1000,
        targeted_secret=SECRET,
    )
    mw = MemprofMiddleware(starlette_app(), settings=settings)
    yield mw
    mw.close()


def _failing_provider() -> int:
    raise RuntimeError("a state provider that fails (in the parent only)")


# Where the background thread is parked: how to put a parking lock there (before serving starts, so that
# the first rounds of the jobs meet it) and what makes the thread go through that section.
Park = Callable[[MemprofMiddleware, pytest.MonkeyPatch], ParkingLock]


def _on(target: Any, attr: str, *, condition: bool = False) -> Park:
    def install(mw: MemprofMiddleware, mp: pytest.MonkeyPatch) -> ParkingLock:
        lock = ParkingLock()
        obj = target(mw) if callable(target) else target
        mp.setattr(obj, attr, threading.Condition(lock) if condition else lock)  # type: ignore[arg-type]
        return lock

    return install


def _request(mw: MemprofMiddleware) -> None:
    _get(mw, "/users/parked")


def _memory_error(mw: MemprofMiddleware) -> None:
    mw.runtime.memory_error({"type": "http", "method": "GET", "path": "/oom"})


def _breaker_clears(mw: MemprofMiddleware) -> None:
    # A request-path failure counted earlier: the next clean record clears it, on the background thread.
    mw.runtime.breaker.failures = 1
    mw.runtime.breaker.baseline = isolation.errors.request_total
    _request(mw)


def _guard_due(mw: MemprofMiddleware) -> None:
    mw.runtime.guard.steps = 1  # backed off, cooldown over: the poller's next tick restores it
    mw.runtime.guard.backoff.until = 0.0


def _provider(mw: MemprofMiddleware) -> None:
    parent = os.getpid()
    state_mod.register_state("fails-in-parent", lambda: _failing_provider() if os.getpid() == parent else 0)


Trigger = Callable[[MemprofMiddleware], None]
# name: (where the parking lock goes, what makes the thread go there before serving starts (its first
# rounds meet it), and after)
SECTIONS: dict[str, tuple[Park, Trigger | None, Trigger | None]] = {
    # the writer: a record being written (the gate is held too: the fork's wait runs out), the idle signal
    "writer.file": (_on(lambda mw: mw.runtime.writer, "_lock"), None, _request),
    "writer.idle": (_on(lambda mw: mw.runtime.writer, "_idle", condition=True), None, _request),
    # the watchdog: its guards and groups; a dump it writes; the state line's cache scan and providers
    "watchdog.lock": (_on(WATCHDOG, "lock"), None, None),
    "dump": (_on(dump_mod, "_lock"), None, _memory_error),
    "state.registry": (_on(state_mod.registry, "_lock"), None, None),
    "state.providers": (_on(state_mod, "_lock"), None, None),
    # the control poller: a controller's tick, the runtime's mode refresh, the overhead guard's restore
    "control.controller": (_on(lambda mw: mw.runtime.control, "_lock"), None, None),
    "runtime.refresh": (_on(lambda mw: mw.runtime, "_refresh_lock"), None, None),
    "guards.overhead": (_on(lambda mw: mw.runtime.guard, "_lock"), None, _guard_due),
    # an internal error counted on the background thread; the circuit breaker a clean record resets
    # (background failures never reach the breaker: its lock is taken there only by a record's success)
    "isolation.errors": (_on(isolation.errors, "_lock"), _provider, None),
    "guards.breaker": (_on(lambda mw: mw.runtime.breaker, "_lock"), None, _breaker_clears),
    # the background thread's own lock (its jobs)
    "background.lock": (_on(BACKGROUND, "lock"), None, None),
}


@pytest.mark.internal_errors_expected  # the failing provider's, counted in the parent on purpose
@pytest.mark.parametrize("section", list(SECTIONS))
def test_fork_while_the_background_thread_is_inside_each_section(
    section: str, app: MemprofMiddleware, data_dir: Path, monkeypatch: pytest.MonkeyPatch, fast_fork: None
) -> None:
    park, before, after = SECTIONS[section]
    lock = park(app, monkeypatch)
    try:
        if before is not None:
            before(app)
        serving(app)
        if after is not None:
            after(app)
        assert lock.parked.wait(10), f"the background thread never entered {section}"
        forked_at = time.time()
        report = _fork(lambda: _child_serves(app, data_dir, forked_at))
    finally:
        lock.go.set()
        state_mod.unregister_state("fails-in-parent")
    assert report == _expected_child(report["pid"])
    # The parent goes on: its thread left the section and still writes records.
    assert _get(app, "/users/after") == 200
    assert app.runtime.writer.flush(10)
    assert _lines(data_dir, os.getpid()) >= 1


def test_fork_waits_for_the_job_in_progress(
    app: MemprofMiddleware, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fork never copies a job half done: it waits for the record being written."""
    monkeypatch.setattr(background_mod, "FORK_WAIT_S", 60.0)
    lock = _on(lambda mw: mw.runtime.writer, "_lock")(app, monkeypatch)
    serving(app)
    _request(app)
    assert lock.parked.wait(10)
    written = app.runtime.writer.written  # the record in the parked section is not counted yet
    fork_began = threading.Event()
    original = BACKGROUND.before_fork

    at_fork: list[int] = []

    def before_fork() -> None:
        fork_began.set()
        original()
        at_fork.append(app.runtime.writer.written)  # what the copy holds: the gate is ours till the fork

    monkeypatch.setattr(BACKGROUND, "before_fork", before_fork)
    reports: list[dict[str, Any]] = []
    forking = threading.Thread(
        target=lambda: reports.append(_fork(lambda: {"written": app.runtime.writer.written}))
    )
    forking.start()
    assert fork_began.wait(10)
    lock.go.set()  # the job finishes; only then does the fork go ahead
    forking.join(60)
    (report,) = reports
    assert at_fork == [written + 1]  # the record being written when the fork began was written first
    assert report["written"] == 0  # a forked child counts its own records only


def test_app_threads_inside_memprof_locks_at_the_fork(
    app: MemprofMiddleware, data_dir: Path, fast_fork: None
) -> None:
    """Locks the app's own threads take inside memprof (the request path, instrumenting, the error
    counter...) are re-created in the child whoever held them."""
    serving(app)
    assert _get(app, "/users/0") == 200
    rt = app.runtime
    assert rt.verifier is not None
    locks = [
        rt._refresh_lock,
        rt.breaker._lock,
        rt.guard._lock,
        rt.verifier._lock,
        rt.writer._lock,
        rt.control._lock,
        isolation.errors._lock,
        memory._fd_lock,
        dump_mod._lock,
        state_mod._lock,
        state_mod.registry._lock,
        WATCHDOG.lock,
        lifecycle._lock,
        sqla_mod._lock,
        sqla_events.UNATTRIBUTED._lock,
    ]
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        # All of them or none: memprof's own threads take some of these one inside another, so taking
        # them one by one and waiting could deadlock with the background thread (and leave them held for
        # the rest of the suite); on a miss, give back what was taken and try again.
        deadline = time.monotonic() + 20
        while not release.is_set() and time.monotonic() < deadline:
            taken = []
            for lock in locks:
                if not lock.acquire(timeout=0.05):
                    break
                taken.append(lock)
            if len(taken) == len(locks):
                held.set()
                release.wait(30)
            for lock in reversed(taken):
                lock.release()
            if held.is_set():
                return
            time.sleep(0.01)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(20), "the test could not take every lock at once"
        forked_at = time.time()

        def child() -> dict[str, Any]:
            report = _child_serves(app, data_dir, forked_at)
            report["sqlalchemy_lock_free"] = sqla_mod._lock.acquire(timeout=1)
            report["rss_of_child"] = memory.rss_bytes() > 0
            return report

        report = _fork(child)
    finally:
        release.set()
        holder.join(10)
    assert report == {**_expected_child(report["pid"]), "sqlalchemy_lock_free": True, "rss_of_child": True}


def test_forked_child_gets_its_own_redis_client_and_status(
    make_settings: Callable[..., Any], data_dir: Path, fast_fork: None
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
    mw = serving(MemprofMiddleware(starlette_app(), settings=settings))
    rt = mw.runtime
    try:
        assert _wait(lambda: rt.control._redis is not None and rt.control.redis_ok)
        rt.control._redis._memprof_pid = os.getpid()

        def child() -> dict[str, Any]:
            assert _get(mw, "/users/1") == 200
            _wait(lambda: rt.control._redis is not None and rt.control.redis_ok)
            status_file = data_dir / "status" / f"{rt.host}-{os.getpid()}.json"
            (data_dir / "DISABLED").touch()
            _wait(lambda: rt.paused is not None and status_file.exists())
            rt.shutdown(5.0)
            return {
                "redis_ok": rt.control.redis_ok,
                "redis_client_pid": getattr(rt.control._redis, "_memprof_pid", None),
                "kill_switch": rt.paused,
                "status_pid": json.loads(status_file.read_text())["pid"] if status_file.exists() else None,
            }

        report = _fork(child)
        assert report == {
            "redis_ok": True,
            "redis_client_pid": None,  # a new client, not the parent's
            "kill_switch": "kill_switch_file",
            "status_pid": report["pid"],
            "pid": report["pid"],
        }
    finally:
        (data_dir / "DISABLED").unlink(missing_ok=True)
        mw.close()


PARENT_ONLY_BUILDS = textwrap.dedent(
    """
    import json, os, sys, threading
    from fastapi import FastAPI
    from memprof import MemprofMiddleware

    wrapped = MemprofMiddleware(FastAPI())      # app = MemprofMiddleware(app), at import
    added = FastAPI()
    added.add_middleware(MemprofMiddleware)     # the Starlette way
    added.build_middleware_stack()              # built, never called (a CLI that lists routes...)
    pid = os.fork()                             # a gunicorn --preload master forks its workers
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    data = os.environ["MEMPROF_DATA_DIR"]
    print(json.dumps({
        "threads": sorted(t.name for t in threading.enumerate()),
        "files": sorted(os.path.relpath(os.path.join(d, f), data) for d, _, fs in os.walk(data) for f in fs)
        if os.path.isdir(data) else [],
    }))
    """
)


def test_a_process_that_only_builds_the_app_starts_nothing(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = {**os.environ, "MEMPROF_DATA_DIR": str(data_dir), "MEMPROF_MODE": "aggressive"}
    env.pop("MEMPROF_RAISE_INTERNAL_ERRORS", None)
    done = subprocess.run(
        [sys.executable, "-c", PARENT_ONLY_BUILDS], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"threads": ["MainThread"], "files": []}


def test_the_poller_is_a_job_of_the_one_background_thread(app: MemprofMiddleware) -> None:
    serving(app)
    assert _get(app, "/users/1") == 200
    assert app.runtime.control in control_mod.POLLER.controllers
    names = [t.name for t in threading.enumerate() if t.name.startswith("memprof")]
    assert names == ["memprof-background"]
