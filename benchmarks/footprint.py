"""memprof's own footprint per worker: virtual and resident memory, threads, and what an app keeps under an
address-space limit.

    .venv/bin/python -m benchmarks.footprint [--limit-mib 800] [--requests 300] [--memprof-root PATH]

Each case is a real ``uvicorn`` worker (lifespan on) serving a small FastAPI app, ``bare`` (memprof not
even imported) or wrapped in ``MemprofMiddleware`` (light mode, the production default; a data dir in a
temporary directory), under the default glibc settings and with ``MALLOC_ARENA_MAX=1``. After
``--requests`` requests (memprof has started, written records and its flight file) it reads
``/proc/<pid>/status`` (VmSize, VmRSS, Threads), then finds by bisection (1 MiB steps) the largest
``bytearray`` an endpoint can allocate in a worker started under ``prlimit --as=<limit>``, each probe in a
fresh worker after the same warm-up: in a process with more than one thread, glibc answers a failed
allocation by reserving one more 64 MiB arena, so that a probe after a failure would see less than the
app's first attempt did. ``--memprof-root`` serves another checkout of memprof (to compare with an older
commit).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx

APP = textwrap.dedent(
    """
    import os

    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    app = FastAPI()


    @app.get("/users/{user_id}")
    async def user(user_id: int):
        return {"id": user_id}


    @app.get("/alloc/{mib}")
    async def alloc(mib: int):
        try:
            block = bytearray(mib * 1024 * 1024)
        except MemoryError:
            return JSONResponse({"ok": False}, status_code=507)
        del block
        return {"ok": True}


    if os.environ.get("FOOTPRINT_MEMPROF") == "1":
        from memprof import MemprofMiddleware

        app = MemprofMiddleware(app)
    """
)
MIB = 1024 * 1024


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Worker:
    """One uvicorn worker serving the footprint app, optionally under an address-space limit."""

    def __init__(self, app_dir: Path, env: dict[str, str], limit_mib: int | None) -> None:
        self.port = _port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "uvicorn", "footprint_app:app", "--app-dir", str(app_dir)]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"]
        if limit_mib is not None:
            cmd = ["prlimit", f"--as={limit_mib * MIB}", *cmd]
        # cwd: the app's directory, so that memprof comes from PYTHONPATH, not from the current directory
        self.proc = subprocess.Popen(
            cmd, cwd=app_dir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{self.url}/users/0", timeout=2)
                break
            except httpx.HTTPError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the worker did not start") from None
                time.sleep(0.1)

    def warm(self, requests: int) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            for i in range(requests):
                client.get(f"/users/{i}")
        time.sleep(1.2)  # memprof's background thread has ticked, polled and written by now

    def status(self) -> dict[str, int]:
        out = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmSize", "VmRSS", "Threads"):
                out[key] = int(value.split()[0])
        return out

    def allocates(self, mib: int) -> bool:
        """Whether the app can allocate ``mib`` MiB (one attempt)."""
        return httpx.get(f"{self.url}/alloc/{mib}", timeout=30).status_code == 200

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def largest_allocation_mib(app_dir: Path, env: dict[str, str], limit_mib: int, requests: int) -> int:
    """The largest allocation that succeeds at the first attempt in a warmed worker under the limit."""

    def first_attempt(mib: int) -> bool:
        worker = Worker(app_dir, env, limit_mib)
        try:
            worker.warm(requests)
            return worker.allocates(mib)
        finally:
            worker.stop()

    worker = Worker(app_dir, env, limit_mib)
    try:
        worker.warm(requests)
        headroom = limit_mib - worker.status()["VmSize"] // 1024  # what the kernel would still map
    finally:
        worker.stop()
    lo, hi = headroom - 32, headroom + 2  # lo succeeds, hi fails (checked)
    while not first_attempt(lo):
        lo, hi = lo - 64, lo
    while first_attempt(hi):
        lo, hi = hi, hi + 64
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if first_attempt(mid):
            lo = mid
        else:
            hi = mid
    return lo


def measure(
    app_dir: Path, *, memprof: bool, arena_max: str | None, limit_mib: int, requests: int, root: Path
) -> dict[str, Any]:
    """One case: per-worker memory after warm-up, and the largest allocation under the limit."""
    env = {**os.environ, "PYTHONPATH": str(root), "FOOTPRINT_MEMPROF": "1" if memprof else "0"}
    env.pop("MALLOC_ARENA_MAX", None)
    env.pop("MEMPROF_RAISE_INTERNAL_ERRORS", None)
    if arena_max is not None:
        env["MALLOC_ARENA_MAX"] = arena_max
    data_dir = Path(tempfile.mkdtemp(prefix="memprof-footprint-"))
    env["MEMPROF_DATA_DIR"] = str(data_dir)
    try:
        worker = Worker(app_dir, env, None)
        try:
            worker.warm(requests)
            status = worker.status()
        finally:
            worker.stop()
        largest = largest_allocation_mib(app_dir, env, limit_mib, requests)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    return {
        "memprof": memprof,
        "MALLOC_ARENA_MAX": arena_max or "unset",
        "vm_mib": round(status["VmSize"] / 1024, 1),
        "rss_mib": round(status["VmRSS"] / 1024, 1),
        "threads": status["Threads"],
        "largest_allocation_mib": largest,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--limit-mib", type=int, default=800)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--memprof-root", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    app_dir = Path(tempfile.mkdtemp(prefix="memprof-footprint-app-"))
    (app_dir / "footprint_app.py").write_text(APP)
    rows = []
    for arena_max in (None, "1"):
        for memprof in (False, True):
            rows.append(
                measure(
                    app_dir,
                    memprof=memprof,
                    arena_max=arena_max,
                    limit_mib=args.limit_mib,
                    requests=args.requests,
                    root=args.memprof_root,
                )
            )
    shutil.rmtree(app_dir, ignore_errors=True)
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print(
        f"| case | MALLOC_ARENA_MAX | VmSize MiB | VmRSS MiB | threads | largest allocation under --as={args.limit_mib}MiB |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for row in rows:
        case = "memprof" if row["memprof"] else "bare"
        print(
            f"| {case} | {row['MALLOC_ARENA_MAX']} | {row['vm_mib']} | {row['rss_mib']} | {row['threads']} "
            f"| {row['largest_allocation_mib']} MiB |"
        )


if __name__ == "__main__":
    main()
