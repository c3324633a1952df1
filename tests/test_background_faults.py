"""The circuit breaker guards the request path only: background work (flight recorder, state log, dumps,
the control thread) that fails is counted for its place and backs off by itself, and requests go on
being profiled."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from memprof import MemprofMiddleware
from memprof.safety.isolation import MAX_RETRY_S, background_step, errors, internal_error
from tests._memprof_server import Server, wait_for
from tests.apps import starlette_app
from tests.cli import run_cli


def lines_on_disk(data_dir: Path) -> int:
    return sum(p.read_bytes().count(b"\n") for p in data_dir.glob("samples-*.jsonl"))


def test_a_failing_flight_recorder_never_pauses_profiling(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "workers").write_text("a file where the flight recorder wants a directory")
    server = Server(tmp_path / "app", data_dir, MEMPROF_CONTROL_POLL_INTERVAL_S="0.2")
    try:
        wait_for(lambda: list((data_dir / "status").glob("*.json")))
        # The flight recorder fails on every tick it tries (50 ms ticks): give it a few seconds.
        wait_for(lambda: _status(data_dir)["internal_errors"]["by_place"].get("flight", 0) >= 3)
        with httpx.Client(base_url=server.url) as client:
            for _ in range(100):
                assert client.get("/rss").status_code == 200
    finally:
        server.stop()
    assert lines_on_disk(data_dir) >= 95 + 1  # (+1: the ready probe)
    status = _status(data_dir)
    errs = status["internal_errors"]
    assert status["paused"] is None and status["breaker"]["state"] == "closed"
    assert status["breaker"]["trips"] == 0 and errs["request_path"] == 0
    flight = errs["background"]["flight"]
    # Backing off (1 s, 2 s, 4 s ... up to a minute), not failing on each of its hundreds of ticks.
    assert 3 <= flight["failures"] <= 12, flight
    # Its error message keeps the file's path readable (redaction masks secrets, not paths).
    assert str(data_dir / "workers") in flight["last"] and "[REDACTED]" not in flight["last"]
    shown = run_cli("status", str(data_dir))
    assert "background flight failing" in shown.stdout and "breaker closed" in shown.stdout, shown


def _status(data_dir: Path) -> dict[str, Any]:
    (path,) = (data_dir / "status").glob("*.json")
    return dict(json.loads(path.read_text()))


@pytest.mark.internal_errors_expected
def test_background_failures_reach_no_breaker_but_request_path_ones_do(
    make_settings: Callable[..., Any],
) -> None:
    mw = MemprofMiddleware(starlette_app(), settings=make_settings(circuit_breaker_failures=3))
    runtime = mw.runtime
    assert runtime is not None

    def boom() -> None:
        raise OSError(28, "No space left on device")

    with TestClient(mw) as client:
        for _ in range(10):
            state = errors.step("state_log")
            state.retry_at = 0.0  # due again at once (the backoff is what the server test shows)
            assert background_step("state_log", boom) is None
        internal_error("some_background_thread", ValueError("x"), background=True)
        assert runtime.breaker.state == "closed" and runtime.breaker.failures == 0
        assert errors.request_total == 0 and errors.counts["state_log"] == 10
        step = errors.status()["background"]["state_log"]  # type: ignore[index]
        assert step["failing"] and step["failures"] == 10 and 0 < step["retry_in_s"] <= MAX_RETRY_S
        assert client.get("/").status_code == 200
        assert runtime.writer.flush(5) and runtime.writer.written == 1 and not runtime.paused
        # A success resets the step's backoff.
        errors.step("state_log").retry_at = 0.0
        assert background_step("state_log", lambda: 42) == 42
        assert errors.status()["background"]["state_log"]["failing"] is False  # type: ignore[index]
        # The same failure on the request path counts towards the breaker.
        for _ in range(3):
            try:
                internal_error("begin", ValueError("x"))
            except ValueError:
                pass  # (the test switch re-raises request-path failures)
        assert runtime.breaker.state == "open" and errors.request_total == 3
    mw.close()


@pytest.mark.internal_errors_expected
def test_a_failing_step_is_skipped_until_its_retry_time() -> None:
    calls = []

    def boom() -> None:
        calls.append(time.monotonic())
        raise RuntimeError("down")

    for _ in range(50):
        background_step("test_step", boom)
    assert len(calls) == 1  # then backed off: 1 s before the next try
    state = errors.step("test_step")
    assert state.consecutive == 1 and state.retry_s == 1.0
    state.retry_at = 0.0
    background_step("test_step", boom)
    assert len(calls) == 2 and state.retry_s == 2.0  # doubling
