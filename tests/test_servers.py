"""memprof under real servers, stopped the way production stops them (SIGTERM): gunicorn --preload with
four uvicorn workers (both ways of adding the middleware), uvicorn without lifespan, hypercorn.

Every worker serves and ticks its own watchdog (its flight file is rewritten after the fork), the master
stays inert, SIGTERM stops everything promptly, every record is written, no flight file is left and
``memprof postmortem`` finds no dead worker: a clean stop is never reported as a crash.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests._memprof_server import free_port, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

MEMPROF = [sys.executable, "-c", "from memprof.cli import main; main()"]
HOST = socket.gethostname()

APP_SOURCE = textwrap.dedent(
    """
    import os
    import time

    from fastapi import FastAPI

    from memprof import MemprofMiddleware

    app = FastAPI()


    @app.get("/pid")
    async def pid():
        return {"pid": os.getpid()}


    @app.get("/block")
    async def block():
        time.sleep(0.2)  # holds this worker's event loop: the next connections go to other workers
        return {"pid": os.getpid()}


    if os.environ["WRAP"] == "import":
        app = MemprofMiddleware(app)  # at import: a --preload master builds it, only workers serve
    else:
        app.add_middleware(MemprofMiddleware)
    """
)


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "MEMPROF_DATA_DIR": str(data_dir),
        "MEMPROF_MODE": "aggressive",
        "MEMPROF_LOG_EVENTS": "false",
        "MEMPROF_WATCHDOG_INTERVAL_MS": "50",
        "PYTHONWARNINGS": "ignore::DeprecationWarning",  # uvicorn.workers points at uvicorn-worker
        **extra,
    }
    env.pop("MEMPROF_RAISE_INTERNAL_ERRORS", None)  # production-like servers
    return env


def _start(cmd: list[str], app_dir: Path, env: dict[str, str], url: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(cmd, cwd=app_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{cmd[2]} exited: {_output(proc)}")
        try:
            httpx.get(f"{url}/ready", timeout=1.0)  # a 404: not counted with the requests below
            return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"{cmd[2]} did not start: {_output(proc)}")


def _output(proc: subprocess.Popen[bytes]) -> str:
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)
    return proc.stdout.read().decode(errors="replace") if proc.stdout else ""


def _stop(proc: subprocess.Popen[bytes], grace: float = 10.0) -> float:
    """SIGTERM, as an orchestrator sends it; return the seconds until the process is gone (a process
    still running after ``grace`` seconds fails the test)."""
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {grace} s after SIGTERM: {_output(proc)}")
    return time.monotonic() - t0


def _flight_files(data_dir: Path) -> dict[int, dict[str, Any]]:
    out = {}
    for path in (data_dir / "workers").glob("*.json"):
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # being replaced
        out[int(doc["pid"])] = doc
    return out


def _samples(data_dir: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for path in sorted(data_dir.glob("samples-*.jsonl"))
        for line in path.read_text().splitlines()
        if line.strip()
    ]


def _postmortem_finds_no_dead_worker(data_dir: Path) -> None:
    done = subprocess.run([*MEMPROF, "postmortem", str(data_dir)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "No crashed workers found." in done.stdout, done.stdout + done.stderr
    assert not list((data_dir / "crashes").glob("*.json"))


def _gunicorn_round(tmp_path: Path, wrap: str) -> dict[str, Any]:
    app_dir, data_dir = tmp_path / "app", tmp_path / "data"
    app_dir.mkdir(parents=True, exist_ok=True)
    (app_dir / "app_gunicorn.py").write_text(APP_SOURCE)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "gunicorn", "app_gunicorn:app", "--preload", "-w", "4"]
    cmd += ["-k", "uvicorn.workers.UvicornWorker", "-b", f"127.0.0.1:{port}", "--graceful-timeout", "20"]
    proc = _start(cmd, app_dir, _env(data_dir, WRAP=wrap), url)
    try:
        # Every worker serves: requests that hold a worker's loop push the next ones to the others.
        served: set[int] = set()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            for _ in range(20):
                pids = pool.map(lambda _: httpx.get(f"{url}/block", timeout=30).json()["pid"], range(8))
                served.update(pids)
                if len(served) == 4:
                    break
        assert len(served) == 4, f"only {len(served)} workers served"
        # Each worker's watchdog ticks: its own flight file, rewritten after the fork; none for the master.
        first = wait_for(lambda: (f := _flight_files(data_dir)) and served <= set(f) and f)
        wait_for(
            lambda: all(d["last_seen"] > first[p]["last_seen"] for p, d in _flight_files(data_dir).items())
        )
        files = _flight_files(data_dir)
        assert set(files) == served, "a flight file for each worker, none for the master"
        assert proc.pid not in files and not list((data_dir / "status").glob(f"*-{proc.pid}.json"))
        assert not list(data_dir.glob(f"state-*-{proc.pid}.jsonl"))
    finally:
        stopped_in = _stop(proc)
    assert proc.returncode == 0, _output(proc)
    assert not list((data_dir / "workers").glob("*.json")), "no flight file left after a clean stop"
    _postmortem_finds_no_dead_worker(data_dir)
    sampled = {s["pid"] for s in _samples(data_dir)}
    assert sampled == served, "samples come from every worker that served"
    return {"stopped_in_s": round(stopped_in, 2), "workers": len(served)}


@pytest.mark.parametrize("round_", [1, 2, 3])
def test_gunicorn_preload_four_workers_wrapped_at_import(tmp_path: Path, round_: int) -> None:
    result = _gunicorn_round(tmp_path, "import")
    print(f"gunicorn --preload -w 4, wrapped at import, round {round_}: {result}")


def test_gunicorn_preload_four_workers_with_add_middleware(tmp_path: Path) -> None:
    result = _gunicorn_round(tmp_path, "add_middleware")
    print(f"gunicorn --preload -w 4, add_middleware: {result}")


@pytest.mark.parametrize(
    "server",
    [
        ["uvicorn", "app_server:app", "--lifespan", "off"],  # re-raises SIGTERM after its graceful stop
        ["hypercorn", "app_server:app"],
    ],
    ids=["uvicorn-lifespan-off", "hypercorn"],
)
def test_sigterm_is_a_clean_stop_without_lifespan_and_under_hypercorn(
    tmp_path: Path, server: list[str]
) -> None:
    app_dir, data_dir = tmp_path / "app", tmp_path / "data"
    app_dir.mkdir()
    (app_dir / "app_server.py").write_text(APP_SOURCE)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    bind = (
        ["--host", "127.0.0.1", "--port", str(port)]
        if server[0] == "uvicorn"
        else ["-b", f"127.0.0.1:{port}"]
    )
    proc = _start([sys.executable, "-m", *server, *bind], app_dir, _env(data_dir, WRAP="import"), url)
    try:
        pids = {httpx.get(f"{url}/pid", timeout=10).json()["pid"] for _ in range(25)}
        (pid,) = pids
        wait_for(lambda: pid in _flight_files(data_dir))
    finally:
        _stop(proc)
    assert proc.returncode in (0, -signal.SIGTERM), _output(proc)  # uvicorn re-raises the signal
    samples = [s for s in _samples(data_dir) if s["request"]["route"] == "/pid"]
    assert len(samples) == 25, "every record written"
    assert not list((data_dir / "workers").glob("*.json")), "no flight file left after a clean stop"
    _postmortem_finds_no_dead_worker(data_dir)
