"""``memprof demo``: run the demo app under uvicorn with memprof on, drive bounded traffic, diagnose.

Two short phases: a calibration run measures the app's resting memory and its peak under the export, so
the profiled run can set ``MEMPROF_MEMORY_LIMIT_MB`` low enough that a critical dump happens (the
situation memprof is built for), whatever this machine's Python and libraries weigh. Then the analyzer
reads the data dir, prints the findings, and writes the HTML report.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from memprof.demo.traffic import TrafficResult, drive, plan

MB = 1024 * 1024
Echo = Callable[[str], None]


@dataclass
class DemoResult:
    """Where the demo left its evidence."""

    workdir: Path
    data_dir: Path
    report: Path
    traffic: TrafficResult
    limit_mb: float
    analyze_exit: int


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(workdir: Path, env: dict[str, str], startup_timeout: float = 60.0) -> Iterator[tuple[str, int]]:
    """Run the demo app under uvicorn on 127.0.0.1; yield (base URL, pid); stop it with SIGTERM."""
    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        "memprof.demo.app:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    cmd += ["--log-level", "warning", "--no-access-log"]
    log = (workdir / "uvicorn.log").open("ab")
    proc = subprocess.Popen(cmd, cwd=workdir, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the demo app exited at start-up; see {workdir / 'uvicorn.log'}")
            try:
                if httpx.get(f"{base}/health", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the demo app did not start in {startup_timeout:.0f}s")
            time.sleep(0.2)
        yield base, proc.pid
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        log.close()


def calibrate(workdir: Path, base_env: dict[str, str]) -> tuple[int, int]:
    """Resting RSS after a warm-up, and the peak RSS after one export, in bytes."""
    env = {**base_env, "MEMPROF_ENABLED": "false"}
    with serve(workdir, env) as (base, pid):
        warm = [["/login/alice", "/dashboard", "/orders", "/customers/1", "/badge/1", "/admin/notes"]]
        drive(base, warm)
        rest = psutil.Process(pid).memory_info().rss
        drive(base, [["/export"]])
        peak = psutil.Process(pid).memory_info().rss
    return rest, max(peak, rest + 20 * MB)


def run_demo(workdir: Path, echo: Echo = print, keep: bool = False) -> DemoResult:
    """Run the whole demo in ``workdir`` and return where its evidence went."""
    workdir = workdir.resolve()
    if workdir.exists() and not keep:
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    data_dir = workdir / "memprof-data"
    base_env = {"DEMO_DATABASE_URL": f"sqlite:///{workdir / 'demo.db'}", "MEMPROF_DATA_DIR": str(data_dir)}

    echo("memprof demo: an example FastAPI + SQLAlchemy app with six planted memory problems.")
    echo("[1/4] calibrating: how much memory the app needs at rest and under its biggest request ...")
    rest, peak = calibrate(workdir, base_env)
    # The dump threshold (90% of the limit) sits halfway between rest and the export's peak.
    limit = (rest + 0.5 * (peak - rest)) / 0.9
    limit_mb = round(limit / MB, 1)
    echo(
        f"      at rest {rest / MB:.0f} MB, export peak {peak / MB:.0f} MB -> MEMPROF_MEMORY_LIMIT_MB={limit_mb}"
    )

    echo("[2/4] profiling: aggressive mode, bounded traffic from 4 clients on 127.0.0.1 ...")
    env = {
        **base_env,
        "MEMPROF_MODE": "aggressive",
        "MEMPROF_MEMORY_LIMIT_MB": str(limit_mb),
        "MEMPROF_STATE_INTERVAL_S": "1",  # cache sizes every second: the run is short
    }
    with serve(workdir, env) as (base, _pid):
        traffic = drive(base, plan())
    statuses = ", ".join(f"{n}x {code}" for code, n in sorted(traffic.by_status.items()))
    echo(f"      sent {traffic.sent} requests ({statuses}); records in {data_dir}")

    echo("[3/4] diagnosing: memprof analyze " + str(data_dir))
    analyze = subprocess.run([sys.executable, "-m", "memprof", "analyze", str(data_dir)], check=False)
    report = workdir / "report.html"
    echo("[4/4] report: memprof report --html " + str(report))
    subprocess.run(
        [sys.executable, "-m", "memprof", "report", str(data_dir), "--html", str(report)], check=False
    )
    echo("")
    echo(NEXT_STEPS.format(data_dir=data_dir, report=report))
    return DemoResult(workdir, data_dir, report, traffic, limit_mb, analyze.returncode)


NEXT_STEPS = """Where to look next:
  - Each finding above names its route, the evidence (numbers and the records they came from) and the fix.
  - The HTML report, {report}, charts memory over time with the dump marked, per route and per phase.
  - The raw evidence is in {data_dir}: samples-*.jsonl (one line per request), dumps/ (the critical dump
    written before the limit), state-*.jsonl (cache sizes over time).
  - To verify a fix: capture again into another data dir and run `memprof compare OLD NEW`.
  - In your own app: `app = MemprofMiddleware(app)`, `instrument_sqlalchemy(engine)`, and
    MEMPROF_MODE=light in production (1% of requests), aggressive for a short window when hunting."""
