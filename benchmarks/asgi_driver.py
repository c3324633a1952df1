"""Drive an ASGI app in-process: raw ``await app(scope, receive, send)`` calls on one event loop.

No server, no sockets, no client library: what is measured is the app and its middleware. Each batch
reports wall time, the CPU time of the calling thread (the request path: what the event loop spends)
and the CPU time of every other thread in the process (memprof's writer thread building and writing
records off the request path).
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

Message = MutableMapping[str, Any]
ASGIApp = Callable[[MutableMapping[str, Any], Callable[[], Awaitable[Message]], Any], Awaitable[None]]

_REQUEST = {"type": "http.request", "body": b"", "more_body": False}


def http_scope(path: str = "/", method: str = "GET") -> dict[str, Any]:
    """A plain HTTP/1.1 scope as uvicorn would build it (copied for every request)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"bench"), (b"user-agent", b"memprof-bench"), (b"accept", b"*/*")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


@dataclass(frozen=True)
class Batch:
    """Timings of ``n`` requests, in nanoseconds."""

    n: int
    wall_ns: int
    thread_cpu_ns: int
    other_cpu_ns: int
    statuses_ok: bool


async def _receive() -> Message:
    return dict(_REQUEST)


async def _drive(app: ASGIApp, template: dict[str, Any], n: int) -> tuple[int, int, bool]:
    status: list[int] = []

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    copy = dict.copy
    t_wall = time.perf_counter_ns()
    t_cpu = time.thread_time_ns()
    for _ in range(n):
        scope = copy(template)
        scope["state"] = {}
        await app(scope, _receive, send)
    cpu = time.thread_time_ns() - t_cpu
    wall = time.perf_counter_ns() - t_wall
    return wall, cpu, len(status) == n and all(s == 200 for s in status)


def run_batch(
    loop: asyncio.AbstractEventLoop,
    app: ASGIApp,
    n: int,
    *,
    path: str = "/",
    after: Callable[[], object] | None = None,
) -> Batch:
    """Send ``n`` GET requests to ``app``, then call ``after`` (e.g. a writer flush) before measuring
    the other threads' CPU, so a background thread's work for these requests is counted in full."""
    template = http_scope(path)
    gc.collect()
    proc0 = time.process_time_ns()
    thread0 = time.thread_time_ns()
    wall, cpu, ok = loop.run_until_complete(_drive(app, template, n))
    if after is not None:
        after()
    other = (time.process_time_ns() - proc0) - (time.thread_time_ns() - thread0)
    return Batch(n=n, wall_ns=wall, thread_cpu_ns=cpu, other_cpu_ns=max(0, other), statuses_ok=ok)
