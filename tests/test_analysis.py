"""The analyzer's reading and statistics, with hand-built records: inputs, bad input, filters, stats."""

from __future__ import annotations

import gzip
import json
import math
import random
from pathlib import Path

import pytest

from memprof.analysis import Filters, InputError, analyze, parse_time
from memprof.analysis import synthetic as s
from memprof.analysis.stats import describe

MIB = s.MIB


def _dir(tmp_path: Path, samples: list[dict], name: str = "data") -> Path:
    d = tmp_path / name
    s.write_jsonl(d / "samples-20261129T100000-100-0001.jsonl", samples)
    return d


def _nearest_rank(values: list[int], q: float) -> int:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100.0 * len(ordered))) - 1]


def test_describe_is_exact() -> None:
    """The SQL stat block: nearest-rank percentiles and an exact population variance."""
    st = describe([5, 1, 4, 2, 3])
    assert st == {"count": 5, "mean": 3.0, "min": 1, "max": 5, "p25": 2, "p50": 3, "p75": 4, "p95": 5,
                  "p99": 5, "variance": 2.0, "std": 1.414}  # fmt: skip
    assert describe([])["count"] == 0
    assert describe(list(range(1, 101)))["p95"] == 95
    rng = random.Random(5)
    for n in (1, 3, 7, 50, 263, 1000):
        values = [rng.randrange(-(10**9), 10**12) for _ in range(n)]
        st = describe(values)
        mean = sum(values) / n
        assert st["mean"] == round(mean, 3) and (st["min"], st["max"]) == (min(values), max(values))
        assert st["variance"] == round((n * sum(v * v for v in values) - sum(values) ** 2) / (n * n), 3)
        assert [st[f"p{q}"] for q in (25, 50, 75, 95, 99)] == [
            _nearest_rank(values, q) for q in (25, 50, 75, 95, 99)
        ]


def test_statistics_overall_and_per_route(tmp_path: Path) -> None:
    recs = [s.sample("/a", t=s.T0 + i, growth=(i + 1) * MIB) for i in range(10)]
    recs += [s.sample("/b", t=s.T0 + 20 + i, growth=0) for i in range(10)]
    summary = analyze([str(_dir(tmp_path, recs))]).summary
    assert summary["samples"] == 20
    growth = summary["memory"]["growth"]
    assert (growth["min"], growth["max"], growth["p50"]) == (0, 10 * MIB, 0)
    routes = {r["route"]: r for r in summary["routes"]}
    assert routes["/a"]["growth"]["mean"] == 5.5 * MIB
    assert routes["/a"]["growth"]["p95"] == 10 * MIB
    assert routes["/b"]["growth"]["max"] == 0
    # high-memory: growth >= the overall p95 (the 19th of 20 values: 9 MiB): two /a requests
    assert summary["high_memory"]["threshold"] == 9 * MIB
    assert routes["/a"]["high"] == 2 and routes["/b"]["high"] == 0
    assert summary["high_memory"]["top"][0]["ref"].endswith(".jsonl:10")
    phases = {p["phase"]: p for p in summary["phases"]}
    assert phases["app_start→response_start"]["high"] == 2
    assert phases["app_start→response_start"]["max"] == 10 * MIB
    assert summary["window"] == {"start": s.T0, "end": s.T0 + 29}


def test_custom_checkpoint_spans_are_phases(tmp_path: Path) -> None:
    rec = s.sample("/r", growth=0)
    rec["checkpoints"].insert(2, {"name": "load_permissions", "ms": 1.5, "rss": 100 * MIB + 30 * MIB,
                                  "rss_before": 100 * MIB, "duration_ms": 1.0})  # fmt: skip
    summary = analyze([str(_dir(tmp_path, [rec]))]).summary
    phases = {p["phase"]: p for p in summary["phases"]}
    assert phases["load_permissions"]["max"] == 30 * MIB
    assert summary["memory"]["growth"]["max"] == 30 * MIB  # the peak inside the request counts


def test_bad_lines_are_counted_with_file_and_line_and_skipped(tmp_path: Path) -> None:
    d = _dir(tmp_path, [s.sample(t=s.T0 + i) for i in range(3)])
    path = next(d.glob("samples-*.jsonl"))
    with path.open("a") as fh:
        fh.write(json.dumps({**s.sample(), "version": "2.0"}) + "\n")  # line 4: unknown major
        fh.write("[1, 2]\n")  # line 5: not an object
        fh.write(json.dumps({"schema": "memprof.sample", "version": "1.3"}) + "\n")  # line 6: fields missing
        fh.write(
            json.dumps({**s.sample(), "version": "1.7", "future_field": 1}) + "\n"
        )  # line 7: newer minor
        fh.write('{"schema": "memprof.sample", "vers')  # line 8: truncated
    s.write_json(d / "dumps" / "dump-20261129T100000-100-threshold.json", s.dump())
    (d / "dumps" / "dump-20261129T100001-100-threshold.json").write_text('{"schema": "memprof.du')
    summary = analyze([str(d)]).summary
    inp = summary["input"]
    assert summary["samples"] == 4
    assert inp["records"] == {"dump": 1, "sample": 4}
    assert inp["skipped"] == 5
    assert inp["skipped_by_reason"] == {"invalid JSON (truncated or corrupt file)": 1, "invalid record": 1,
                                       "not a JSON object": 1, "truncated line": 1, "unsupported": 1}  # fmt: skip
    where = {(Path(p["file"]).name, p["line"]) for p in inp["problems"]}
    assert where == {(path.name, 4), (path.name, 5), (path.name, 6), (path.name, 8),
                     ("dump-20261129T100001-100-threshold.json", None)}  # fmt: skip
    unsupported = next(p for p in inp["problems"] if p["line"] == 4)
    assert "memprof.sample version '2.0' is not supported" in unsupported["reason"]


def test_gzip_and_several_dirs(tmp_path: Path) -> None:
    a = _dir(tmp_path, [s.sample(worker="a:1", t=s.T0 + i) for i in range(3)], "a")
    b = tmp_path / "b"
    b.mkdir()
    with gzip.open(b / "samples-20261129T100000-2-0001.jsonl.gz", "wt") as fh:
        for i in range(2):
            fh.write(json.dumps(s.sample(worker="b:2", t=s.T0 + i)) + "\n")
    summary = analyze([str(a), str(b)]).summary
    assert summary["samples"] == 5
    assert [w["worker"] for w in summary["workers"]] == ["a:1", "b:2"]


def test_structlog_lines_among_other_logs(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    event = {**s.sample("/x"), "event": "memprof.request.completed", "level": "info",
             "timestamp": "2026-11-29T10:00:00Z", "logger": "memprof"}  # fmt: skip
    stripped = {k: v for k, v in event.items() if k not in ("schema", "version")}
    log.write_text(
        "INFO:     Started server process [7]\n"
        + json.dumps({"event": "user logged in", "level": "info"}) + "\n"
        + json.dumps(event) + "\n"
        + "2026-11-29T10:00:01.000Z " + json.dumps(event) + "\n"  # kubectl logs --timestamps
        + json.dumps(stripped) + "\n"
    )  # fmt: skip
    summary = analyze([str(log)]).summary
    assert summary["samples"] == 3
    assert summary["input"]["ignored_lines"] == 2
    assert summary["input"]["skipped"] == 0


def test_missing_and_empty_inputs_raise_one_clear_sentence(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        analyze([str(tmp_path / "nope")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no memprof data"):
        analyze([str(tmp_path / "empty")])
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "samples-1.jsonl").write_text("garbage\n")
    with pytest.raises(InputError, match=r"no readable memprof records \(1 unreadable"):
        analyze([str(bad)])


def test_filters(tmp_path: Path) -> None:
    recs = [s.sample("/admin/users", t=s.T0, worker="h:1"), s.sample("/admin/report", t=s.T0 + 60, worker="h:2"),
            s.sample("/items", t=s.T0 + 120, worker="h:1",
                     queries=s.queries(s.statement("SELECT secret_table.id FROM secret_table")))]  # fmt: skip
    d = str(_dir(tmp_path, recs))

    def routes(f: Filters) -> list[str]:
        return sorted(r["route"] for r in analyze([d], f).summary["routes"])

    assert routes(Filters(route="/admin/*")) == ["/admin/report", "/admin/users"]
    assert routes(Filters(route="/items")) == ["/items"]
    assert routes(Filters(worker="h:2")) == ["/admin/report"]
    assert routes(Filters(worker="1")) == ["/admin/users", "/items"]
    assert routes(Filters(since=s.T0 + 30)) == ["/admin/report", "/items"]
    assert routes(Filters(until=s.T0 + 30)) == ["/admin/users"]
    assert routes(Filters(pattern="SECRET_TABLE")) == ["/items"]
    assert analyze([d], Filters(route="/nothing")).summary["filtered_out"] == 3


def test_parse_time() -> None:
    assert parse_time("2026-11-29T10:00:00Z") == 1795946400.0
    assert parse_time("2026-11-29T10:00:00") == 1795946400.0
    assert parse_time("1795946400") == 1795946400.0
    assert parse_time("2h", now=10_000.0) == 10_000.0 - 7200
    with pytest.raises(ValueError, match="is not a time"):
        parse_time("yesterday")


def test_recent_keeps_the_newest(tmp_path: Path) -> None:
    recs = [s.sample("/r", t=s.T0 + i) for i in (5, 1, 9, 3, 7)]
    result = analyze([str(_dir(tmp_path, recs))], recent=2)
    assert [rec["time"] for rec, _ref in result.recent_records()] == [s.T0 + 9, s.T0 + 7]


def test_dumps_crashes_and_frames(tmp_path: Path) -> None:
    d = _dir(tmp_path, [s.sample("/r")])
    stack = [
        "app/main.py:10 in handler",
        "app/reports.py:55 in build",
        "/usr/lib/python3/site-packages/sqlalchemy/orm/loading.py:100 in instances",
    ]
    for i in range(3):
        s.write_json(d / "dumps" / f"dump-{i}-100-threshold.json",
                     s.dump(t=s.T0 + i, route="/reports/{id}", inflight=["/health"], stacks=[stack, stack[:1]]))  # fmt: skip
    s.write_json(d / "crashes" / "crash-100.json", s.crash(inflight=["/reports/{id}"]))
    summary = analyze([str(d)]).summary
    dumps = summary["dumps"]
    assert dumps["count"] == 3 and dumps["by_trigger"] == {"threshold": 3}
    assert dumps["routes"] == {"/reports/{id}": 3, "/health": 3}
    assert dumps["phases"] == {"after app_start": 3}
    # counted once per dump; application frames only (library frames with show_all, after them)
    assert dumps["frames"][0] == {"frame": "app/main.py:10 in handler", "dumps": 3, "library": False}
    assert {f["frame"] for f in dumps["frames"]} == set(stack[:2])
    every = analyze([str(d)], show_all=True).summary["dumps"]["frames"]
    assert every[-1]["library"] is True and {f["frame"] for f in every} == set(stack)
    assert summary["crashes"][0]["inflight"][0]["route"] == "/reports/{id}"
    assert Filters(pattern="reports.py").pattern
    only = analyze([str(d)], Filters(pattern="loading.py:100")).summary
    assert only["dumps"]["count"] == 3 and only["samples"] == 0


def test_hand_built_records_match_the_published_schema() -> None:
    """The records these tests are built from validate against the runtime's own record models."""
    from memprof.records.models import Crash, Dump, Sample, StateRecord

    lazy = s.statement("SELECT 1", 12, n_plus_one=True, frame="a.py:1 in f")
    Sample.model_validate(s.sample(queries=s.queries(lazy), session=s.session(10, {"k": 5}, "h")))
    Sample.model_validate(s.sample())
    Dump.model_validate(s.dump(route="/r", inflight=["/x"], objects={"dict": 3}, stacks=[["a.py:1 in f"]],
                               caches=[s.cache("m.f", 3)]))  # fmt: skip
    Crash.model_validate(s.crash(inflight=["/r"]))
    StateRecord.model_validate(s.state([s.cache("m.f", 3), s.cache("m.g", 2, 128)]))


def test_parallel_reading_equals_one_pass(tmp_path: Path) -> None:
    """Several threads reading files at once give exactly the summary of one sequential pass, and every
    reference names the right file and line."""
    d = tmp_path / "data"
    lazy = s.statement("SELECT b.id FROM b WHERE ? = b.a_id", 15, n_plus_one=True, frame="app.py:3 in f")
    for f in range(7):
        recs = []
        for i in range(60):
            n = f * 60 + i
            sections = {}
            if n % 3 == 0:
                sections = {"queries": s.queries(lazy, s.statement(f"SELECT {n % 5}", 1, rows=n, instances=n)),
                            "session": s.session(100 + n, {"k": n}, f"h{n % 4}"),
                            "models": {"classes": {"m.A": {"loaded": n}}}}  # fmt: skip
            recs.append(s.sample(f"/r{n % 4}", t=s.T0 + n, rss=100 * MIB + n * 300_000, growth=(n % 9) * MIB,
                                 worker=f"w:{n % 2}", **sections))  # fmt: skip
        s.write_jsonl(d / f"samples-{f}.jsonl", recs)
        s.write_jsonl(d / f"state-{f}.jsonl", [s.state([s.cache("c", f * 50)], t=s.T0 + f * 60)])
        s.write_json(
            d / "dumps" / f"dump-{f}.json", s.dump(t=s.T0 + f * 60, route="/r1", stacks=[[f"a.py:{f} in g"]])
        )
    s.write_json(d / "crashes" / "crash-1.json", s.crash())
    one = analyze([str(d)], recent=5, threads=1)
    three = analyze([str(d)], recent=5, threads=3)
    assert one.summary == three.summary
    assert one.recent_records() == three.recent_records()
    assert one.summary["samples"] == 420 and one.summary["findings"]
    for top in one.summary["high_memory"]["top"]:  # the line a reference names holds that very sample
        path, line = top["ref"].rsplit(":", 1)
        rec = json.loads(Path(path).read_text().splitlines()[int(line) - 1])
        assert (rec["time"], rec["request"]["route"]) == (top["time"], top["route"])


def test_malformed_samples_leave_no_partial_state(tmp_path: Path) -> None:
    good = s.sample("/r", t=s.T0)
    bad = [
        {**good, "time": "yesterday"},
        {**good, "memory": {**good["memory"], "rss_start": "x"}},
        {**good, "checkpoints": [{"name": "a", "rss": "x"}]},
        {**good, "request": {**good["request"], "route": None}, "time": None},
        {**good, "memory": None},
        {**good, "request": {**good["request"], "duration_ms": "slow"}},
        {**good, "checkpoints": [{"rss": 1}]},
    ]
    result = analyze([str(_dir(tmp_path, [good, *bad, good]))])
    assert result.summary["samples"] == 2
    assert result.summary["input"]["skipped_by_reason"] == {"invalid record": 7}
    assert [r["count"] for r in result.summary["routes"]] == [2]
    assert [w["samples"] for w in result.summary["workers"]] == [2]
    assert [p["count"] for p in result.summary["phases"]] == [2, 2, 2, 2]


def _mutations(rng: random.Random, rec: object, depth: int = 0) -> object:
    """``rec`` with one value somewhere replaced by a value of a wrong type."""
    junk = [None, "x", [], {}, -1, 1e308, True, [1, "a"], {"k": None}, 2**70]
    if isinstance(rec, dict) and rec and (depth < 4 and rng.random() < 0.7):
        key = rng.choice(list(rec))
        return {**rec, key: _mutations(rng, rec[key], depth + 1)}
    if isinstance(rec, list) and rec and (depth < 4 and rng.random() < 0.7):
        i = rng.randrange(len(rec))
        return [*rec[:i], _mutations(rng, rec[i], depth + 1), *rec[i + 1 :]]
    return rng.choice(junk)


@pytest.mark.parametrize("seed", [1, 11, 12, 13])
def test_fuzzed_records_never_crash_the_analysis_or_the_renderers(tmp_path: Path, seed: int) -> None:
    from memprof.analysis.render_json import render as render_json
    from memprof.analysis.render_text import render_summary
    from memprof.analysis.render_views import render_recent
    from memprof.analysis.report_html import render as render_html
    from memprof.analysis.report_html import report_data

    rng = random.Random(seed)
    lazy = s.statement("SELECT b FROM b WHERE ? = b.a", 12, n_plus_one=True, frame="a.py:1 in f")
    crit = {
        "criteria": "c",
        "kind": "lambda",
        "where": "a.py:2",
        "applied": 3,
        "statements": [],
        "duplicates": 1,
    }
    full = s.sample("/r", queries=s.queries(lazy), session=s.session(10, {"k": 5}, "h"),
                    models={"classes": {"m.A": {"loaded": 3}}}, scopes={"classes": {"m.A": [crit]}},
                    engines=[{"name": "sqlite:x", "compiled_cache": 3}])  # fmt: skip
    d = tmp_path / "data"
    recs = [_mutations(rng, full) for _ in range(400)]
    s.write_jsonl(d / "samples-1.jsonl", [full, *recs])  # type: ignore[list-item]
    docs = [s.dump(route="/r", objects={"A": 1}, stacks=[["a.py:1 in f"]], caches=[s.cache("c", 1)]), s.crash(inflight=["/r"]),
            s.state([s.cache("c", 2)])]  # fmt: skip
    for i in range(60):
        doc = _mutations(rng, docs[i % 3])
        if i % 3 == 2:
            s.write_jsonl(d / f"state-{i}.jsonl", [doc])  # type: ignore[list-item]
        else:
            s.write_json(
                d / ("dumps" if i % 3 == 0 else "crashes") / f"{'dump' if i % 3 == 0 else 'crash'}-{i}.json",
                doc,
            )  # type: ignore[arg-type]
    result = analyze([str(d)], recent=20)
    summary = result.summary
    inp = summary["input"]
    assert summary["samples"] >= 1 and inp["skipped"] > 0
    assert sum(inp["records"].values()) + inp["skipped"] == 461
    assert render_summary(summary) and render_json(summary)
    assert render_recent(result.recent_records(), details=True)
    assert render_html(*report_data([str(d)]))
