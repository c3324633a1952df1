"""Bad input never aborts the analysis: every malformed file or line is skipped, counted and located, a
record reported invalid never enters the statistics, strings are cut in every output; a fuzz test of
mutated real records and a field-by-bad-value grid."""

from __future__ import annotations

import gzip
import json
import os
import random
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from memprof.analysis import analyze
from memprof.analysis import synthetic as s
from memprof.analysis.render_json import render as render_json
from memprof.analysis.render_text import render_summary
from memprof.analysis.render_views import render_recent
from memprof.analysis.report_html import render as render_html
from memprof.analysis.report_html import report_data
from tests.cli import run_cli

MIB = s.MIB


def _samples(d: Path, recs: list[Any], name: str = "samples-1.jsonl") -> Path:
    d.mkdir(parents=True, exist_ok=True)
    path = d / name
    with path.open("w") as fh:
        for rec in recs:
            fh.write((rec if isinstance(rec, str) else json.dumps(rec, allow_nan=True)) + "\n")
    return path


def _consistent(summary: dict[str, Any]) -> None:
    """What the statistics count is what the input says was read: nothing half-counted."""
    n = summary["samples"]
    assert summary["input"]["records"].get("sample", 0) == n
    assert summary["memory"]["rss"]["count"] == n == summary["memory"]["growth"]["count"]
    assert sum(r["count"] for r in summary["routes"]) == n
    assert sum(w["samples"] for w in summary["workers"]) == n


def test_the_issue_s_bad_input_is_skipped_and_counted(tmp_path: Path) -> None:
    """A float rss_end, a 1,000-deep value and a corrupt .jsonl.gz: skipped and counted, exit 0."""
    d = tmp_path / "data"
    good = [s.sample("/r", t=s.T0 + i) for i in range(5)]
    float_end = s.sample("/r", t=s.T0 + 10)
    float_end["memory"]["rss_end"] = 104857600.5
    deep = s.sample("/r", t=s.T0 + 11)
    deep["extra"] = "[" * 1000 + "]" * 1000  # placeholder, replaced by raw JSON below
    deep_line = json.dumps(deep).replace('"' + "[" * 1000 + "]" * 1000 + '"', "[" * 1000 + "]" * 1000)
    path = _samples(d, [*good, float_end, deep_line])
    data = gzip.compress(b"".join(json.dumps(r).encode() + b"\n" for r in good))
    (d / "samples-2.jsonl.gz").write_bytes(data[: len(data) // 2])
    r = run_cli("analyze", str(d), "--json")
    assert r.code == 0, r
    summary = json.loads(r.stdout)
    _consistent(summary)
    problems = {(Path(p["file"]).name, p["line"]): p["reason"] for p in summary["input"]["problems"]}
    assert problems[(path.name, 6)] == "invalid record: a malformed memory.rss_end"
    # a deep value in a field the analyzer does not read is no reason to refuse the sample
    assert (path.name, 7) not in problems and summary["samples"] >= 6
    assert summary["samples"] == summary["input"]["records"]["sample"]
    # DuckDB 2 refuses a truncated gzip (the file is unreadable); DuckDB 1.4 reads it up to the cut (the
    # line cut short is invalid): skipped and counted with its place either way
    assert [
        (line, reason.split(":")[0])
        for (name, line), reason in problems.items()
        if name == "samples-2.jsonl.gz"
    ] in (
        [(None, "unreadable")],
        [(1, "invalid JSON")],
    ), problems


@pytest.mark.parametrize(
    ("field", "value", "valid"),
    [
        ("time", "yesterday", False), ("time", None, False), ("time", float("nan"), False),
        ("time", float("inf"), False), ("time", 1e308, True), ("memory.rss_start", 1.5, False),
        ("memory.rss_start", 2**70, False), ("memory.rss_start", "x", False), ("memory.rss_start", [], False),
        ("memory.rss_end", -1, True), ("memory.rss_end", float("-inf"), False), ("memory.rss_end", None, False),
        ("memory.limit", 1.25, False), ("memory.limit", None, True), ("pid", 2**64, False),
        ("request.route", None, False), ("request.route", 12, True), ("request.route", "x" * 50_000_000, True),
        ("request.status", 200.5, False), ("request.duration_ms", "slow", False),
        ("request.duration_ms", float("nan"), False), ("memory", None, False), ("request", "GET /", False),
        ("checkpoints", [{"name": "a", "rss": 1.5}], False), ("checkpoints", [{"rss": 1}], False),
        ("checkpoints", [1, 2], False), ("checkpoints", [], True),
        ("worker", {"a": 1}, True), ("host", 7, True),
    ],
)  # fmt: skip
def test_field_by_bad_value_grid(tmp_path: Path, field: str, value: Any, valid: bool) -> None:
    """One sample with one field set to a bad value, between two good ones: counted whole or not at all."""
    bad = s.sample("/bad", t=s.T0 + 1)
    target = bad
    *parents, key = field.split(".")
    for p in parents:
        target = target[p]
    target[key] = value
    d = tmp_path / "data"
    _samples(d, [s.sample("/r", t=s.T0), bad, s.sample("/r", t=s.T0 + 2)])
    result = analyze([str(d)], recent=5)
    summary = result.summary
    _consistent(summary)
    assert summary["samples"] == (3 if valid else 2), summary["input"]
    assert summary["input"]["skipped"] == (0 if valid else 1)
    if not valid:
        assert summary["input"]["problems"][0]["line"] == 2
    text = (
        render_summary(summary) + render_recent(result.recent_records(), details=True) + render_json(summary)
    )
    assert len(text) < 200_000  # strings are cut in every output


def _mutate(rng: random.Random, rec: Any, depth: int = 0) -> Any:
    junk = [None, "x", [], {}, -1, 1.5, 1e308, float("nan"), float("inf"), True, [1, "a"], {"k": None}, 2**70,
            "y" * 100_000, "[" * 5]  # fmt: skip
    if isinstance(rec, dict) and rec and depth < 5 and rng.random() < 0.75:
        key = rng.choice(list(rec))
        return {**rec, key: _mutate(rng, rec[key], depth + 1)}
    if isinstance(rec, list) and rec and depth < 5 and rng.random() < 0.75:
        i = rng.randrange(len(rec))
        return [*rec[:i], _mutate(rng, rec[i], depth + 1), *rec[i + 1 :]]
    return rng.choice(junk)


@pytest.mark.parametrize("seed", [2, 3, 5])
def test_fuzzed_real_records(
    make_settings: Any, data_dir: Path, samples: Any, tmp_path: Path, seed: int
) -> None:
    """Records a real app wrote, mutated at random (types, NaN, huge numbers and strings, truncation,
    garbage bytes): the analysis completes, counts consistently and every renderer works."""
    from starlette.testclient import TestClient

    from memprof import MemprofMiddleware
    from tests.apps import fastapi_app

    with TestClient(MemprofMiddleware(fastapi_app(), settings=make_settings())) as client:
        for i in range(20):
            client.get(f"/users/{i}")
    real = samples()
    assert real
    rng = random.Random(seed)
    lines = []
    for i in range(300):
        rec = _mutate(rng, real[i % len(real)])
        line = json.dumps(rec, allow_nan=True)
        roll = rng.random()
        if roll < 0.05:
            line = line[: rng.randrange(1, len(line))]  # truncated
        elif roll < 0.08:
            line = line.encode("utf-8", "replace")[:50].decode("latin-1") + "\x01\x02"  # garbage bytes
        lines.append(line)
    d = tmp_path / "fuzz"
    _samples(d, [*real, *lines])
    (d / "state-1.jsonl").write_text(
        "\n".join(json.dumps(_mutate(rng, s.state([s.cache("c", 3)]))) for _ in range(30))
    )
    for i in range(10):
        s.write_json(
            d / "dumps" / f"dump-{i}.json",
            _mutate(rng, s.dump(route="/r", objects={"A": 1}, stacks=[["a.py:1 in f"]])),
        )
        s.write_json(d / "crashes" / f"crash-{i}.json", _mutate(rng, s.crash(inflight=["/r"])))
    result = analyze([str(d)], recent=30)
    summary = result.summary
    _consistent(summary)
    inp = summary["input"]
    assert summary["samples"] >= len(real) and inp["skipped"] > 0
    assert sum(inp["records"].values()) + inp["skipped"] == len(real) + 300 + 30 + 20
    assert render_summary(summary) and render_json(summary)
    assert render_recent(result.recent_records(), details=True)
    assert render_html(*report_data([str(d)]))


def test_fifos_devices_and_streams(tmp_path: Path) -> None:
    """A FIFO or a device named like a data file is reported and never opened (it could block for ever)."""
    d = tmp_path / "data"
    _samples(d, [s.sample("/r")])
    os.mkfifo(d / "samples-fifo.jsonl")
    (d / "samples-dev.jsonl").symlink_to("/dev/zero")
    done: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: done.setdefault("r", analyze([str(d)])), daemon=True)
    thread.start()
    thread.join(60)
    assert "r" in done, "the analysis hung on a FIFO or a device"
    summary = done["r"].summary
    assert summary["samples"] == 1
    reasons = {Path(p["file"]).name: p["reason"] for p in summary["input"]["problems"]}
    assert reasons["samples-fifo.jsonl"].startswith("not a regular file")
    assert reasons["samples-dev.jsonl"].startswith("not a regular file")


def test_a_fifo_named_on_the_command_line_is_read_as_a_stream(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    lines = "".join(json.dumps(s.sample("/r", t=s.T0 + i)) + "\n" for i in range(3))

    def write() -> None:
        with open(fifo, "w") as fh:
            fh.write(lines)

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    summary = analyze([str(fifo)]).summary
    thread.join(10)
    assert summary["samples"] == 3


def test_application_log_lines_with_a_schema_key_are_not_bad_records(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text(
        json.dumps({"event": "migration done", "schema": "public", "version": 42}) + "\n"
        + json.dumps({"schema": {"name": "orders"}, "level": "info"}) + "\n"
        + json.dumps({**s.sample("/x"), "event": "memprof.request.completed"}) + "\n"
        + json.dumps({"schema": "memprof.sample", "version": "9.0"}) + "\n"
    )  # fmt: skip
    summary = analyze([str(log)]).summary
    assert summary["samples"] == 1
    assert summary["input"]["ignored_lines"] == 2
    assert summary["input"]["skipped_by_reason"] == {"unsupported": 1}  # a memprof record of a future version


def test_huge_strings_are_cut_in_every_output(tmp_path: Path) -> None:
    big = "/r/" + "x" * 50_000_000
    d = tmp_path / "data"
    lazy = s.statement("SELECT " + "c, " * 1_000_000 + "d FROM t", 12, n_plus_one=True, frame="f" * 1_000_000)
    _samples(d, [s.sample(big, t=s.T0 + i, queries=s.queries(lazy), session=s.session(10, {"k" * 1_000_000: 5}, "h"))
                 for i in range(3)])  # fmt: skip
    result = analyze([str(d)], recent=3)
    summary = result.summary
    assert summary["samples"] == 3 and summary["input"]["skipped"] == 0
    outputs = [render_summary(summary), render_json(summary), render_recent(result.recent_records(), details=True),
               render_html(*report_data([str(d)]))]  # fmt: skip
    assert all(len(o) < 1_000_000 for o in outputs), [len(o) for o in outputs]
    assert summary["routes"][0]["route"].endswith("…") and len(summary["routes"][0]["route"]) == 300


def _worker_file(d: Path, pid: int, **fields: Any) -> Path:
    host = socket.gethostname()
    doc = {"schema": "memprof.worker", "version": "1.0", "pid": pid, "host": host, "worker": f"{host}:{pid}",
           "started": 1.0, "last_seen": 2.0, "rss": 1, "limit": 2, "inflight": [], **fields}  # fmt: skip
    path = d / "workers" / f"{host}-{pid}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def test_mistyped_worker_files_are_reported_and_never_lost(tmp_path: Path) -> None:
    d = tmp_path / "data"
    _samples(d, [s.sample("/r")])
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    bad = [_worker_file(d, int(dead.stdout), rss="lots"), _worker_file(d, 999_999_999, started=[1])]
    summary = analyze([str(d)]).summary
    reasons = {Path(p["file"]).name: p["reason"] for p in summary["input"]["problems"]}
    assert reasons[bad[0].name] == "invalid worker file: rss is not an integer"
    assert reasons[bad[1].name] == "invalid worker file: started is not a time"
    r = run_cli("postmortem", str(d))
    assert r.code == 0, r
    assert f"invalid worker file {bad[0]}: rss is not an integer (left in place)" in r.stdout
    assert all(p.exists() for p in bad)  # the evidence stays
    assert not list((d / "workers").glob(".*.claim"))
    r = run_cli("postmortem", str(d))  # and the next run still sees them
    assert f"invalid worker file {bad[0]}" in r.stdout


def test_line_numbers_hold_across_files_with_blank_lines(tmp_path: Path) -> None:
    """Files read in one scan are numbered per file; a blank line (which the JSON reader skips) does not
    shift the references of the records after it."""
    d = tmp_path / "data"
    d.mkdir()
    for f in range(3):
        lines = [
            json.dumps(s.sample(f"/f{f}", t=s.T0 + 100 * f + i, growth=(f * 10 + i) * MIB)) for i in range(6)
        ]
        if f == 1:
            lines.insert(3, "")
        (d / f"samples-{f}.jsonl").write_text("\n".join(lines) + "\n")
    summary = analyze([str(d)]).summary
    assert summary["samples"] == 18 and summary["input"]["skipped"] == 0
    for top in summary["high_memory"]["top"]:
        path, line = top["ref"].rsplit(":", 1)
        rec = json.loads(Path(path).read_text().splitlines()[int(line) - 1])
        assert (rec["time"], rec["request"]["route"]) == (top["time"], top["route"])
