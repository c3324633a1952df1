"""The flight recorder with real uvicorn workers: SIGKILL leaves evidence, a clean shutdown does not."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from memprof.records.models import Crash, StateRecord
from tests._memprof_server import Server, read_json_files, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

MEMPROF = [sys.executable, "-c", "from memprof.cli import main; main()"]


def _slow_request_in_flight(server: Server, data_dir: Path) -> dict[str, object]:
    """Start GET /slow/30 in a thread and wait until the worker's file lists it."""

    def call() -> None:
        try:
            httpx.get(f"{server.url}/slow/30", timeout=40)
        except httpx.HTTPError:
            pass  # the worker is killed under it

    threading.Thread(target=call, daemon=True).start()

    def listed() -> dict[str, object] | None:
        for doc in read_json_files(data_dir / "workers", "*.json"):
            if any(r.get("route") == "/slow/{seconds}" for r in doc["inflight"]):
                return doc
        return None

    return wait_for(listed)


@pytest.mark.parametrize(
    "env",
    [{}, {"MEMPROF_MODE": "light", "MEMPROF_SAMPLE_RATE": "0"}],
    ids=["aggressive", "light-unsampled"],
)
def test_sigkill_mid_request_then_postmortem_names_pid_and_route(tmp_path: Path, env: dict[str, str]) -> None:
    data_dir = tmp_path / "data"
    server = Server(tmp_path / "app", data_dir, **env)
    try:
        live = _slow_request_in_flight(server, data_dir)
        assert live["pid"] == server.pid and live["rss"] > 0 and live["limit"] > 0
    finally:
        server.kill()
    assert (data_dir / "workers" / f"{live['host']}-{server.pid}.json").exists()

    done = subprocess.run([*MEMPROF, "postmortem", str(data_dir)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"pid {server.pid}" in done.stdout
    assert "GET /slow/{seconds}" in done.stdout
    (crash,) = read_json_files(data_dir / "crashes", "crash-*.json")
    Crash.model_validate(crash)
    assert crash["pid"] == server.pid and crash["detected_by"] == "postmortem"
    assert [r["route"] for r in crash["inflight"]] == ["/slow/{seconds}"]
    assert crash["last_rss"] > 0 and crash["uptime_s"] > 0
    assert not list((data_dir / "workers").glob("*.json")), "the worker file became the crash record"
    mode = (data_dir / "crashes").stat().st_mode & 0o777
    assert mode == 0o700

    again = subprocess.run(
        [*MEMPROF, "postmortem", str(data_dir), "--json"], capture_output=True, text=True, timeout=60
    )
    assert again.returncode == 0
    assert [c["pid"] for c in json.loads(again.stdout)["crashes"]] == [server.pid], "reported once"


def test_next_start_in_the_same_data_dir_records_the_crash(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = Server(tmp_path / "app", data_dir)
    try:
        _slow_request_in_flight(first, data_dir)
    finally:
        first.kill()
    second = Server(tmp_path / "app", data_dir)
    try:
        crashes = wait_for(lambda: read_json_files(data_dir / "crashes", "crash-*.json"))
        (crash,) = crashes
        assert crash["pid"] == first.pid and crash["detected_by"] == "startup"
        assert crash["inflight"][0]["route"] == "/slow/{seconds}"
        # The second worker keeps its own live file, which is not a crash.
        wait_for(lambda: (data_dir / "workers").glob(f"*-{second.pid}.json"))
    finally:
        second.stop()


def test_clean_shutdown_removes_the_worker_file_and_records_final_state(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = Server(tmp_path / "app", data_dir)
    try:
        server.get("/rss")
        wait_for(lambda: list((data_dir / "workers").glob("*.json")))
    finally:
        server.stop()
    assert server.proc.returncode in (0, -15)  # recent uvicorn re-raises SIGTERM after its shutdown
    assert not list((data_dir / "workers").glob("*.json"))
    (state_file,) = data_dir.glob(f"state-*-{server.pid}.jsonl")
    lines = [json.loads(line) for line in state_file.read_text().splitlines()]
    for line in lines:
        StateRecord.model_validate(line)
    assert lines[0]["phase"] == "startup"
    assert lines[-1]["phase"] == "shutdown"
    done = subprocess.run([*MEMPROF, "postmortem", str(data_dir)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "No crashed workers found." in done.stdout


def test_postmortem_on_a_missing_data_dir_is_one_clear_error(tmp_path: Path) -> None:
    done = subprocess.run(
        [*MEMPROF, "postmortem", str(tmp_path / "nope")], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "does not exist" in done.stderr and "Traceback" not in done.stderr


def test_light_mode_names_unsampled_requests_in_flight(make_settings: Any, data_dir: Path) -> None:
    """Cheap enough for light mode: unsampled requests are named (not measured) in the live file."""
    import socket

    from starlette.testclient import TestClient

    from memprof import MemprofMiddleware
    from tests.apps import starlette_app

    settings = make_settings(mode="light", sample_rate=0.0, watchdog_interval_ms=20)
    app = MemprofMiddleware(starlette_app(), settings=settings)
    live = data_dir / "workers" / f"{socket.gethostname()}-{os.getpid()}.json"
    with TestClient(app) as client:
        thread = threading.Thread(target=lambda: client.get("/slow", params={"s": "1.5"}))
        thread.start()
        doc = wait_for(
            lambda: live.exists() and (d := json.loads(live.read_text()))["inflight_total"] == 1 and d
        )
        thread.join(10)
    (request,) = doc["inflight"]
    assert request["detail"] == "unprofiled" and request["route"] == "/slow" and request["method"] == "GET"
    assert "rss_start" not in request and request["started"] > 0
    assert "s=1.5" not in json.dumps(doc)  # no query string
    assert doc["limit"] > 0 and doc["rss"] > 0
    assert app.runtime.unprofiled == {}, "nothing kept once the request is over"
    assert not live.exists(), "the lifespan shutdown removed it"
