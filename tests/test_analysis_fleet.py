"""Fleets: Parquet export and analysis, compare that refuses to guess, progress on standard error."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from memprof.analysis import analyze
from memprof.analysis import synthetic as s
from tests.cli import run_cli

MIB = s.MIB


def run(*args: str) -> Any:
    """``memprof ARGS`` through main(): exit code, stdout, stderr."""
    result = run_cli(*args)
    return result.code, result.stdout, result.stderr


def _fleet(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    lazy = s.statement("SELECT b.id FROM b WHERE ? = b.a_id", 15, n_plus_one=True, frame="app.py:3 in f")
    for w in range(3):
        recs = [s.sample("/admin/export" if i % 10 == 0 else f"/r{i % 3}", t=s.T0 + i, worker=f"h{w}:{w}",
                         growth=60 * MIB if i % 10 == 0 else 4096, rss=100 * MIB + i * 1024,
                         **({"queries": s.queries(lazy), "session": s.session(100 + i, {"k": i}, f"s{i % 4}")}
                            if i % 5 == 0 else {})) for i in range(120)]  # fmt: skip
        s.write_jsonl(d / f"w{w}" / "samples-1.jsonl", recs)
        s.write_jsonl(d / f"w{w}" / "state-1.jsonl", [s.state([s.cache("c", 10 + 200 * k)], t=s.T0 + 30 * k,
                                                              worker=f"h{w}:{w}") for k in range(4)])  # fmt: skip
    s.write_json(
        d / "dumps" / "dump-1.json", s.dump(t=s.T0 + 50, route="/admin/export", stacks=[["app.py:9 in g"]])
    )
    s.write_json(d / "crashes" / "crash-1.json", s.crash(inflight=["/admin/export"]))
    with (d / "w0" / "samples-1.jsonl").open("a") as fh:
        fh.write('{"schema": "memprof.sample", "version": "1.0", "ti\n')
    return d


def test_parquet_export_is_analysed_like_the_data_dir(tmp_path: Path) -> None:
    d = _fleet(tmp_path)
    out = tmp_path / "parquet"
    code, stdout, err = run("export", str(d), "--parquet", str(out))
    assert code == 0, err
    assert stdout.startswith(f"wrote {out} (360 samples, 12 states, 1 dumps, 1 crashes, 1 problems")
    assert sorted(p.name for p in out.iterdir()) == [
        "crashes.parquet", "dumps.parquet", "problems.parquet", "samples.parquet", "states.parquet"]  # fmt: skip
    direct = analyze([str(d)]).summary
    exported = analyze([str(out)]).summary
    for key in ("samples", "memory", "routes", "phases", "workers", "sessions", "sql", "dumps", "crashes", "caches",
                "findings", "high_memory", "window", "limit"):  # fmt: skip
        assert exported[key] == direct[key], key
    assert exported["input"]["skipped"] == direct["input"]["skipped"] == 1
    assert exported["input"]["problems"] == direct["input"]["problems"]
    # the same data in two exports (two hosts' uploads) is read as one fleet
    code, _out, err = run("export", str(d / "w1"), "--parquet", str(tmp_path / "p2"))
    assert code == 0, err
    both = analyze([str(out), str(tmp_path / "p2")]).summary
    assert both["samples"] == 480


def test_parquet_is_plain_sql_for_a_warehouse(tmp_path: Path) -> None:
    """The export reads with nothing but SQL (the query of docs/analyzer.md, run here by DuckDB)."""
    import duckdb

    out = tmp_path / "parquet"
    assert run("export", str(_fleet(tmp_path)), "--parquet", str(out))[0] == 0
    rows = duckdb.sql(
        f"""SELECT route, count(*) AS requests, quantile_disc(growth, 0.95) AS p95
            FROM read_parquet('{out}/samples.parquet') GROUP BY route ORDER BY p95 DESC, route"""
    ).fetchall()
    assert rows[0] == ("/admin/export", 36, 60 * MIB)
    phases = duckdb.sql(
        f"""SELECT cp.name, count(*) FROM (SELECT unnest(checkpoints) AS cp FROM read_parquet('{out}/samples.parquet'))
            GROUP BY ALL ORDER BY 1"""
    ).fetchall()
    assert ("request_start", 360) in phases


def _side(tmp_path: Path, name: str, growth: int, n: int = 100) -> Path:
    d = tmp_path / name
    s.write_jsonl(d / "samples-1.jsonl", [s.sample("/r", t=s.T0 + i, growth=growth) for i in range(n)])
    return d


def test_compare_without_samples_gives_no_verdict(tmp_path: Path) -> None:
    before = _side(tmp_path, "before", 40 * MIB)
    empty = tmp_path / "empty"
    s.write_jsonl(empty / "state-1.jsonl", [s.state([s.cache("c", 1)])])  # records, but no sample
    code, stdout, _err = run("compare", str(before), str(empty), "--json")
    assert code == 0
    result = json.loads(stdout)
    assert result["verdict"] == "inconclusive"
    assert any("postfix has no samples" in w for w in result["warnings"])
    code, stdout, err = run("compare", str(before), str(empty), "--fail-if-worse")
    assert code == 3 and "no verdict" in err and stdout.startswith("Verdict: INCONCLUSIVE")
    # a --route that matches nothing on one side is the same
    code, stdout, err = run("compare", str(before), str(before), "--route", "/nothing", "--fail-if-worse")
    assert code == 3 and stdout.startswith("Verdict: INCONCLUSIVE")


def test_compare_applies_filters_to_saved_summaries_or_refuses(tmp_path: Path) -> None:
    before, after = _side(tmp_path, "before", 40 * MIB), _side(tmp_path, "after", 40 * MIB)
    saved = tmp_path / "before.json"
    saved.write_text(run("analyze", str(before), "--json")[1])
    code, _out, err = run("compare", str(saved), str(after), "--route", "/r")
    assert code == 2 and "is a saved summary: --route /r cannot be applied to it" in err
    filtered = tmp_path / "before-r.json"
    filtered.write_text(run("analyze", str(before), "--json", "--route", "/r")[1])
    code, stdout, err = run("compare", str(filtered), str(after), "--route", "/r")
    assert code == 0 and stdout.startswith("Verdict: UNCHANGED"), err


def test_compare_warns_about_other_versions_and_thresholds(tmp_path: Path) -> None:
    before, after = _side(tmp_path, "before", 40 * MIB), _side(tmp_path, "after", 40 * MIB)
    old = json.loads(run("analyze", str(before), "--json")[1])
    assert old["memprof_version"] and old["thresholds"]["n_plus_one"] == 10
    old["memprof_version"] = "0.0.1"
    old["thresholds"]["n_plus_one"] = 5
    saved = tmp_path / "old.json"
    saved.write_text(json.dumps(old))
    code, stdout, err = run("compare", str(saved), str(after))
    assert code == 0 and "memprof: warning: the sides come from different memprof versions" in err
    assert "different memprof versions (0.0.1 and" in stdout
    assert "different thresholds (n_plus_one 5 -> 10)" in stdout


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from memprof.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip


def test_progress_only_on_a_terminal_unless_asked(tmp_path: Path) -> None:
    d = _side(tmp_path, "data", MIB)
    quiet = _cli("analyze", str(d), "--json")
    assert quiet.returncode == 0 and quiet.stderr == ""
    asked = _cli("analyze", str(d), "--json", "--progress")
    assert asked.returncode == 0 and json.loads(asked.stdout)["samples"] == 100
    lines = asked.stderr.splitlines()
    assert any(x.startswith("reading 100%") for x in lines) and any(
        x.startswith("computing 100%") for x in lines
    )
    stdin = subprocess.run([sys.executable, "-c", "from memprof.cli import main; main()", "analyze", "-", "--progress"],
                           input=(d / "samples-1.jsonl").read_text(), capture_output=True, text=True, timeout=120,
                           check=False)  # fmt: skip
    assert stdin.returncode == 0 and "computing 100%" in stdin.stderr
    both = _cli("compare", str(d), str(d), "--progress")
    assert "baseline: reading" in both.stderr and "postfix: computing 100%" in both.stderr


def test_the_documented_sql_runs_on_an_export(tmp_path: Path) -> None:
    """The DuckDB queries of docs/analyzer.md (those without a dialect comment) run as written."""
    import duckdb

    out = tmp_path / "parquet"
    assert run("export", str(_fleet(tmp_path)), "--parquet", str(out))[0] == 0
    doc = (Path(__file__).resolve().parent.parent / "docs" / "analyzer.md").read_text()
    blocks = [b.split("```", 1)[0] for b in doc.split("```sql\n")[1:]]
    duck = [b for b in blocks if not b.lstrip().startswith("--") and "memprof.samples" not in b]
    assert len(duck) == 2
    con = duckdb.connect()
    con.execute(f"CREATE VIEW samples AS SELECT * FROM read_parquet('{out}/samples.parquet')")
    routes = con.execute(duck[0]).fetchall()
    assert routes[0][0] == "/admin/export" and routes[0][1] == 36
    phases = dict((p, n) for p, n, *_rest in con.execute(duck[1]).fetchall())
    assert phases["app_start→response_start"] == 360


def test_many_route_families_fit_the_engines_memory() -> None:
    """Comparing each route family with the rest of the traffic held every family's rest at once: ten
    families of 2,000,000 samples ran out of the engine's 200 MB (a traceback, no analysis). Here: twelve
    families of 400,000 samples in 48 MB."""
    from memprof.analysis import summarize, tables
    from memprof.analysis.engine import Engine
    from memprof.analysis.sources import LoadReport

    n, families = 400_000, 12
    with Engine(memory_limit="48MB") as e:
        e.sql(tables.create_tables())
        e.sql("INSERT INTO files VALUES (0, 'synthetic.jsonl', 'samples')")
        e.sql(
            f"""INSERT INTO samples (file_id, line, time, worker, host, pid, route, rss_start, rss_end, rss_peak,
                                     growth, rss_growth, query_count, instances, shared, duration_ms, status)
                SELECT 0, i + 1, {s.T0} + i, 'h:' || i % 4, 'h', i % 4, '/f' || i % {families} || '/{{id}}',
                       100 << 20, 101 << 20, 101 << 20, g, g, 0, CASE WHEN i % 5 = 0 THEN i % 997 END, false, 1, 200
                FROM (SELECT i, (hash(i) % 50000000)::BIGINT AS g FROM range({n}) r(i))"""
        )
        e.checkpoint()
        summary = summarize(e, LoadReport(paths=["synthetic.jsonl"]), ["synthetic.jsonl"])
    assert summary["samples"] == n
    assert sum(r["count"] for r in summary["routes"]) == n


def test_a_statement_that_runs_out_of_memory_runs_again_with_more() -> None:
    """An analysis that needs more than the engine's usual bound raises it (and says so) rather than
    ending in a traceback; past eight times the bound it stops with one sentence."""
    from memprof.analysis.engine import Engine, EngineMemoryError

    with Engine(memory_limit="32MB") as e:  # a list of 12,000,000 values: about 100 MB
        assert e.value("SELECT len(list(x)) FROM range(12000000) r(x)") == 12_000_000
        assert e.raised_to is not None and 64_000_000 <= e.raised_to <= 256_000_000
    with Engine(memory_limit="8MB") as e:
        try:
            e.value("SELECT len(list(x)) FROM range(12000000) r(x)")
        except EngineMemoryError as exc:
            assert str(exc).startswith("the analysis needs more than 64 MB of memory")
        else:
            raise AssertionError("12,000,000 values fit in 64 MB?")


def test_an_export_is_queried_in_place_with_filters_and_recent(tmp_path: Path) -> None:
    """Exported samples are read where they lie (a view over the Parquet files): filters and --recent
    work on them as on the data dir; an export beside a data dir is copied; a corrupt export is skipped
    and counted, the rest analysed (it was a traceback)."""
    from memprof.analysis.filters import Filters

    d = _fleet(tmp_path)
    out = tmp_path / "parquet"
    assert run("export", str(d), "--parquet", str(out))[0] == 0
    admin = Filters(route="/admin/*")
    direct, exported = analyze([str(d)], admin, recent=3), analyze([str(out)], admin, recent=3)
    assert exported.summary["samples"] == direct.summary["samples"] == 36
    assert exported.summary["filtered_out"] == direct.summary["filtered_out"]
    assert exported.summary["findings"] == direct.summary["findings"]
    assert [ref for _rec, ref in exported.recent] == [ref for _rec, ref in direct.recent]
    assert analyze([str(out), str(d / "w1")]).summary["samples"] == 480
    log = tmp_path / "app.log"  # an application's log with a record in it: its lines may add samples
    log.write_text('{"event": "started"}\n' + json.dumps(s.sample("/r1", t=s.T0)) + "\n")
    assert analyze([str(out), str(log)]).summary["samples"] == 361
    # and an export of an export
    code, stdout, err = run("export", str(out), "--parquet", str(tmp_path / "again"))
    assert code == 0 and stdout.startswith(f"wrote {tmp_path / 'again'} (360 samples"), err

    bad = tmp_path / "bad"
    bad.mkdir()
    for p in out.iterdir():
        data = p.read_bytes()
        if p.name == "samples.parquet":  # the first page header (after the magic bytes) made unreadable
            data = data[:4] + b"\x0f" * 64 + data[68:]
        (bad / p.name).write_bytes(data)
    code, stdout, err = run("analyze", str(bad), "--json")
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["samples"] == 0 and summary["caches"]  # the states were read
    (problem,) = [p for p in summary["input"]["problems"] if p["file"].endswith("samples.parquet")]
    assert problem["reason"].startswith("unreadable: ") and problem["reason"].isprintable()
