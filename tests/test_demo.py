"""The main job end to end: `memprof demo` runs the example app under uvicorn, and the analyzer's findings
name every planted problem."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from memprof.demo.run import run_demo

PLANTED = {
    "session_bloat": "/dashboard",
    "n_plus_one": "/orders",
    "cartesian_join": "/customers/{customer_id}",
    "large_result_set": "/export",
    "unbounded_cache": "memprof.demo.app.render_badge",
    "route_family_overhead": "/admin",
    "loader_criteria_explosion": "SoftDelete",
}


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
    kinds = {f["kind"] for f in findings}
    missing = set(PLANTED) - kinds
    assert not missing, f"planted problems not found: {missing}; found {sorted(kinds)}"
    for kind, needle in PLANTED.items():
        texts = [json.dumps(f) for f in findings if f["kind"] == kind]
        assert any(needle in t for t in texts), f"{kind} does not name {needle}: {texts}"
    assert any("Where to look next" in line for line in lines)
