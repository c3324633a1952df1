"""What memprof adds to a FastAPI worker's resident memory: imports, runtime, threads, after serving.

    .venv/bin/python -m benchmarks.bench_worker_rss [--runs 5]

Each run is a fresh subprocess: a FastAPI app serves 50 requests through raw ASGI calls (no client
library, which would load its own modules), then RSS is read; with ``memprof`` the same app is wrapped in
``MemprofMiddleware`` (aggressive mode, every request profiled) and serves 50 more, and RSS is read again
after its threads ran for a second. Reports the median RSS added, and the libraries memprof loaded.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

_PROBE = r"""
import asyncio, gc, json, os, sys, time

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

from fastapi import FastAPI

app = FastAPI()

@app.get("/")
def home():
    return {"ok": 1}

async def serve(app, n=50):
    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}
    async def send(message):
        pass
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
             "scheme": "http", "path": "/", "raw_path": b"/", "root_path": "", "query_string": b"",
             "headers": [], "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2)}
    for _ in range(n):
        await app(dict(scope), receive, send)

asyncio.run(serve(app)); gc.collect()
before, modules = rss(), set(sys.modules)
from memprof import MemprofMiddleware
asyncio.run(serve(MemprofMiddleware(app)))
time.sleep(1.0); gc.collect()
loaded = sorted({m.split(".")[0] for m in set(sys.modules) - modules} - {"memprof"})
print(json.dumps({"added": rss() - before, "loaded": loaded}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    added, loaded = [], []
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "MEMPROF_MODE": "aggressive", "MEMPROF_DATA_DIR": tmp}
        for _ in range(args.runs):
            out = subprocess.run(
                [sys.executable, "-W", "ignore", "-c", _PROBE],
                env=env,
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            result = json.loads(out.splitlines()[-1])
            added.append(result["added"])
            loaded = result["loaded"]
    print(
        f"RSS added to a FastAPI worker by memprof (median of {args.runs}): {statistics.median(added) / 1e6:.2f} MB"
    )
    print(f"libraries memprof loaded beyond FastAPI's: {', '.join(loaded) or 'none'}")


if __name__ == "__main__":
    main()
