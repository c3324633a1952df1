"""Bounded: 12,000 profiled requests and none of memprof's own structures grows.

Measures memprof's structures directly (queues, caches, per-request state, hook lists, live profiles)
and, with tracemalloc, the memory allocated by memprof's own source files; not RSS, not timings.
"""

from __future__ import annotations

import asyncio
import gc
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import memprof
from memprof import MemprofMiddleware
from memprof import runtime as runtime_mod
from memprof.profile import RequestProfile
from memprof.safety import control as control_mod
from memprof.safety.guards import BREAKERS
from memprof.safety.isolation import errors
from memprof.safety.tokens import sign_token
from tests.apps import AppError, starlette_app

MEMPROF_DIR = str(Path(memprof.__file__).parent)
SECRET = "soak-secret-0123456789abcdef"
PATHS = ["/users/1", "/users/2", "/stream", "/boom", "/background", "/api/items/3", "/nowhere"]


async def _call(app: Any, path: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET"}
    scope |= {"scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b""}
    scope |= {"root_path": "", "headers": [(b"host", b"t"), *(headers or [])]}

    received = False

    async def receive() -> dict[str, Any]:
        nonlocal received
        if not received:
            received = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # the client stays connected (a streaming response waits on this)
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        return None

    try:
        await app(scope, receive, send)
    except AppError:
        pass


def _structures(mw: MemprofMiddleware, since: float) -> dict[str, int]:
    rt = mw.runtime
    assert rt.writer.flush(30)
    gc.collect()
    return {
        "active": len(rt.active),
        "inflight": rt.inflight,
        "unprofiled_inflight": len(rt.unprofiled),
        "writer_queue": len(rt.writer._queue),
        "writer_pending": rt.writer.pending,
        "guard_window": len(rt.guard.window),
        "breaker_failures": rt.breaker.failures,
        "error_places": len(errors.counts),
        "start_hooks": len(runtime_mod.START_HOOKS),
        "finish_hooks": len(runtime_mod.FINISH_HOOKS),
        # Live runtimes: the weak list is pruned whenever it is read, and memprof's stop watch reads it in
        # the background, so its raw length would count an earlier test's runtime collected meanwhile.
        "runtimes": len(runtime_mod.runtimes()),
        "breakers": len(BREAKERS),
        "controllers": len(control_mod.POLLER.controllers),
        "nonces": rt.verifier.cached_nonces if rt.verifier is not None else 0,
        "token_reasons": len(rt.verifier.counts) if rt.verifier is not None else 0,
        # profiles of this soak still alive (earlier tests' writers may each keep their last one)
        "live_profiles": sum(
            1 for o in gc.get_objects() if isinstance(o, RequestProfile) and o.start_time >= since
        ),
    }


def _memprof_bytes() -> int:
    snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(True, f"{MEMPROF_DIR}/*")])
    return sum(stat.size for stat in snapshot.statistics("filename"))


@pytest.mark.slow
def test_ten_thousand_profiled_requests_leave_memprof_flat(
    make_settings: Callable[..., Any], samples: Any
) -> None:
    settings = make_settings(targeted_secret=SECRET, queue_size=20_000, max_total_mb=20)
    mw = MemprofMiddleware(starlette_app(), settings=settings)
    loop = asyncio.new_event_loop()

    def run(n: int, start: int) -> None:
        for i in range(start, start + n):
            loop.run_until_complete(_call(mw, PATHS[i % len(PATHS)]))

    since = time.time()
    run(2_000, 0)  # warm-up: caches of the app, the writer's file, interned strings
    tracemalloc.start(1)
    try:
        before = _structures(mw, since)
        bytes_before = _memprof_bytes()
        run(5_000, 2_000)
        middle = _structures(mw, since)
        run(5_000, 7_000)
        after = _structures(mw, since)
        bytes_after = _memprof_bytes()
    finally:
        tracemalloc.stop()
        loop.close()
    assert mw.runtime.profiled == 12_000
    # The writer thread (and the watchdog) may each still hold the last profile they handled.
    live = [snapshot.pop("live_profiles") for snapshot in (before, middle, after)]
    assert max(live) <= 2, live
    assert before == middle == after, (before, middle, after)
    assert after["active"] == after["writer_queue"] == 0
    assert after["guard_window"] <= 100
    # memprof's own allocations after 10,000 more requests: flat within a small slack (no growth per request)
    assert bytes_after - bytes_before < 64 * 1024, (bytes_before, bytes_after)
    assert mw.runtime.writer.written == 12_000 and mw.runtime.writer.dropped == 0


@pytest.mark.slow
def test_targeted_soak_keeps_the_replay_cache_bounded(make_settings: Callable[..., Any]) -> None:
    settings = make_settings(mode="targeted", targeted_secret=SECRET, targeted_rate_limit=1e9)
    mw = MemprofMiddleware(starlette_app(), settings=settings)
    verifier = mw.runtime.verifier
    assert verifier is not None
    verifier.cache_size = 2_000
    loop = asyncio.new_event_loop()
    now = time.time()
    for i in range(10_500):
        # tokens of 1 s signed as time goes on: the early ones expire and make room, the later ones stay
        # live (expiry + skew) and fill the cache, which then refuses rather than grow
        token = sign_token(SECRET, ttl=1, now=now - 40 + i * 0.01).encode()
        loop.run_until_complete(_call(mw, "/users/1", [(b"x-memprof-profile", token)]))
    loop.close()
    assert verifier.cached_nonces <= 2_000
    assert mw.runtime.writer.flush(30)
    counts = verifier.counts
    assert counts["accepted"] + counts["expired"] + counts["replay_cache_full"] == 10_500, counts
    assert counts["accepted"] >= 2_000 and counts["replay_cache_full"] > 0  # full of live nonces: refuse
    assert len(mw.runtime.active) == 0 and mw.runtime.writer.written == counts["accepted"]
