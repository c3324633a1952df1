"""Findings on heap readings (1.1 records) and the issue-11/14 rules: a leak told from warm-up, growth
outside requests, caches from empty, data-dependent peaks, one finding per cause, N+1 by loop site, and
compare on noise. Every case through the public API (analyze, and the CLI for compare)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from memprof.analysis import analyze
from memprof.analysis import synthetic as s
from tests.cli import run_cli

MIB, KIB = s.MIB, 1024
SEVERE = ("warning", "critical")


def _write(d: Path, samples: list[dict[str, Any]], states: list[dict[str, Any]] = ()) -> Path:  # type: ignore[assignment]
    s.write_jsonl(d / "samples-20261129T100000-100-0001.jsonl", samples)
    if states:
        s.write_jsonl(d / "state-20261129T100000-100.jsonl", list(states))
    return d


def _findings(d: Path, **kw: Any) -> list[dict[str, Any]]:
    return list(analyze([str(d)], **kw).summary["findings"])


def _leaky(n: int = 200, *, leak: int = 50 * KIB, worker: str = "api-1:100", seed: int = 1,
           warmup: int = 30, t0: float = s.T0) -> list[dict[str, Any]]:  # fmt: skip
    """One route; caches warm up over the first requests; each request keeps ``leak`` bytes; 60 s in all."""
    rng = random.Random(seed)
    out, heap = [], 40 * MIB
    for i in range(n):
        warm = 200 * KIB if i < warmup else 0
        kept = leak + warm + rng.randrange(0, 2 * KIB)
        peak = heap + 3 * MIB + rng.randrange(0, 256 * KIB)
        out.append(s.sample("/documents", t=t0 + i * 60 / n, rss=50 * MIB + heap, growth=kept, worker=worker,
                            heap=(heap, peak, heap + kept)))  # fmt: skip
        heap += kept
    return out


def test_leak_of_50_kib_per_request_is_the_top_finding_within_200_requests(tmp_path: Path) -> None:
    findings = _findings(_write(tmp_path / "d", _leaky()))
    top = findings[0]
    assert top["kind"] == "leak", [(f["kind"], f["title"]) for f in findings]
    ev = top["evidence"]
    assert ev["route"] == "/documents" and ev["source"] == "heap" and top["subject"] == "/documents"
    assert 45 * KIB <= ev["retained_per_request"] <= 55 * KIB
    assert 45 * KIB <= ev["growth_per_request"] <= 55 * KIB
    assert ev["growth_per_hour"] is None  # one minute says nothing about an hour
    assert "api-1:100" not in top["subject"] and top["impact_bytes"] > 5 * MIB


def test_warm_up_that_levels_off_is_not_a_leak(tmp_path: Path) -> None:
    # caches fill over the first 100 requests (heap +8 MiB), then nothing is kept
    recs = _leaky(300, leak=0, warmup=100)
    states = [s.state([s.cache("app.lookup", n, 1024, bytes_estimate=n * 8 * KIB)], t=s.T0 + t)
              for t, n in ((10, 200), (30, 1024), (60, 1024))]  # fmt: skip
    assert [f for f in _findings(_write(tmp_path / "d", recs, states)) if f["severity"] in SEVERE] == []


def test_growth_outside_requests_or_in_a_test_session_is_not_charged_to_requests(tmp_path: Path) -> None:
    outside = _leaky()
    for r in outside:  # the heap rises between requests, not in them
        h = r["memory"]["heap"]
        h["end"] = h["start"]
    assert [f for f in _findings(_write(tmp_path / "a", outside)) if f["kind"] == "leak"] == []
    session = _leaky(400)
    for i, r in enumerate(session):  # every test its own route: no steady load
        r["request"]["route"] = f"/test_{i // 2}"
    assert [f for f in _findings(_write(tmp_path / "b", session)) if f["kind"] == "leak"] == []


def test_leak_on_rss_only_records(tmp_path: Path) -> None:
    recs = _leaky()
    for r in recs:
        del r["memory"]["heap"]
        r["version"] = "1.0"
    f = _findings(_write(tmp_path / "d", recs))[0]
    assert f["kind"] == "leak" and f["evidence"]["source"] == "rss" and f["evidence"]["route"] == "/documents"


def test_unbounded_cache_from_empty_is_named_with_its_bytes_from_two_observations(tmp_path: Path) -> None:
    states = [
        s.state([s.cache("app.render", 0, bytes_estimate=0), s.cache("sqlalchemy.sql.x", 0)], t=s.T0 + 10),
        s.state([s.cache("app.render", 300, bytes_estimate=300 * 46 * KIB), s.cache("sqlalchemy.sql.x", 1500)],
                t=s.T0 + 30),
    ]  # fmt: skip
    d = _write(tmp_path / "d", [s.sample("/r", t=s.T0 + i) for i in range(5)], states)
    findings = _findings(d)
    assert [f["kind"] for f in findings] == ["unbounded_cache"]
    f = findings[0]
    assert f["subject"] == "app.render" and f["evidence"]["bytes_estimate"] == 300 * 46 * KIB
    assert "13.5 MiB" in f["title"] and f["impact_bytes"] == 300 * 46 * KIB
    assert {f["subject"] for f in _findings(d, show_all=True)} == {"app.render", "sqlalchemy.sql.x"}


def test_memory_that_follows_the_account_is_explained_on_a_warm_heap(tmp_path: Path) -> None:
    rng = random.Random(5)
    recs = []
    for i in range(100):
        n = 10_000 if rng.random() < 0.15 else 10  # a few accounts load 10,000 objects
        st = s.statement("SELECT items.* FROM items WHERE items.account_id = ?", 1, rows=n, instances=n)
        heap = 50 * MIB
        # RSS flat: freed memory is reused; the heap peak shows it
        recs.append(s.sample("/accounts/{account_id}", t=s.T0 + i, rss=200 * MIB, growth=0,
                             heap=(heap, heap + n * 1400 + rng.randrange(0, 64 * KIB), heap),
                             queries=s.queries(st)))  # fmt: skip
    findings = _findings(_write(tmp_path / "d", recs))
    f = findings[0]
    assert f["kind"] == "state_dependent_variance" and f["evidence"]["variable"] == "instances"
    assert f["evidence"]["r"] > 0.95 and "r=" in f["title"]
    # one cause, one finding: the statement that loads the objects is named in it, not listed again
    assert "large_result_set" not in [x["kind"] for x in findings] and f["evidence"]["instances"] == 10_000
    # no explaining variable: not listed
    for r in recs:
        r["queries"] = None
    assert [
        x for x in _findings(_write(tmp_path / "e", recs)) if x["kind"] == "state_dependent_variance"
    ] == []


def test_a_cartesian_join_is_not_also_a_large_result_set(tmp_path: Path) -> None:
    st = s.statement("SELECT a.* FROM a LEFT OUTER JOIN b ON b.a_id = a.id LEFT OUTER JOIN c ON c.a_id = a.id",
                     1, rows=120_000, instances=151, rss_delta=114 * MIB)  # fmt: skip
    recs = [
        s.sample("/admin/details/{pk}", t=s.T0 + i, growth=114 * MIB, queries=s.queries(st))
        for i in range(20)
    ]
    for r in recs[:10]:
        r["memory"]["shared"] = True
    findings = _findings(_write(tmp_path / "d", recs))
    kinds = [f["kind"] for f in findings]
    assert kinds.count("cartesian_join") == 1 and "large_result_set" not in kinds, kinds
    ev = next(f for f in findings if f["kind"] == "cartesian_join")["evidence"]
    assert ev["rows"] == 120_000 and ev["requests"] == 20 and ev["peak_bytes"] == 114 * MIB


def test_n_plus_one_of_a_service_loop_is_one_finding_at_the_loop_with_a_batching_fix(tmp_path: Path) -> None:
    loop = "app/services/recipes.py:88 in refresh_all"
    helper = "app/repos/generic.py:141 in get_one"
    recs = []
    for i in range(40):
        route = ("/recipes/refresh", "/groups/{id}/refresh")[i % 2]
        n = 20 + i % 5
        get = s.statement("SELECT recipes.id, recipes.slug FROM recipes WHERE recipes.slug = ?", n,
                          frame=helper, loop=loop, library="app/repos/generic.py:141 in get_one")  # fmt: skip
        upd = s.statement("UPDATE recipes SET rating = ? WHERE recipes.id = ?", n, frame=helper, loop=loop)
        once = s.statement("SELECT recipes.id, recipes.slug FROM recipes WHERE recipes.slug = ?", 1,
                           frame=helper, loop="app/routes/recipes.py:20 in show")  # fmt: skip
        recs.append(s.sample(route, t=s.T0 + i, queries=s.queries(get, upd)))
        recs.append(s.sample("/recipes/{slug}", t=s.T0 + i + 0.5, queries=s.queries(once)))
    findings = [f for f in _findings(_write(tmp_path / "d", recs)) if f["kind"] == "n_plus_one"]
    assert len(findings) == 1
    f = findings[0]
    ev = f["evidence"]
    assert f["subject"] == loop and ev["is_loop"] and loop in f["title"]
    assert len(ev["statements"]) == 2 and ev["requests"] == 40 and ev["max_per_request"] == 48
    assert sorted(ev["routes"]) == ["/groups/{id}/refresh", "/recipes/refresh"]
    assert "IN" in f["fix"] and "bulk" in f["fix"] and "selectinload" not in f["fix"]
    text = run_cli("analyze", str(tmp_path / "d")).stdout
    ids = [x["id"] for x in ev["statements"]]
    assert all(f"[{i}]" in text for i in ids)


def _run(n_once: int, seed: int, pid: int) -> list[dict[str, Any]]:
    """One worker: /documents keeps 50 KiB per request, /items keeps nothing, interleaved; a rare route
    requested once; 400 requests in a minute."""
    rng = random.Random(seed)
    out, heap = [], 40 * MIB
    for i in range(400):
        leaky = i % 2 == 0
        kept = 50 * KIB + rng.randrange(0, 2 * KIB) if leaky else 0
        peak = heap + rng.randrange(0, 2 * MIB)
        out.append(s.sample("/documents" if leaky else "/items/{id}", t=s.T0 + i * 0.15, worker=f"api-1:{pid}",
                            rss=50 * MIB + heap, growth=kept, heap=(heap, peak, heap + kept)))  # fmt: skip
        heap += kept
    out.append(s.sample("/admin/rare", t=s.T0 + 61, worker=f"api-1:{pid}", rss=50 * MIB + heap, growth=n_once,
                        heap=(heap, heap + n_once, heap)))  # fmt: skip
    return out


def test_two_runs_of_the_same_app_are_unchanged_and_the_leak_persists(tmp_path: Path) -> None:
    a = _write(tmp_path / "a", _run(1 * MIB, 1, 300))
    b = _write(tmp_path / "b", _run(40 * MIB, 2, 4242))  # another PID; the rare route's one request differs
    r = run_cli("compare", str(a), str(b), "--json", "--fail-if-worse")
    assert r.code == 0, r
    result = json.loads(r.stdout)
    assert result["verdict"] == "unchanged"
    assert [f["kind"] for f in result["findings"]["persisting"]] == ["leak"]
    assert result["findings"]["new"] == [] and result["findings"]["resolved"] == []
    rare = next(x for x in result["routes"] if x["route"] == "/admin/rare")
    assert rare["verdict"] == "not enough data"
    items = next(x for x in result["routes"] if x["route"] == "/items/{id}")
    assert items["verdict"] == "unchanged" and 0 <= items["p_value"] <= 1


def test_rss_only_records_judge_the_objects_a_route_loads_by_account(tmp_path: Path) -> None:
    """On a warm heap RSS does not move; the ORM objects per request show the spread, and the path
    parameter (the account) explains it."""
    rng = random.Random(8)
    recs = []
    for i in range(120):
        account = rng.randrange(1, 13)
        n = 10_000 if account in (3, 7) else 10
        st = s.statement("SELECT items.* FROM items WHERE items.account_id = ?", 1, rows=n, instances=n)
        rec = s.sample("/accounts/{account_id}", t=s.T0 + i, rss=300 * MIB, growth=0, queries=s.queries(st))
        rec["request"]["path"] = f"/accounts/{account}"
        recs.append(rec)
    f = _findings(_write(tmp_path / "d", recs))[0]
    assert f["kind"] == "state_dependent_variance" and f["evidence"]["measure"] == "instances"
    assert f["evidence"]["variable"] in ("path", "rows") and f["evidence"]["correlations"]["path"] > 0.95
