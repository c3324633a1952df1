"""The analyzer commands through main() (exit codes, stdout and stderr) and the real console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from memprof.analysis import synthetic as s
from memprof.cli import COMMANDS
from tests.cli import CliResult, run_cli

MIB = s.MIB


def run(*args: str, stdin: str | None = None) -> CliResult:
    """``memprof ARGS`` through main(): exit code, stdout and the stderr line a person sees."""
    return run_cli(*args, stdin=stdin)


@pytest.fixture
def problem_dir(tmp_path: Path) -> Path:
    """Two workers; an admin route with big growth; an N+1; a dump and a crash."""
    d = tmp_path / "data"
    recs = []
    lazy = s.statement(
        "SELECT tags.id FROM tags WHERE ? = tags.item_id", 30, n_plus_one=True, frame="app/v.py:9 in f"
    )
    for i in range(200):
        admin = i % 10 == 0
        recs.append(s.sample("/admin/export" if admin else "/items/{item_id}", t=s.T0 + i,
                             growth=50 * MIB if admin else 8192, worker=f"api-1:{100 + i % 2}",
                             queries=s.queries(lazy) if i % 4 == 0 else None) if i % 4 == 0 else
                    s.sample("/admin/export" if admin else "/items/{item_id}", t=s.T0 + i,
                             growth=50 * MIB if admin else 8192, worker=f"api-1:{100 + i % 2}"))  # fmt: skip
    s.write_jsonl(d / "samples-20261129T100000-100-0001.jsonl", recs)
    s.write_json(d / "dumps" / "dump-20261129T100300-100-threshold.json",
                 s.dump(t=s.T0 + 150, route="/admin/export", stacks=[["app/export.py:12 in export"]]))  # fmt: skip
    s.write_json(
        d / "crashes" / "crash-20261129T100400-101.json",
        s.crash(worker="api-1:101", inflight=["/admin/export"]),
    )
    return d


def test_analyze_summary(problem_dir: Path) -> None:
    r = run("analyze", str(problem_dir))
    assert r.code == 0, r
    assert r.stdout.startswith("memprof analysis: 3 files, 200 lines read; 1 crash, 1 dump, 200 samples\n")
    assert "[critical] worker_killed: Worker api-1:101 was killed" in r.stdout
    assert (
        "[warning] route_family_overhead: /admin/*: 100% of its requests are high-memory vs 0% elsewhere"
        in r.stdout
    )
    assert "[warning] n_plus_one:" in r.stdout
    assert "  /admin/export        20    20" in r.stdout


def test_analyze_json_is_the_documented_shape(problem_dir: Path) -> None:
    r = run("analyze", str(problem_dir), "--json")
    assert r.code == 0, r
    data = json.loads(r.stdout)
    assert (data["format"], data["version"]) == ("memprof.analysis", "1.0")
    assert {"input", "filters", "samples", "window", "limit", "memory", "high_memory", "routes", "phases", "workers",
            "sessions", "sql", "dumps", "crashes", "caches", "findings"} <= set(data)  # fmt: skip
    kinds = [f["kind"] for f in data["findings"]]
    assert kinds[0] == "worker_killed" and {"route_family_overhead", "n_plus_one"} <= set(kinds)
    for f in data["findings"]:
        assert set(f) == {"kind", "severity", "title", "subject", "evidence", "fix", "impact_bytes"}
        assert f["severity"] in ("critical", "warning", "info") and isinstance(f["evidence"]["records"], list)


def test_missing_and_empty_dirs_fail_with_one_sentence(tmp_path: Path) -> None:
    r = run("analyze", str(tmp_path / "nope"))
    assert (
        r.code == 2
        and r.stderr
        == f"memprof: {tmp_path / 'nope'} does not exist: pass a memprof data dir (MEMPROF_DATA_DIR), a log file or -\n"
    )
    (tmp_path / "empty").mkdir()
    r = run("analyze", str(tmp_path / "empty"))
    assert r.code == 2 and "holds no memprof data" in r.stderr and r.stdout == ""
    r = run("analyze", str(tmp_path / "empty"), "--since", "last tuesday")
    assert r.code == 2 and "--since/--until: 'last tuesday' is not a time" in r.stderr


def test_console_script_exit_code(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", "from memprof.cli import main; main()", "analyze", str(tmp_path)],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith(f"memprof: {tmp_path} holds no memprof data")
    assert proc.stderr.count("\n") == 1  # one sentence, no traceback


def test_stdin_structlog_lines() -> None:
    lines = ["not json at all", json.dumps({"event": "other", "level": "info"})]
    for i in range(5):
        lines.append(
            json.dumps({**s.sample("/x", t=s.T0 + i), "event": "memprof.request.completed", "level": "info"})
        )
    r = run("analyze", "-", "--json", stdin="\n".join(lines) + "\n")
    assert r.code == 0, r
    data = json.loads(r.stdout)
    assert data["samples"] == 5 and data["input"]["ignored_lines"] == 2 and data["input"]["paths"] == ["-"]


def test_several_dirs_filters_and_pattern(problem_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    s.write_jsonl(
        other / "samples-x.jsonl", [s.sample("/reports", t=s.T0 + i, worker="api-2:7") for i in range(5)]
    )
    data = json.loads(run("analyze", str(problem_dir), str(other), "--json").stdout)
    assert data["samples"] == 205 and len(data["workers"]) == 3
    data = json.loads(run("analyze", str(problem_dir), str(other), "--json", "--worker", "api-2:7").stdout)
    assert data["samples"] == 5
    data = json.loads(run("analyze", str(problem_dir), "--json", "--route", "/admin/*").stdout)
    assert [r["route"] for r in data["routes"]] == ["/admin/export"]
    data = json.loads(run("analyze", str(problem_dir), "--json", "--pattern", "tags.item_id").stdout)
    assert data["samples"] == 50 and data["filters"]["pattern"] == "tags.item_id"
    data = json.loads(run("analyze", str(problem_dir), "--json", "--pattern", "export.py:12").stdout)
    assert data["dumps"]["count"] == 1 and data["samples"] == 0
    until = "2025-11-29T07:06:49Z"  # T0 + 9 s
    data = json.loads(run("analyze", str(problem_dir), "--json", "--until", until).stdout)
    assert data["samples"] == 10


def test_recent_details(problem_dir: Path) -> None:
    r = run("analyze", str(problem_dir), "--recent", "2", "--details")
    assert r.code == 0, r
    assert r.stdout.startswith("2 most recent samples (newest first)\n")
    assert "GET /items/{item_id} 200" in r.stdout and "request_start" in r.stdout
    assert "Findings" not in r.stdout
    both = run("analyze", str(problem_dir), "--recent", "1", "--summary")
    assert "Findings" in both.stdout and "1 most recent samples" in both.stdout
    data = json.loads(run("analyze", str(problem_dir), "--recent", "3", "--json").stdout)
    assert data["format"] == "memprof.recent" and [x["record"]["time"] for x in data["recent"]] == [
        s.T0 + 199, s.T0 + 198, s.T0 + 197]  # fmt: skip


def test_fail_on(problem_dir: Path) -> None:
    r = run("analyze", str(problem_dir), "--fail-on", "critical")
    assert r.code == 3 and "--fail-on" in r.stderr
    clean = problem_dir.parent / "clean"
    s.write_jsonl(clean / "samples-1.jsonl", [s.sample(t=s.T0 + i) for i in range(10)])
    assert run("analyze", str(clean), "--fail-on", "warning").code == 0


def _dir_with(tmp_path: Path, name: str, admin_growth: int) -> Path:
    d = tmp_path / name
    recs = [s.sample("/admin/export" if i % 5 == 0 else "/items", t=s.T0 + i,
                     growth=admin_growth + (i % 7) * 1024 if i % 5 == 0 else 4096) for i in range(200)]  # fmt: skip
    s.write_jsonl(d / "samples-1.jsonl", recs)
    return d


def test_compare_dirs_and_saved_summaries(tmp_path: Path) -> None:
    before, after = _dir_with(tmp_path, "before", 60 * MIB), _dir_with(tmp_path, "after", 2 * MIB)
    r = run("compare", str(before), str(after))
    assert r.code == 0, r
    assert r.stdout.startswith("Verdict: BETTER  (baseline 200 samples, postfix 200)\n")
    assert "Findings resolved:\n  [warning] route_family_overhead" in r.stdout
    saved = tmp_path / "before.json"
    saved.write_text(run("analyze", str(before), "--json").stdout)
    data = json.loads(run("compare", str(saved), str(after), "--json").stdout)
    assert data["verdict"] == "better"
    routes = {x["route"]: x for x in data["routes"]}
    assert routes["/admin/export"]["verdict"] == "better" and routes["/items"]["verdict"] == "unchanged"
    worse = run("compare", str(after), str(before), "--fail-if-worse")
    assert worse.code == 3 and worse.stdout.startswith("Verdict: WORSE")
    same = run("compare", str(before), str(before))
    assert same.stdout.startswith("Verdict: UNCHANGED")
    bogus = tmp_path / "bogus.json"
    bogus.write_text('{"format": "something else"}')
    r = run("compare", str(bogus), str(after))
    assert r.code == 2 and "is not a memprof analysis summary" in r.stderr


def test_tail_once_and_follow(tmp_path: Path) -> None:
    d = tmp_path / "data"
    path = d / "samples-1.jsonl"
    s.write_jsonl(path, [s.sample("/old", t=s.T0)])
    r = run("tail", str(d), "--once", "--from-start")
    assert r.code == 0 and "/old" in r.stdout
    assert run("tail", str(d), "--once").stdout == ""  # only what is new

    def writer() -> None:
        time.sleep(0.4)
        with path.open("a") as fh:
            fh.write(json.dumps(s.sample("/new", t=s.T0 + 1)) + "\n")
            fh.write(json.dumps(s.sample("/big", t=s.T0 + 2, growth=100 * MIB))[:40])  # half a line
            fh.flush()
            time.sleep(0.3)
            fh.write(json.dumps(s.sample("/big", t=s.T0 + 2, growth=100 * MIB))[40:] + "\n")
        s.write_json(d / "dumps" / "dump-1-100-threshold.json", s.dump(route="/big"))

    thread = threading.Thread(target=writer)
    thread.start()
    r = run("tail", str(d), "--duration", "2.0", "--interval", "0.1")
    thread.join()
    assert r.code == 0, r
    lines = r.stdout.splitlines()
    assert len(lines) == 3, r
    assert lines[0].startswith("   ") and "GET /new 200" in lines[0]
    assert lines[1].startswith("!! ") and "GET /big 200" in lines[1] and "+100.0 MiB" in lines[1]
    assert lines[2].startswith("!! ") and "DUMP threshold" in lines[2]
    data = [
        json.loads(x) for x in run("tail", str(d), "--once", "--from-start", "--json").stdout.splitlines()
    ]
    assert [(x["kind"], x["high"]) for x in data] == [
        ("sample", False),
        ("sample", False),
        ("sample", True),
        ("dump", True),
    ]
    assert run("tail", str(tmp_path / "missing"), "--once").code == 2


def test_report_writes_a_file(problem_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    r = run("report", str(problem_dir), "--html", str(out))
    assert r.code == 0, r
    assert r.stdout == f"wrote {out} (200 samples, 1 dumps, 3 findings)\n"
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and "http" not in page.replace("http://www.w3.org/2000/svg", "")
    r = run("report", str(problem_dir), "--html", str(tmp_path / "no" / "such" / "dir.html"))
    assert r.code == 2 and "cannot write the report" in r.stderr


def test_default_data_dir_from_environment(problem_dir: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("MEMPROF_DATA_DIR", str(problem_dir))
    assert json.loads(run("analyze", "--json").stdout)["samples"] == 200
    monkeypatch.delenv("MEMPROF_DATA_DIR")
    monkeypatch.chdir(problem_dir.parent)
    r = run("analyze")
    assert r.code == 2 and "memprof-data does not exist" in r.stderr
    assert os.getcwd() == str(problem_dir.parent)


def test_tail_shows_odd_records_without_failing(tmp_path: Path) -> None:
    d = tmp_path / "data"
    s.write_jsonl(
        d / "samples-1.jsonl",
        [{"schema": "memprof.sample", "version": "1.0", "memory": "x"}, s.sample("/ok")],
    )
    with (d / "samples-1.jsonl").open("a") as fh:
        fh.write("not json\n")
    r = run("tail", str(d), "--once", "--from-start")
    assert r.code == 0, r
    lines = r.stdout.splitlines()
    assert (
        lines[0].endswith("samples-1.jsonl:1: a record with fields of unexpected types")
        and "GET /ok" in lines[1]
    )
    assert "skipped 1 unreadable lines or files" in r.stderr


def test_thresholds_from_the_command_line(problem_dir: Path, tmp_path: Path) -> None:
    def kinds(*extra: str) -> list[str]:
        r = run("analyze", str(problem_dir), "--json", *extra)
        assert r.code == 0, r
        return [f["kind"] for f in json.loads(r.stdout)["findings"]]

    assert "route_family_overhead" in kinds()
    raised = kinds("--threshold", "route_family_min_growth=100MB", "--threshold", "leak_min_samples=50")
    assert "route_family_overhead" not in raised and "n_plus_one" in raised
    out = tmp_path / "r.html"
    r = run("report", str(problem_dir), "--html", str(out), "--threshold", "route_family_min_growth=100MB")
    assert r.code == 0 and f"{len(raised)} findings" in r.stdout, r
    r = run(
        "compare", str(problem_dir), str(problem_dir), "--json", "--threshold", "route_family_min_growth=1GB"
    )
    assert r.code == 0 and "route_family_overhead" not in r.stdout, r
    for bad, message in [
        ("nope=1", "'nope' is not a threshold: expected one of cache_min_growth, cartesian_ratio,"),
        ("n_plus_one=lots", "n_plus_one='lots': expected an integer"),
        ("session_max=big", "session_max='big': expected a size such as 2MB"),
        ("variance_min_r=-1", "variance_min_r='-1': must not be negative"),
        ("session_max", "'session_max' is not NAME=VALUE (for example n_plus_one=5)"),
    ]:
        r = run("analyze", str(problem_dir), "--threshold", bad)
        assert r.code == 2 and r.stderr.startswith(f"memprof: --threshold: {message}"), (bad, r)


@pytest.mark.parametrize("command", [name for name, _fn in COMMANDS])
def test_every_command_prints_its_help(command: str) -> None:
    """With the lowest typer the pins allow as with the latest (make test-oldest runs this file): typer
    0.13-0.15.3 let pip pair them with a click whose help they cannot print."""
    r = run(command, "--help")
    assert r.code == 0 and f"Usage: memprof {command}" in r.stdout, r


def test_value_options_name_their_value_in_help() -> None:
    out = run("analyze", "--help").stdout
    for option in ("--since TIME", "--route ROUTE", "--worker WORKER", "--recent N", "--jobs N",
                   "--fail-on never|warning|critical"):  # fmt: skip
        assert option in out, option
    assert "<str>" not in out.split("Options:")[1] and "<int range>" not in out
