"""A real uvicorn subprocess serving a small app wrapped in MemprofMiddleware, for dump and flight tests."""

from __future__ import annotations

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

APP_SOURCE = textwrap.dedent(
    '''
    import asyncio
    import json
    import logging
    import os

    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from memprof import MemprofMiddleware, checkpoint
    from memprof.memory import rss_bytes

    STEP = 3 * 1024 * 1024


    class Payload:
        def __init__(self, i):
            self.i = i


    async def rss(request):
        return JSONResponse({"rss": rss_bytes(), "pid": os.getpid()})


    async def grow(request):
        """Allocate in steps until RSS is just under the limit given, then let it all go."""
        stop = int(request.query_params["stop"])
        held = []
        steps = 0
        while rss_bytes() < stop and steps < 500:
            held.append((b"\\x01" * STEP, [Payload(i) for i in range(5000)]))
            steps += 1
            checkpoint.mark(f"step{steps}")
            await asyncio.sleep(0.03)
        peak = rss_bytes()
        del held
        return JSONResponse({"steps": steps, "peak": peak})


    async def slow(request):
        await asyncio.sleep(float(request.path_params["seconds"]))
        return JSONResponse({"slept": True})


    async def echo(request):
        """``/echo/{token}``: a path that may carry a secret; ``?hold=s`` keeps the request in flight."""
        await asyncio.sleep(float(request.query_params.get("hold", "0")))
        return JSONResponse({"ok": True})


    if os.environ.get("APP_LOG_JSON"):  # the app logs everything, every field, as JSON lines on stdout
        handler = logging.StreamHandler()
        handler.setFormatter(type("F", (logging.Formatter,), {"format": lambda self, r: json.dumps(r.__dict__, default=str)})())
        logging.basicConfig(level=logging.DEBUG, handlers=[handler])

    app = MemprofMiddleware(
        Starlette(
            routes=[
                Route("/rss", rss),
                Route("/grow/{tag}", grow),
                Route("/slow/{seconds}", slow),
                Route("/echo/{token}", echo),
            ]
        )
    )
    '''
)

# A plain ASGI app with no router: memprof's route is then the raw path.
RAW_APP_SOURCE = textwrap.dedent(
    """
    import asyncio

    from memprof import MemprofMiddleware


    async def plain(scope, receive, send):
        # Answers every path; ?hold keeps the request in flight for two seconds.
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if b"hold" in scope.get("query_string", b""):
            await asyncio.sleep(2)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b"{}"})


    app = MemprofMiddleware(plain)
    """
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """``uvicorn app_memprof:app`` (or ``app="app_raw:app"``, a plain ASGI app) on a free 127.0.0.1 port
    with the given MEMPROF_* environment."""

    def __init__(self, app_dir: Path, data_dir: Path, *, app: str = "app_memprof:app", **env: str) -> None:
        app_dir.mkdir(parents=True, exist_ok=True)
        (app_dir / "app_memprof.py").write_text(APP_SOURCE)
        (app_dir / "app_raw.py").write_text(RAW_APP_SOURCE)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = {
            **os.environ,
            "MEMPROF_DATA_DIR": str(data_dir),
            "MEMPROF_MODE": "aggressive",
            "MEMPROF_LOG_EVENTS": "false",
            "MEMPROF_WATCHDOG_INTERVAL_MS": "50",
            **env,
        }
        full_env.pop("MEMPROF_RAISE_INTERNAL_ERRORS", None)  # a production-like server
        cmd = [sys.executable, "-m", "uvicorn", app, "--app-dir", str(app_dir)]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port), "--lifespan", "on", "--log-level", "warning"]
        # Output to a file, not a pipe: a server that logs a lot must never block on a full pipe.
        self.log_path = app_dir / f"server-{self.port}.log"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(cmd, env=full_env, stdout=log, stderr=subprocess.STDOUT)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"uvicorn exited: {self.output()}")
            try:
                httpx.get(f"{self.url}/rss", timeout=1.0)
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"uvicorn did not start in {timeout} s: {self.output()}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def get(self, path: str, timeout: float = 30.0) -> Any:
        response = httpx.get(f"{self.url}{path}", timeout=timeout)
        response.raise_for_status()
        return response.json()

    def output(self) -> str:
        """What the server printed so far (stdout and stderr)."""
        return self.log_path.read_bytes().decode(errors="replace")

    def kill(self) -> None:
        """SIGKILL, as the OOM killer does, and reap the process."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        """A clean shutdown: SIGTERM, uvicorn runs the lifespan shutdown."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


def wait_for(predicate: Any, timeout: float = 15.0, interval: float = 0.05) -> Any:
    """Poll ``predicate()`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


def read_json_files(directory: Path, pattern: str) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(directory.glob(pattern))]
