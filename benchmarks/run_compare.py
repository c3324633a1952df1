"""``make bench-compare``: memprof against the tools users would pick instead, under uvicorn, one run.

Each variant of :mod:`benchmarks.compare.variants` is served by its own uvicorn process on 127.0.0.1
(one at a time), warmed up, then sent a fixed number of ``GET /items/{id}`` requests over a fixed number
of keep-alive connections by :mod:`benchmarks.compare.loadgen`. Reported per variant: requests/s,
median and p99 latency, the server's CPU time per request and its RSS after the run, each also as a
ratio to ``bare``. With several rounds (the variants' order rotating) the figure is the median.

    python -m benchmarks.run_compare [--requests N] [--concurrency C] [--rounds R] [--markdown]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.compare.app_base import ROWS
from benchmarks.compare.loadgen import LoadResult, new_event_loop, run_load
from benchmarks.compare.variants import DESCRIPTIONS, VARIANTS

HOST = "127.0.0.1"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            detail = proc.stderr.read().decode()[-2000:] if proc.stderr else ""
            raise RuntimeError(f"the server exited with {proc.returncode} before it was ready\n{detail}")
        try:
            with socket.create_connection((HOST, port), timeout=1.0) as s:
                s.sendall(f"GET /health HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the server was not ready within {timeout:.0f} s")


def run_variant(variant: str, work: Path, requests: int, warmup: int, concurrency: int) -> dict[str, Any]:
    """Serve ``variant``, warm it up, load it, and return its figures."""
    port = _free_port()
    data_dir = work / variant.replace(" ", "_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEMPROF_", "OTEL_", "SENTRY_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path.cwd()), env.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.compare.server", variant, str(port), str(data_dir)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_ready(port, proc)
        loop = new_event_loop()
        try:

            def path_of(i: int) -> str:
                return f"/items/{i % ROWS + 1}"

            loop.run_until_complete(
                run_load(HOST, port, requests=warmup, concurrency=concurrency, path_of=path_of)
            )
            cpu0 = _cpu_seconds(proc.pid)
            result: LoadResult = loop.run_until_complete(
                run_load(HOST, port, requests=requests, concurrency=concurrency, path_of=path_of)
            )
            cpu = _cpu_seconds(proc.pid) - cpu0
            rss = _rss_mb(proc.pid)
        finally:
            loop.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, stderr = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, stderr = proc.communicate()
    if result.errors:
        raise RuntimeError(f"{variant}: {result.errors} responses were not 200\n{stderr.decode()[-2000:]}")
    samples = sum(sum(1 for _ in p.open()) for p in (data_dir / "memprof-data").glob("samples-*.jsonl"))
    return {
        "rps": result.rps,
        "p50_ms": result.percentile(50),
        "p99_ms": result.percentile(99),
        "cpu_us": cpu / requests * 1e6,
        "rss_mb": rss,
        "samples": samples,
    }


def measure(
    variants: list[str], requests: int, warmup: int, concurrency: int, rounds: int
) -> dict[str, dict[str, float]]:
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory(prefix="memprof-compare-") as tmp:
        for r in range(rounds):
            order = variants[r % len(variants) :] + variants[: r % len(variants)]
            for variant in order:
                print(f"round {r + 1}/{rounds}: {variant}", file=sys.stderr, flush=True)
                runs[variant].append(run_variant(variant, Path(tmp) / f"r{r}", requests, warmup, concurrency))
    return {v: {k: statistics.median(run[k] for run in rs) for k in rs[0]} for v, rs in runs.items()}


def rows(summary: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    bare = summary["bare"]
    out = []
    for variant, s in summary.items():
        out.append(
            {
                "variant": variant,
                **s,
                "rps_ratio": s["rps"] / bare["rps"],
                "p50_ratio": s["p50_ms"] / bare["p50_ms"],
                "p99_ratio": s["p99_ms"] / bare["p99_ms"],
                "cpu_ratio": s["cpu_us"] / bare["cpu_us"],
                "rss_delta_mb": s["rss_mb"] - bare["rss_mb"],
            }
        )
    return out


def render_text(table: list[dict[str, Any]]) -> str:
    lines = [
        f"{'variant':<20} {'req/s':>8} {'x bare':>7} {'p50 ms':>7} {'x bare':>7} {'p99 ms':>7} {'x bare':>7} "
        f"{'CPU us/req':>10} {'x bare':>7} {'RSS MB':>7} {'samples':>8}"
    ]
    for r in table:
        lines.append(
            f"{r['variant']:<20} {r['rps']:>8.0f} {r['rps_ratio']:>7.2f} {r['p50_ms']:>7.2f} {r['p50_ratio']:>7.2f} "
            f"{r['p99_ms']:>7.2f} {r['p99_ratio']:>7.2f} {r['cpu_us']:>10.0f} {r['cpu_ratio']:>7.2f} "
            f"{r['rss_mb']:>7.1f} {r['samples']:>8.0f}"
        )
    return "\n".join(lines)


def render_markdown(table: list[dict[str, Any]]) -> str:
    lines = [
        "| variant | requests/s | vs bare | median ms | vs bare | p99 ms | vs bare | server CPU µs/request | vs bare | RSS MB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in table:
        lines.append(
            f"| {r['variant']} | {r['rps']:.0f} | {r['rps_ratio']:.2f}x | {r['p50_ms']:.2f} | {r['p50_ratio']:.2f}x | "
            f"{r['p99_ms']:.2f} | {r['p99_ratio']:.2f}x | {r['cpu_us']:.0f} | {r['cpu_ratio']:.2f}x | {r['rss_mb']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000, help="measured requests per variant per round")
    parser.add_argument("--warmup", type=int, default=300, help="requests per variant before measuring")
    parser.add_argument("--concurrency", type=int, default=8, help="keep-alive connections")
    parser.add_argument("--rounds", type=int, default=1, help="rounds (the figures are medians)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset")
    parser.add_argument("--markdown", action="store_true", help="also print a Markdown table")
    args = parser.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown or "bare" not in variants:
        parser.error(f"--variants must include 'bare' and name only: {', '.join(VARIANTS)}")
    summary = measure(variants, args.requests, args.warmup, args.concurrency, args.rounds)
    table = rows(summary)
    print(
        f"peer comparison: {args.requests} requests x {args.rounds} round(s) per variant, "
        f"{args.concurrency} connections, uvicorn on {HOST}"
    )
    for variant in variants:
        print(f"  {variant}: {DESCRIPTIONS[variant]}")
    print(render_text(table))
    if args.markdown:
        print()
        print(render_markdown(table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
