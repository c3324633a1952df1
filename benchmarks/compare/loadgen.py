"""A bounded HTTP/1.1 load generator: a fixed number of requests over a fixed number of keep-alive
connections (asyncio streams, no client library), each request's latency measured from the first byte
written to the last byte of the response read."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class LoadResult:
    """What a load run saw."""

    requests: int
    wall_s: float
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0

    @property
    def rps(self) -> float:
        return len(self.latencies_ms) / self.wall_s if self.wall_s else 0.0

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


async def _connection(
    host: str,
    port: int,
    next_index: Callable[[], int],
    total: int,
    path_of: Callable[[int], str],
    out: LoadResult,
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while (i := next_index()) < total:
            request = (
                f"GET {path_of(i)} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: memprof-bench\r\n\r\n".encode()
            )
            t0 = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            out.latencies_ms.append((time.perf_counter() - t0) * 1000)
            if head[9:12] != b"200":
                out.errors += 1
    finally:
        writer.close()


async def run_load(
    host: str, port: int, *, requests: int, concurrency: int, path_of: Callable[[int], str]
) -> LoadResult:
    """Send ``requests`` GETs over ``concurrency`` connections; return latencies and the wall time."""
    counter = itertools.count()
    out = LoadResult(requests=requests, wall_s=0.0)
    t0 = time.perf_counter()
    await asyncio.gather(
        *(_connection(host, port, counter.__next__, requests, path_of, out) for _ in range(concurrency))
    )
    out.wall_s = time.perf_counter() - t0
    return out


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed (a faster client disturbs the server less), else asyncio's loop."""
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()
