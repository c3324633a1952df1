"""A clean shutdown is never a crash and never a hang: the flight file goes last whatever failed before it
(a full disk), every wait is bounded, and a stop signal shuts an idle runtime down (memprof.lifecycle).
The real servers (uvicorn without lifespan, hypercorn, gunicorn) are in test_servers.py."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio.to_thread
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from memprof import MemprofMiddleware, lifecycle
from memprof import middleware as middleware_mod
from memprof.background import BACKGROUND
from memprof.safety import isolation
from memprof.watchdog.thread import WATCHDOG
from tests._memprof_server import wait_for
from tests.apps import serving, starlette_app
from tests.logs import capture_logs
from tests.parking import ParkingLock


@pytest.fixture
def app(make_settings: Callable[..., Any]) -> Iterator[MemprofMiddleware]:
    mw = MemprofMiddleware(starlette_app(), settings=make_settings(watchdog_interval_ms=20))
    yield mw
    lifecycle._stop_requested = None
    mw.close(1.0)


def _flight(app: MemprofMiddleware, data_dir: Path) -> Path:
    return data_dir / "workers" / f"{app.runtime.host}-{os.getpid()}.json"


@pytest.mark.internal_errors_expected
def test_a_full_disk_while_flushing_still_removes_the_flight_file(
    app: MemprofMiddleware, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(isolation.errors, "raise_errors", False)  # production: counted, never raised
    with TestClient(app) as client:
        assert client.get("/").status_code == 200
        wait_for(_flight(app, data_dir).exists)
        writer = app.runtime.writer
        assert writer.flush(5)
        written = writer.written

        def open_full() -> None:  # every samples file opened from now on: /dev/full
            writer._fd = os.open("/dev/full", os.O_WRONLY)  # every write fails: ENOSPC, from the kernel
            writer._file_path, writer._file_bytes = data_dir / "full.jsonl", 0

        monkeypatch.setattr(writer, "_open_next", open_full)
        with writer._lock:
            writer._close_file()
        for i in range(5):
            assert client.get(f"/users/{i}").status_code == 200
    # The lifespan shutdown's writes failed, and the flight file was removed anyway: a clean stop.
    assert isolation.errors.counts["writer_io"] >= 1 and "No space left" in str(isolation.errors.last)
    assert (writer.written, writer.write_failed) == (written, 5)  # exact: each record counted once
    assert not _flight(app, data_dir).exists()


def test_shutdown_waits_for_nothing_past_its_timeout(
    app: MemprofMiddleware, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The background thread stuck in the writer's file and holding the watchdog's lock: a shutdown
    still returns after its timeout, logs each wait it gave up once, and removes the flight file."""
    serving(app)
    wait_for(_flight(app, data_dir).exists)
    writer_lock, watchdog_lock = ParkingLock(), threading.Lock()
    monkeypatch.setattr(app.runtime.writer, "_lock", writer_lock)
    with TestClient(app) as client, capture_logs() as logs:
        client.get("/users/1")  # its record parks the thread inside the samples file's lock
        assert writer_lock.parked.wait(10)
        watchdog_lock.acquire()  # held, as by a thread that never lets go
        monkeypatch.setattr(WATCHDOG, "lock", watchdog_lock)
        try:
            app.runtime.shutdown(0.2)
            app.runtime.shutdown(0.2)
            assert not _flight(app, data_dir).exists()
        finally:
            watchdog_lock.release()
            writer_lock.go.set()
    waits = [e["waiting_for"] for e in logs if e["event"] == "memprof.timeout"]
    assert sorted(set(waits)) == sorted(waits), "each wait given up is logged once"
    assert "records to be written" in waits and "the watchdog's lock at shutdown" in waits


def test_the_lifespan_shutdown_is_bounded_when_its_thread_hangs(
    app: MemprofMiddleware, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(middleware_mod, "SHUTDOWN_TIMEOUT_S", 0.2)
    writer_lock = ParkingLock()
    monkeypatch.setattr(app.runtime.writer, "_lock", writer_lock)
    try:
        with TestClient(app) as client:
            client.get("/users/1")
            assert writer_lock.parked.wait(10)
            wait_for(_flight(app, data_dir).exists)
        # The worker thread's shutdown still waits for the records; the lifespan went on without it.
        assert not _flight(app, data_dir).exists()
    finally:
        writer_lock.go.set()


def test_a_stop_signal_shuts_an_idle_runtime_down_and_a_later_request_serves_again(
    make_settings: Callable[..., Any], data_dir: Path, samples: Any
) -> None:
    gate = threading.Event()

    async def held(request: Request) -> Response:
        await anyio.to_thread.run_sync(gate.wait, 10)
        return PlainTextResponse("done")

    inner = Starlette(routes=[Route("/held", held), Route("/other", held)])
    app = MemprofMiddleware(inner, settings=make_settings(watchdog_interval_ms=20))
    client = TestClient(app)  # no lifespan, as under `uvicorn --lifespan off`
    flight = _flight(app, data_dir)
    request = threading.Thread(target=lambda: client.get("/held"))
    request.start()
    try:
        wait_for(lambda: app.runtime.inflight == 1 and flight.exists())
        lifecycle._stop_requested = 1.0  # what the chained signal handler does, and nothing else
        wait_for(lambda: app.runtime.stopping)
        assert flight.exists() and app.runtime.serving, "no shutdown while a request is in flight"
    finally:
        gate.set()
        request.join(10)
    wait_for(lambda: not flight.exists() and not app.runtime.serving)
    assert [s["request"]["route"] for s in samples()] == ["/held"], "its record was written first"
    assert client.get("/other").status_code == 200  # the process goes on: memprof serves again
    wait_for(flight.exists)
    assert app.runtime.serving and not lifecycle.stop_requested()
    app.close(1.0)


def test_stop_handlers_chain_before_a_python_handler_and_never_replace_the_default(
    app: MemprofMiddleware, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []

    def server_handler(signum: int, frame: Any) -> None:
        calls.append(signum)

    monkeypatch.setattr(lifecycle, "STOP_SIGNALS", ("SIGUSR1", "SIGUSR2"))
    previous = signal.signal(signal.SIGUSR1, server_handler), signal.signal(signal.SIGUSR2, signal.SIG_DFL)
    try:
        serving(app)
        assert signal.getsignal(signal.SIGUSR2) == signal.SIG_DFL  # a default action stays as it is
        chained = signal.getsignal(signal.SIGUSR1)
        assert chained is not server_handler and getattr(chained, "_memprof_stop", False)
        lifecycle.install_stop_signals()
        assert signal.getsignal(signal.SIGUSR1) is chained  # never chained twice
        os.kill(os.getpid(), signal.SIGUSR1)
        wait_for(lambda: calls)
        assert calls == [signal.SIGUSR1] and lifecycle.stop_requested()
        wait_for(lambda: not app.runtime.serving)
    finally:
        signal.signal(signal.SIGUSR1, previous[0])
        signal.signal(signal.SIGUSR2, previous[1])


def test_building_the_middleware_starts_nothing(app: MemprofMiddleware, data_dir: Path) -> None:
    assert not app.runtime.serving
    assert app.runtime not in WATCHDOG.guards and app.runtime.writer not in BACKGROUND.jobs
    assert not data_dir.exists() or not any(data_dir.rglob("*"))
