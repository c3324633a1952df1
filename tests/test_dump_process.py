"""A real uvicorn worker with a real memory limit: the watchdog dumps before the limit is reached."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from memprof.records.models import Dump
from tests._memprof_server import Server, read_json_files, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

_MB = 1024 * 1024


def _server_near_its_limit(tmp_path: Path, data_dir: Path, **env: str) -> tuple[Server, int]:
    """A worker whose memory limit is a little (80 MB) above its own footprint, and that limit."""
    probe = Server(tmp_path / "app", tmp_path / "probe")
    try:
        base = probe.get("/rss")["rss"]
    finally:
        probe.stop()
    limit = base + 80 * _MB
    server = Server(
        tmp_path / "app",
        data_dir,
        MEMPROF_MEMORY_LIMIT_MB=str(limit / _MB),
        MEMPROF_DUMP_THRESHOLD="0.8",
        MEMPROF_DUMP_HYSTERESIS="0.1",
        **env,
    )
    return server, limit


@pytest.mark.parametrize(
    "interval_ms",
    [
        pytest.param("50", id="watchdog"),
        # The thread ticks once at start-up and then sleeps a minute: only the request's own
        # checkpoints can raise the alarm in time.
        pytest.param("60000", id="checkpoint-alarm-only"),
    ],
)
def test_request_growing_in_steps_is_dumped_before_the_limit(tmp_path: Path, interval_ms: str) -> None:
    data_dir = tmp_path / "data"
    server, limit = _server_near_its_limit(tmp_path, data_dir, MEMPROF_WATCHDOG_INTERVAL_MS=interval_ms)
    try:
        result = server.get(f"/grow/big?stop={int(limit * 0.97)}", timeout=60)
        dumps = wait_for(lambda: read_json_files(data_dir / "dumps", "dump-*.json"), timeout=10)
    finally:
        server.stop()
    assert result["peak"] < limit
    first = dumps[0]
    Dump.model_validate(first)
    assert first["trigger"] == "threshold" and first["pid"] == server.pid
    memory = first["memory"]
    assert memory["limit"] == int(limit / _MB * _MB) or abs(memory["limit"] - limit) < _MB
    assert 0.8 * limit <= memory["rss"] < limit, "the dump must come before the limit"
    # The request that was growing is named by its route, with its checkpoints so far.
    assert first["request"]["route"] == "/grow/{tag}"
    assert first["request"]["method"] == "GET"
    assert any(name.startswith("step") for name in first["request"]["checkpoints"])
    assert [r["route"] for r in first["inflight"]] == ["/grow/{tag}"]
    # Object counts show what the request piled up; stacks show where it was.
    counts = {t["type"]: t["count"] for t in first["objects"]["top"]}
    assert counts.get("app_memprof.Payload", 0) >= 5000
    frames = [f for t in first["threads"] for f in t["stack"]] + [
        f for t in first["tasks"] for f in t["stack"]
    ]
    assert any("app_memprof.py" in f and f.endswith(" in grow") for f in frames)
    # A suspended request shows in its task's await chain, a running one in the loop thread's stack.
    assert first["tasks"] and all(t["stack"] for t in first["tasks"])
    assert first["gc"]["counts"] and first["modules"]["count"] > 100
    # One dump per new high-water mark: a handful at most for one climb, not one per tick.
    assert len(dumps) <= 10


def test_unsampled_request_growing_is_named_in_the_dump(tmp_path: Path) -> None:
    """Light mode, nothing sampled: the watchdog's dump still names the request in flight."""
    data_dir = tmp_path / "data"
    server, limit = _server_near_its_limit(
        tmp_path, data_dir, MEMPROF_MODE="light", MEMPROF_SAMPLE_RATE="0", MEMPROF_WATCHDOG_INTERVAL_MS="50"
    )
    try:
        server.get(f"/grow/big?stop={int(limit * 0.97)}", timeout=60)
        dumps = wait_for(lambda: read_json_files(data_dir / "dumps", "dump-*.json"), timeout=10)
    finally:
        server.stop()
    first = dumps[0]
    Dump.model_validate(first)
    assert first["trigger"] == "threshold" and 0.8 * limit <= first["memory"]["rss"] < limit
    assert first["request"] is None  # nothing was profiled ...
    (request,) = first["inflight"]  # ... but the request in flight is named
    assert (request["method"], request["route"], request["detail"]) == ("GET", "/grow/{tag}", "unprofiled")
    assert request["elapsed_ms"] > 0 and "stop=" not in json.dumps(first)


def test_signal_asks_a_running_worker_for_a_dump(tmp_path: Path) -> None:
    import signal
    import threading

    import httpx

    data_dir = tmp_path / "data"
    server = Server(tmp_path / "app", data_dir, MEMPROF_DUMP_SIGNAL="SIGUSR2")
    try:
        thread = threading.Thread(target=lambda: httpx.get(f"{server.url}/slow/5", timeout=20))
        thread.start()
        wait_for(lambda: any(d["inflight"] for d in read_json_files(data_dir / "workers", "*.json")))
        server.proc.send_signal(signal.SIGUSR2)
        (dump,) = wait_for(lambda: read_json_files(data_dir / "dumps", "dump-*-signal.json"))
        thread.join(20)
        assert server.get("/rss")["pid"] == server.pid, "the worker lives on"
    finally:
        server.stop()
    Dump.model_validate(dump)
    assert dump["trigger"] == "signal" and dump["request"]["route"] == "/slow/{seconds}"


def test_memprof_dump_asks_running_workers_for_a_manual_dump(tmp_path: Path) -> None:
    import subprocess
    import sys

    data_dir = tmp_path / "data"
    cli = [sys.executable, "-c", "from memprof.cli import main; main()", "dump"]
    server = Server(tmp_path / "app", data_dir)
    try:
        wait_for(lambda: list((data_dir / "workers").glob("*.json")))
        done = subprocess.run(
            [*cli, str(data_dir), "--name", "before-deploy"], capture_output=True, text=True, timeout=60
        )
        assert server.get("/rss")["pid"] == server.pid
    finally:
        server.stop()
    assert done.returncode == 0, done.stderr
    (line,) = done.stdout.splitlines()
    path = Path(line)
    assert path.name.endswith(f"-{server.pid}-manual-before-deploy.json")
    record = Dump.model_validate_json(path.read_text())
    assert record.trigger == "manual" and record.name == "before-deploy" and record.pid == server.pid

    # With no worker running, one clear sentence and a non-zero exit.
    idle = subprocess.run([*cli, str(data_dir), "--wait", "1"], capture_output=True, text=True, timeout=60)
    assert idle.returncode == 2 and "no worker is running" in idle.stderr
