"""What the pytest plugin costs a test suite that does not use it, and what its markers cost when used.

    .venv/bin/python -m benchmarks.bench_plugin [--tests 2000] [--runs 5]

Pairs in the same run, each a fresh ``pytest`` subprocess on a generated file of ``--tests`` trivial
tests: with the plugin disabled (``-p no:memprof``, the baseline) and loaded; then the same tests all
marked ``memory_limit``, and one ``no_memory_growth`` test. Reports the median wall time of each and
the per-test difference in µs. Plugin start-up (importing ``memprof``) is reported on its own.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PLAIN = "def test_{i}():\n    assert sum(range(10)) == 45\n\n"
MARKED = '@pytest.mark.memory_limit("1 MB")\ndef test_{i}():\n    assert sum(range(10)) == 45\n\n'
GROWTH = "@pytest.mark.no_memory_growth(iterations=10, warmup=3)\ndef test_growth():\n    data = [str(i) for i in range(1000)]\n"


def _run(directory: Path, *args: str) -> float:
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args, str(directory)],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - t0


def _median(directory: Path, runs: int, *args: str) -> float:
    return statistics.median(_run(directory, *args) for _ in range(runs))


def _import_cost(runs: int) -> float:
    code = "import time; t=time.perf_counter(); import memprof.testing.plugin; print(time.perf_counter()-t)"
    return statistics.median(
        float(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout)
        for _ in range(runs)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tests", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    n = args.tests
    with tempfile.TemporaryDirectory() as tmp:
        plain = Path(tmp, "plain")
        marked = Path(tmp, "marked")
        growth = Path(tmp, "growth")
        for d in (plain, marked, growth):
            d.mkdir()
        (plain / "test_plain.py").write_text("".join(PLAIN.format(i=i) for i in range(n)))
        (marked / "test_marked.py").write_text(
            "import pytest\n\n" + "".join(MARKED.format(i=i) for i in range(n))
        )
        (growth / "test_growth.py").write_text("import pytest\n\n" + GROWTH)
        (growth / "test_once.py").write_text("def test_once():\n    data = [str(i) for i in range(1000)]\n")
        base = _median(plain, args.runs, "-p", "no:memprof")
        loaded = _median(plain, args.runs)
        with_marks = _median(marked, args.runs)
        once = _median(growth, args.runs, "-k", "once")
        repeated = _median(growth, args.runs, "-k", "growth")
    imp = _import_cost(args.runs)
    print(f"{n} unmarked tests, plugin disabled: {base:.3f} s (baseline)")
    print(
        f"{n} unmarked tests, plugin loaded:   {loaded:.3f} s  ({loaded / base:.2f}x, {(loaded - base) / n * 1e6:+.0f} µs/test incl. start-up)"
    )
    print(f"plugin start-up (import memprof.testing.plugin, fresh interpreter): {imp * 1000:.0f} ms")
    print(
        f"{n} tests marked memory_limit:   {with_marks:.3f} s  ({(with_marks - loaded) / n * 1e6:+.0f} µs/test over unmarked)"
    )
    print(
        f"one no_memory_growth test (3 warm-up + 10 iterations): {repeated - once:+.3f} s over running it once"
    )


if __name__ == "__main__":
    main()
