"""What importing memprof costs: the package, the pytest plugin, and the command line.

    .venv/bin/python -m benchmarks.bench_imports [--runs 7]

Each case is a fresh subprocess, run ``--runs`` times, the cases interleaved; reports the median wall time
(interpreter start-up included, shown on its own as the first case), the median in-process time of the
import itself (``time.perf_counter`` around it) and which heavy libraries it loaded. No assertion on time:
``tests/test_imports.py`` checks what is loaded, deterministically.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from memprof.analysis.synthetic import MIB, T0, sample, write_jsonl

HEAVY = ("sqlalchemy", "starlette", "pydantic", "pydantic_settings", "structlog", "psutil", "rich", "typer")
_PROBE = (
    "import sys, time; t = time.perf_counter(); import {module}; t = time.perf_counter() - t; "
    "print(t, ','.join(sorted({{m.split('.')[0] for m in sys.modules}} & set({heavy!r}))))"
)


def _memprof_command() -> list[str]:
    script = Path(sys.executable).with_name("memprof")
    return [str(script)] if script.exists() else [shutil.which("memprof") or "memprof"]


def _cases(tmp: Path) -> dict[str, list[str]]:
    tests = tmp / "tests"
    tests.mkdir()
    (tests / "test_trivial.py").write_text("def test_one():\n    assert 1 + 1 == 2\n")
    data = tmp / "memprof-data"
    data.mkdir()
    write_jsonl(data / "samples-bench.jsonl", [sample(t=T0 + i, growth=i * MIB) for i in range(20)])
    pytest_co = [sys.executable, "-m", "pytest", "--co", "-q", "-p", "no:cacheprovider", str(tests)]
    return {
        "python -c pass (interpreter start-up)": [sys.executable, "-c", "pass"],
        "python -c 'import memprof'": [sys.executable, "-c", "import memprof"],
        "python -c 'import memprof.testing.plugin'": [sys.executable, "-c", "import memprof.testing.plugin"],
        "memprof --help": [*_memprof_command(), "--help"],
        "memprof analyze (20 samples)": [*_memprof_command(), "analyze", str(data)],
        "pytest --co -q, -p no:memprof (baseline)": [*pytest_co, "-p", "no:memprof"],
        "pytest --co -q, plugin loaded": pytest_co,
    }


def _wall(argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - t0


def _probe(module: str) -> tuple[float, str]:
    code = _PROBE.format(module=module, heavy=HEAVY)
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    seconds, loaded = out.split()[0], (out.split()[1:] or ["-"])[0]
    return float(seconds), loaded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cases = _cases(Path(tmp))
        times: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.runs):  # interleaved: a burst of load spreads over every case
            for name, argv in cases.items():
                times[name].append(_wall(argv))
    print(f"wall time, medians of {args.runs} fresh subprocesses:")
    for name, values in times.items():
        print(f"  {name:<45} {statistics.median(values) * 1000:7.0f} ms")
    print(f"import alone (in-process), medians of {args.runs}, and the heavy libraries it loaded:")
    for module in ("memprof", "memprof.testing.plugin", "memprof.cli", "memprof.analysis"):
        probes = [_probe(module) for _ in range(args.runs)]
        seconds = statistics.median(p[0] for p in probes)
        print(f"  import {module:<25} {seconds * 1000:7.0f} ms   loads: {probes[-1][1] or '-'}")


if __name__ == "__main__":
    main()
