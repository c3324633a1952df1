"""``make bench-compare``: memprof against the tools users would pick instead, under uvicorn, one run.

Each variant of :mod:`benchmarks.compare.variants` is served by its own uvicorn process on 127.0.0.1
(all started at once, idle but one at any time), warmed up, then sent a fixed number of
``GET /items/{id}`` requests over a fixed number of keep-alive connections by
:mod:`benchmarks.compare.loadgen`, in interleaved bursts (see :func:`measure`). Reported per variant:
requests/s, median and p99 latency, the server's CPU time per request and its RSS after the run, each
also as a ratio to ``bare``.

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


class Server:
    """One variant served by its own uvicorn process."""

    def __init__(self, variant: str, work: Path) -> None:
        self.variant = variant
        self.port = _free_port()
        self.data_dir = work / variant.replace(" ", "_")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MEMPROF_", "OTEL_", "SENTRY_"))}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path.cwd()), env.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.compare.server", variant, str(self.port), str(self.data_dir)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        try:
            _, stderr = self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, stderr = self.proc.communicate()
        return stderr.decode(errors="replace")[-2000:] if stderr else ""

    def samples(self) -> int:
        files = (self.data_dir / "memprof-data").glob("samples-*.jsonl")
        return sum(sum(1 for _ in p.open()) for p in files)


def _path_of(i: int) -> str:
    return f"/items/{i % ROWS + 1}"


def measure(
    variants: list[str], requests: int, warmup: int, concurrency: int, rounds: int
) -> dict[str, dict[str, float]]:
    """Start every variant's server, warm each up, then send ``requests / rounds`` requests to each in
    turn, ``rounds`` times (order rotating), so a burst of load from elsewhere on the machine hits every
    variant alike. Per variant: requests/s (median over rounds of the ratio to bare's burst in the same
    round, times bare's median), latency percentiles over all its requests, server CPU per request."""
    burst = max(1, requests // rounds)
    loop = new_event_loop()
    servers: dict[str, Server] = {}
    latencies: dict[str, list[float]] = {v: [] for v in variants}
    rps: dict[str, list[float]] = {v: [] for v in variants}
    cpu: dict[str, float] = dict.fromkeys(variants, 0.0)
    try:
        with tempfile.TemporaryDirectory(prefix="memprof-compare-", ignore_cleanup_errors=True) as tmp:
            for variant in variants:
                servers[variant] = Server(variant, Path(tmp))
            for variant, server in servers.items():
                _wait_ready(server.port, server.proc)
                print(f"warming up {variant}", file=sys.stderr, flush=True)
                loop.run_until_complete(
                    run_load(HOST, server.port, requests=warmup, concurrency=concurrency, path_of=_path_of)
                )
            for r in range(rounds):
                print(f"round {r + 1}/{rounds}", file=sys.stderr, flush=True)
                for variant in variants[r % len(variants) :] + variants[: r % len(variants)]:
                    server = servers[variant]
                    cpu0 = _cpu_seconds(server.proc.pid)
                    result: LoadResult = loop.run_until_complete(
                        run_load(HOST, server.port, requests=burst, concurrency=concurrency, path_of=_path_of)
                    )
                    cpu[variant] += _cpu_seconds(server.proc.pid) - cpu0
                    if result.errors:
                        raise RuntimeError(f"{variant}: {result.errors} responses were not 200")
                    latencies[variant].extend(result.latencies_ms)
                    rps[variant].append(result.rps)
            rss = {v: _rss_mb(s.proc.pid) for v, s in servers.items()}
            for server in servers.values():
                server.stop()
            samples = {v: s.samples() for v, s in servers.items()}
    finally:
        for server in servers.values():
            if server.proc.poll() is None:
                server.proc.kill()
        loop.close()
    bare_rps = statistics.median(rps["bare"])
    summary: dict[str, dict[str, float]] = {}
    for variant in variants:
        ratio = statistics.median(v / b for v, b in zip(rps[variant], rps["bare"], strict=True))
        done = LoadResult(requests=len(latencies[variant]), wall_s=0.0, latencies_ms=latencies[variant])
        summary[variant] = {
            "rps": ratio * bare_rps,
            "p50_ms": done.percentile(50),
            "p99_ms": done.percentile(99),
            "cpu_us": cpu[variant] / (burst * rounds) * 1e6,
            "rss_mb": rss[variant],
            "samples": samples[variant],
        }
    return summary


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
    parser.add_argument("--requests", type=int, default=3000, help="measured requests per variant")
    parser.add_argument("--warmup", type=int, default=300, help="requests per variant before measuring")
    parser.add_argument("--concurrency", type=int, default=8, help="keep-alive connections")
    parser.add_argument("--rounds", type=int, default=6, help="bursts per variant, interleaved")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset")
    parser.add_argument("--markdown", action="store_true", help="also print a Markdown table")
    args = parser.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown or "bare" not in variants:
        parser.error(f"--variants must include 'bare' and name only: {', '.join(VARIANTS)}")
    load_before = os.getloadavg()[0]
    summary = measure(variants, args.requests, args.warmup, args.concurrency, args.rounds)
    table = rows(summary)
    print(
        f"peer comparison: {args.requests} requests per variant in {args.rounds} interleaved bursts, "
        f"{args.concurrency} connections, uvicorn on {HOST}"
    )
    for variant in variants:
        print(f"  {variant}: {DESCRIPTIONS[variant]}")
    print(render_text(table))
    print(
        f"load average (1 min) before/after: {load_before:.1f} / {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    if args.markdown:
        print()
        print(render_markdown(table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
