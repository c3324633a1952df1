"""Analyzer at scale: N samples (default 1,000,000) in a temp data dir, analysed by the real CLI.

    .venv/bin/python -m benchmarks.bench_analyzer                                  # 1,000,000 samples
    .venv/bin/python -m benchmarks.bench_analyzer --samples 2000000 --workers 1000 # a fleet's day
    .venv/bin/python -m benchmarks.bench_analyzer --samples 100000
    .venv/bin/python -m benchmarks.bench_analyzer --parquet --keep DIR            # a fleet's Parquet export

Generates a realistic mix (80% checkpoint-only samples, 20% full detail with SQL, models, session),
spread over files of 50,000 lines from ``--workers`` worker ids (4 by default), plus a few dumps; then
runs ``memprof analyze DIR --json`` in a subprocess and reports its wall time, the CPU time of the whole
process tree, and its peak RSS: the largest sum of the RSS of the process and its children, sampled every
20 ms (and the children's ``ru_maxrss``). The targets: 1,000,000 samples in under 5 s; 2,000,000 from
1,000 worker ids within 10 s and 400 MB, on 2 cores.
"""

from __future__ import annotations

import argparse
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import orjson
import psutil

from memprof.analysis import synthetic as s

ROUTES = ["/items/{item_id}", "/users/{user_id}", "/orders", "/orders/{order_id}", "/admin/reports/{id}",
          "/health", "/search", "/cart"] + [f"/api/v1/resource{i}/{{id}}" for i in range(40)]  # fmt: skip
LINES_PER_FILE = 50_000


def generate(directory: Path, n: int, seed: int = 1, per_file: int = LINES_PER_FILE, workers: int = 4) -> int:
    """Write ``n`` samples (and a few dumps) into ``directory``; return the bytes written."""
    rng = random.Random(seed)
    total = 0
    stmts = [s.statement(f"SELECT t{i}.id, t{i}.name FROM t{i} WHERE t{i}.owner_id = ?", 1, rows=3, instances=3)
             for i in range(200)]  # fmt: skip
    fh = None
    for i in range(n):
        if i % per_file == 0:
            if fh is not None:
                fh.close()
            fh = (
                directory / f"samples-20261129T100000-{100 + i // per_file % 4}-{i // per_file:05d}.jsonl"
            ).open("wb")
        w = i % workers
        worker = f"api-{w // 100}:{100 + w}"
        route = ROUTES[rng.randrange(len(ROUTES))]
        growth = (
            rng.choice((0, 0, 4096, 65536, 1 << 20)) if route[:6] != "/admin" else rng.randrange(1, 80) << 20
        )
        sections = {}
        if i % 5 == 0:
            picked = [dict(stmts[rng.randrange(200)], count=rng.randrange(1, 4)) for _ in range(4)]
            sections = {
                "queries": s.queries(*picked),
                "models": {
                    "classes": {"app.Item": {"loaded": 12}, "app.User": {"loaded": 1}},
                    "identity_maps": [13],
                },
                "session": s.session(
                    400 + rng.randrange(600), {"user_id": 8, "cart": 300}, id_hash=f"h{i % 5000}"
                ),
            }
        rec = s.sample(route, t=s.T0 + i * 0.01, rss=(90 << 20) + rng.randrange(0, 8 << 20), growth=growth,
                       worker=worker, **sections)  # fmt: skip
        line = orjson.dumps(rec) + b"\n"
        total += len(line)
        assert fh is not None
        fh.write(line)
    if fh is not None:
        fh.close()
    for j in range(20):
        s.write_json(directory / "dumps" / f"dump-20261129T1{j:05d}-100-threshold.json",
                     s.dump(t=s.T0 + j * 100, route="/admin/reports/{id}", stacks=[["app/a.py:1 in f"]]))  # fmt: skip
    return total


def calibrate() -> float:
    """Milliseconds of a fixed pure-Python loop: how loaded the shared machine is right now."""
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        sum(range(10**7))
        best = min(best, time.perf_counter() - t0)
    return best * 1000


def tree_peak(proc: subprocess.Popen[bytes], into: list[int]) -> None:
    """Sample the summed RSS of ``proc`` and its children until it exits; the largest goes in ``into``."""
    try:
        root = psutil.Process(proc.pid)
    except psutil.Error:
        return
    while proc.poll() is None:
        try:
            total = sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
        except psutil.Error:
            total = 0
        into[0] = max(into[0], total)
        time.sleep(0.02)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--keep", help="generate into this dir (reused when it exists)")
    parser.add_argument("--jobs", type=int, help="passed to memprof analyze --jobs")
    parser.add_argument(
        "--per-file", type=int, default=LINES_PER_FILE, help="samples per file (500: 2,000 files)"
    )
    parser.add_argument("--workers", type=int, default=4, help="distinct worker ids (1000: a fleet)")
    parser.add_argument(
        "--parquet",
        action="store_true",
        help="export the data dir once (DIR-parquet), then analyse the export",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="memprof-bench-") as tmp:
        directory = Path(args.keep or tmp)
        if not any(directory.glob("samples-*.jsonl")):
            directory.mkdir(parents=True, exist_ok=True)
            t0 = time.perf_counter()
            size = generate(directory, args.samples, per_file=args.per_file, workers=args.workers)
            print(
                f"generated {args.samples:,} samples, {size / 1e6:.0f} MB in {time.perf_counter() - t0:.1f} s"
            )
        target = directory
        if args.parquet:
            target = Path(f"{directory}-parquet")  # beside the data dir: inside, the JSON runs would read it
            if not (target / "samples.parquet").exists():
                t0 = time.perf_counter()
                subprocess.run([sys.executable, "-c", "from memprof.cli import main; main()", "export",
                                str(directory), "--parquet", str(target)], check=True)  # fmt: skip
                print(f"exported to {target} in {time.perf_counter() - t0:.1f} s")
        reference = calibrate()
        cmd = [
            sys.executable,
            "-c",
            "from memprof.cli import main; main()",
            "analyze",
            str(target),
            "--json",
        ]
        if args.jobs:
            cmd += ["--jobs", str(args.jobs)]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        load = psutil.getloadavg()[0]
        t0 = time.perf_counter()
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(cmd, stdout=out, stderr=err)
            peak = [0]
            sampler = threading.Thread(target=tree_peak, args=(proc, peak))
            sampler.start()
            proc.wait()
            wall = time.perf_counter() - t0
            sampler.join()
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read(), err.read()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            sys.exit(f"analyze failed ({proc.returncode}): {stderr.decode()[-2000:]}")
        summary = orjson.loads(stdout)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        print(f"analyzed {summary['samples']:,} samples from {len(summary['workers']):,} workers: wall {wall:.2f} s, "
              f"cpu {cpu:.2f} s, peak RSS of the process tree {peak[0] / 2**20:.0f} MB (children's ru_maxrss "
              f"{after.ru_maxrss / 1024:.0f} MB), {len(summary['findings'])} findings, "
              f"{summary['samples'] / wall:,.0f} samples/s; load average {load:.1f} before")  # fmt: skip
        print(f"machine load: a fixed pure-Python loop (sum(range(10**7))) took {reference:.0f} ms before and "
              f"{calibrate():.0f} ms after the run; the lower, the quieter the machine")  # fmt: skip


if __name__ == "__main__":
    main()
