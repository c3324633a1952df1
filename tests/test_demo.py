"""The main job end to end: `memprof demo` runs the example app under uvicorn, and the analyzer's findings
name every planted problem."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from memprof.demo.planted import PLANTED, answers
from memprof.demo.run import run_demo


@pytest.mark.slow
def test_demo_finds_every_planted_problem(tmp_path: Path) -> None:
    lines: list[str] = []
    result = run_demo(tmp_path / "demo", echo=lines.append)
    assert result.traffic.errors == 0 and result.traffic.by_status == {200: result.traffic.sent}
    assert result.analyze_exit == 0
    assert result.report.is_file() and result.report.stat().st_size > 10_000
    assert list((result.data_dir / "dumps").glob("dump-*-threshold.json")), "no critical dump was written"

    out = subprocess.run(
        [sys.executable, "-m", "memprof", "analyze", str(result.data_dir), "--json"],
        check=True,
        capture_output=True,
        text=True,
    )
    findings = json.loads(out.stdout)["findings"]
    missed = [f"{p.kind} naming {p.names}" for p, found in answers(findings) if found is None]
    assert not missed, f"planted problems not found: {missed}; found {[f['title'] for f in findings]}"
    # Nothing the app does not plant: its memory grows only through the planted cache and session.
    assert {f["kind"] for f in findings} <= {p.kind for p in PLANTED} | {"state_dependent_variance"}
    # The demo prints the map: every planted problem with the finding that answers it.
    printed = "\n".join(lines)
    assert len(PLANTED) == 7 and "MISSED" not in printed
    for p, found in answers(findings):
        assert p.problem in printed and found is not None and found["title"] in printed
    assert any("Where to look next" in line for line in lines)
