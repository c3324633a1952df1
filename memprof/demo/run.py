"""``memprof demo``: run the demo app under uvicorn with memprof on, drive bounded traffic, diagnose.

The traffic (:mod:`memprof.demo.traffic`) has three phases: the admin panel, users browsing, then a
crisis of concurrent exports. A calibration run replays it with the same settings and measures the
process's peak memory after the browsing and after the crisis, so that the profiled run can set
``MEMPROF_MEMORY_LIMIT_MB`` with its dump threshold between the two: a critical dump happens in the crisis
(the situation memprof is built for), and the memory guard, which then narrows profiling to checkpoints,
cannot strip detail from the browsing, whatever this machine's Python and libraries weigh. Then the
analyzer reads the data dir, prints the findings and which of them answers each planted problem, and
writes the HTML report.
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
from typing import Any

import httpx
import psutil

from memprof.demo.planted import PLANTED, render_map
from memprof.demo.traffic import Plan, TrafficResult, drive, plan

MB = 1024 * 1024
UNREACHABLE_MB = 1024 * 1024  # the calibration's limit: 1 TiB, a dump threshold it never reaches
DUMP_THRESHOLD = 0.9  # MEMPROF_DUMP_THRESHOLD's default
# The dump threshold sits a third of the way from the browse phase's peak to the crisis's, and at least
# MARGIN above the former: browsing peaks within a few MB from run to run, the crisis varies more (how much
# the four exports overlap), by tens of MB.
MARGIN = 10 * MB
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


def _peak_rss(pid: int) -> int:
    """The highest RSS process ``pid`` has had (``VmHWM`` on Linux; elsewhere its RSS now)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return int(psutil.Process(pid).memory_info().rss)


def create_database(url: str) -> None:
    """Create and fill the demo database before any server starts, in a process of its own.

    The app seeds an empty database at import, and the memory that takes (about 20,000 ORM objects at
    once) would stay in that server's RSS, to a degree that differs between Python versions (seen: 98 MB
    after seeding vs 76 MB without on 3.13, 120 vs 75 MB on 3.12), and be measured as the app's. Not in
    this process either: Linux carries a process's peak RSS across ``exec`` (``ru_maxrss``), so the
    servers started from here would report this seeding peak as their own.
    """
    code = "import sys; from memprof.demo.models import make_engine, seed; seed(make_engine(sys.argv[1]))"
    done = subprocess.run([sys.executable, "-c", code, url], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"could not create the demo database {url}: {done.stderr.strip()[-500:]}")


def calibrate(workdir: Path, env: dict[str, str], traffic: Plan) -> tuple[int, int]:
    """Replay the demo's traffic with the profiled run's settings and no memory limit in reach; return the
    process's peak RSS after the browse phase and after the crisis, in bytes.

    The same requests, concurrency and profiling as the profiled run, so its dump threshold can sit between
    the two peaks on this machine's Python and libraries.
    """
    data_dir = workdir / "calibration-data"
    env = {**env, "MEMPROF_DATA_DIR": str(data_dir), "MEMPROF_MEMORY_LIMIT_MB": str(UNREACHABLE_MB)}
    peaks: list[int] = []
    try:
        with serve(workdir, env) as (base, pid):
            drive(base, traffic.phases(), after_phase=lambda _i: peaks.append(_peak_rss(pid)))
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    _opening, browse, crisis = peaks
    return browse, crisis


def run_demo(workdir: Path, echo: Echo = print, keep: bool = False) -> DemoResult:
    """Run the whole demo in ``workdir`` and return where its evidence went."""
    workdir = workdir.resolve()
    if workdir.exists() and not keep:
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    data_dir = workdir / "memprof-data"
    database_url = f"sqlite:///{workdir / 'demo.db'}"
    env = {
        "DEMO_DATABASE_URL": database_url,
        "MEMPROF_DATA_DIR": str(data_dir),
        "MEMPROF_MODE": "aggressive",
        "MEMPROF_STATE_INTERVAL_S": "1",  # cache sizes every second: the run is short
    }
    traffic = plan()

    echo(f"memprof demo: an example FastAPI + SQLAlchemy app with {len(PLANTED)} planted memory problems.")
    echo("[1/4] calibrating: the same traffic once, to measure memory while browsing and in the crisis ...")
    create_database(database_url)
    browse_peak, crisis_peak = calibrate(workdir, env, traffic)
    limit = (browse_peak + max(MARGIN, (crisis_peak - browse_peak) / 3)) / DUMP_THRESHOLD
    limit_mb = round(limit / MB, 1)
    if crisis_peak < browse_peak + MARGIN:
        echo(
            "      (the exports barely raised memory in calibration: the profiled run may end without a dump)"
        )
    echo(
        f"      peak {browse_peak / MB:.0f} MB browsing, {crisis_peak / MB:.0f} MB when"
        f" {sum(map(len, traffic.crisis))} users export at once"
        f" -> MEMPROF_MEMORY_LIMIT_MB={limit_mb}"
    )

    echo(
        "[2/4] profiling: aggressive mode; the admin opens the admin panel, 4 users browse, then all export ..."
    )
    with serve(workdir, {**env, "MEMPROF_MEMORY_LIMIT_MB": str(limit_mb)}) as (base, _pid):
        result = drive(base, traffic.phases())
    statuses = ", ".join(f"{n}x {code}" for code, n in sorted(result.by_status.items()))
    echo(f"      sent {result.sent} requests ({statuses}); records in {data_dir}")

    echo("[3/4] diagnosing: memprof analyze " + str(data_dir))
    analyze = subprocess.run([sys.executable, "-m", "memprof", "analyze", str(data_dir)], check=False)
    echo("")
    echo("The planted problems, and the finding that answers each:")
    for line in render_map(_findings(data_dir)):
        echo(line)
    report = workdir / "report.html"
    echo("[4/4] report: memprof report --html " + str(report))
    subprocess.run(
        [sys.executable, "-m", "memprof", "report", str(data_dir), "--html", str(report)], check=False
    )
    echo("")
    echo(NEXT_STEPS.format(data_dir=data_dir, report=report))
    return DemoResult(workdir, data_dir, report, result, limit_mb, analyze.returncode)


def _findings(data_dir: Path) -> list[dict[str, Any]]:
    from memprof.analysis.analyze import analyze
    from memprof.analysis.sources import InputError

    try:
        findings: list[dict[str, Any]] = analyze([str(data_dir)]).summary["findings"]
    except InputError:
        return []
    return findings


NEXT_STEPS = """Where to look next:
  - Each finding above names its route, the evidence (numbers and the records they came from) and the fix.
  - The HTML report, {report}, charts memory over time with the dump marked, per route and per phase.
  - The raw evidence is in {data_dir}: samples-*.jsonl (one line per request), dumps/ (the critical dump
    written before the limit), state-*.jsonl (cache sizes over time).
  - To verify a fix: capture again into another data dir and run `memprof compare OLD NEW`.
  - In your own app: `app.add_middleware(MemprofMiddleware)` (it instruments SQLAlchemy too), and
    MEMPROF_MODE=light in production (1% of requests), aggressive for a short window when hunting."""
