"""Findings from hand-built records: each kind with its evidence and fix, and none on a clean app."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from starlette.testclient import TestClient

from memprof import MemprofMiddleware
from memprof.analysis import analyze
from memprof.analysis import synthetic as s
from tests.apps import fastapi_app, starlette_app

MIB = s.MIB
SEVERE = ("warning", "critical")


def _findings(tmp_path: Path, samples: list[dict[str, Any]], **files: dict[str, Any]) -> list[dict[str, Any]]:
    d = tmp_path / "data"
    s.write_jsonl(d / "samples-20261129T100000-100-0001.jsonl", samples)
    for name, rec in files.items():
        if rec["schema"] == "memprof.dump":
            s.write_json(d / "dumps" / f"dump-20261129T100000-100-{name}.json", rec)
        elif rec["schema"] == "memprof.crash":
            s.write_json(d / "crashes" / f"crash-{name}.json", rec)
        else:
            s.write_jsonl(d / f"state-{name}.jsonl", [rec])
    return list(analyze([str(d)]).summary["findings"])


def _only(findings: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    matching = [f for f in findings if f["kind"] == kind]
    assert len(matching) == 1, [(f["kind"], f["title"]) for f in findings]
    f = matching[0]
    assert f["fix"] and f["title"] and f["evidence"]["records"]
    return f


def _clean_samples(n: int = 400, seed: int = 7) -> list[dict[str, Any]]:
    """A healthy service: warm-up then flat memory, small noise, small sessions, a few queries per request."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        worker = f"api-1:{100 + i % 2}"
        base = 80 * MIB + min(i, 40) * 256 * 1024 + rng.randrange(0, 512 * 1024)
        route = rng.choice(["/items/{item_id}", "/users/{user_id}", "/admin/dashboard", "/health"])
        growth = rng.choice([0, 0, 0, 4096, 65536, 262144])
        stmts = [s.statement("SELECT items.id, items.name FROM items WHERE items.id = ?", 1, rows=1, instances=1),
                 s.statement("SELECT tags.id FROM tags WHERE tags.item_id IN (?)", 1, rows=5, instances=5)]  # fmt: skip
        out.append(
            s.sample(
                route,
                t=s.T0 + i,
                rss=base,
                growth=growth,
                worker=worker,
                queries=s.queries(*stmts),
                session=s.session(200 + rng.randrange(100), {"user_id": 12}, id_hash=f"h{i % 20}"),
                models={"classes": {"app.Item": {"loaded": 6}}, "identity_maps": [6]},
            )
        )
    return out


def test_clean_hand_built_app_has_no_warnings(tmp_path: Path) -> None:
    bounded = s.state([s.cache("app.settings", 1, 1), s.cache("app.lookup", 128, 128)], t=s.T0 + 100)
    findings = _findings(tmp_path, _clean_samples(), state_a=bounded)
    assert [f for f in findings if f["severity"] in SEVERE] == []


def test_clean_real_app_has_no_warnings(make_settings: Any, data_dir: Path, samples: Any) -> None:
    for factory in (starlette_app, fastapi_app):
        app = MemprofMiddleware(factory(), settings=make_settings())
        with TestClient(app) as client:
            for i in range(150):
                client.get(f"/users/{i}")
                client.get("/")
                client.get(f"/api/items/{i}")
    assert len(samples()) == 900
    summary = analyze([str(data_dir)]).summary
    assert summary["samples"] == 900 and summary["input"]["skipped"] == 0
    assert {"/users/{user_id}", "/", "/api/items/{item_id:int}"} <= {r["route"] for r in summary["routes"]}
    assert [f for f in summary["findings"] if f["severity"] in SEVERE] == []


def test_n_plus_one(tmp_path: Path) -> None:
    lazy = s.statement("SELECT tags.id FROM tags WHERE ? = tags.item_id", 48, rows=48, instances=48,
                       n_plus_one=True, lazy=True, frame="app/views.py:42 in list_items")  # fmt: skip
    recs = [s.sample("/items", t=s.T0 + i, queries=s.queries(lazy)) for i in range(3)]
    f = _only(_findings(tmp_path, recs), "n_plus_one")
    assert f["severity"] == "warning"
    ev = f["evidence"]
    assert (ev["max_per_request"], ev["requests"], ev["median_per_request"]) == (48, 3, 48)
    assert ev["site"] == "app/views.py:42 in list_items" and ev["routes"] == ["/items"] and ev["lazy"]
    assert "selectinload" in f["fix"] and "app/views.py:42" in f["fix"]


def test_cartesian_join(tmp_path: Path) -> None:
    st = s.statement("SELECT orders.* FROM orders LEFT OUTER JOIN lines ... LEFT OUTER JOIN events ...", 1,
                     rows=120_000, instances=151)  # fmt: skip
    f = _only(_findings(tmp_path, [s.sample("/orders", queries=s.queries(st))]), "cartesian_join")
    assert (f["evidence"]["rows"], f["evidence"]["instances"], f["evidence"]["ratio"]) == (
        120_000,
        151,
        794.7,
    )
    assert "selectinload" in f["fix"]


def test_large_result_set(tmp_path: Path) -> None:
    st = s.statement("SELECT events.* FROM events", 1, rows=200_000, instances=200_000, rss_delta=180 * MIB)
    f = _only(_findings(tmp_path, [s.sample("/export", growth=180 * MIB, queries=s.queries(st))]),
              "large_result_set")  # fmt: skip
    assert f["evidence"]["instances"] == 200_000 and f["evidence"]["peak_bytes"] == 180 * MIB
    assert "yield_per" in f["fix"]


def test_loader_criteria_explosion(tmp_path: Path) -> None:
    crit = {"criteria": "lambda cls: cls.tenant_id == ... (app/scopes.py:12)", "kind": "lambda",
            "where": "app/scopes.py:12", "applied": 140, "statements": [], "duplicates": 3}  # fmt: skip
    rec = s.sample("/reports", scopes={"classes": {"app.Order": [crit]}})
    f = _only(_findings(tmp_path, [rec]), "loader_criteria_explosion")
    assert f["evidence"]["max_per_request"] == 140 and f["evidence"]["duplicates"] == 3
    assert f["evidence"]["where"] == "app/scopes.py:12" and "do_orm_execute" in f["fix"]


def test_session_bloat(tmp_path: Path) -> None:
    recs = [s.sample("/cart", t=s.T0 + i, session=s.session(20_000 + i * 40_000, {"cart": 15_000 + i * 40_000,
                                                                                  "user_id": 8}, id_hash="abc"))
            for i in range(8)]  # fmt: skip
    f = _only(_findings(tmp_path, recs), "session_bloat")
    ev = f["evidence"]
    assert ev["largest_keys"][0]["key"] == "cart" and ev["largest_keys"][0]["max_size"] == 295_000
    assert ev["growing_sessions"][0]["id_hash"] == "abc"
    assert ev["growing_sessions"][0]["growth"] == 280_000
    assert ev["size"]["max"] == 300_000


def test_route_family_overhead(tmp_path: Path) -> None:
    recs = [s.sample("/admin/orders" if i % 10 == 0 else "/api/items", t=s.T0 + i,
                     growth=60 * MIB if i % 10 == 0 else 32 * 1024) for i in range(300)]  # fmt: skip
    f = _only(_findings(tmp_path, recs, d1=s.dump(route="/admin/orders")), "route_family_overhead")
    ev = f["evidence"]
    assert ev["family"] == "/admin" and ev["high_share"] == 1.0 and ev["traffic_share"] == 0.1
    assert ev["dumps"] == 1 and ev["routes"] == ["/admin/orders"]


def test_leak_names_what_grows(tmp_path: Path) -> None:
    recs = [s.sample("/r", t=s.T0 + i, rss=100 * MIB + i * 512 * 1024, growth=512 * 1024, worker="w:1")
            for i in range(120)]  # fmt: skip
    recs += [s.sample("/r", t=s.T0 + i, rss=100 * MIB, worker="w:2") for i in range(120)]
    states = {
        f"s{i}": s.state([s.cache("app.by_user", 100 * i)], t=s.T0 + 30 * i, worker="w:1") for i in range(4)
    }
    d1 = s.dump(t=s.T0 + 10, worker="w:1", objects={"Order": 1_000, "dict": 9_000})
    d2 = s.dump(t=s.T0 + 110, worker="w:1", objects={"Order": 61_000, "dict": 9_100})
    findings = _findings(tmp_path, recs, d1=d1, d2=d2, **states)
    f = _only(findings, "leak")
    ev = f["evidence"]
    assert ev["workers"] == ["w:1"] and ev["growth_per_request"] == 512 * 1024 and ev["route"] == "/r"
    assert [g["name"] for g in ev["growing"][:2]] == ["Order objects", "cache app.by_user"]
    cache = _only(findings, "unbounded_cache")
    assert (cache["evidence"]["first"], cache["evidence"]["last"]) == (0, 300)


def test_unbounded_cache_only_when_it_only_grows(tmp_path: Path) -> None:
    sizes = {"grows": [10, 300, 700, 1200], "bounded": [10, 300, 512, 512], "shrinks": [10, 900, 100, 800]}
    states = {f"s{i}": s.state([s.cache(name, v[i], 512 if name == "bounded" else None)
                                     for name, v in sizes.items()], t=s.T0 + 60 * i) for i in range(4)}  # fmt: skip
    findings = _findings(tmp_path, [s.sample()], **states)
    f = _only(findings, "unbounded_cache")
    assert f["subject"] == "grows" and f["evidence"]["observations"] == 4


def test_state_dependent_variance_names_the_variable(tmp_path: Path) -> None:
    rng = random.Random(3)
    recs = []
    for i in range(60):
        n = rng.randrange(0, 3000)
        st = s.statement("SELECT accounts.* FROM accounts WHERE accounts.org_id = ?", 1, rows=n, instances=n)
        recs.append(s.sample("/orgs/{org_id}", t=s.T0 + i, growth=n * 8 * 1024 + rng.randrange(0, 200_000),
                             queries=s.queries(st), session=s.session(300)))  # fmt: skip
    f = _only(_findings(tmp_path, recs), "state_dependent_variance")
    assert (
        f["severity"] == "warning" and f["evidence"]["variable"] == "instances" and f["evidence"]["r"] > 0.95
    )
    assert "pagination" in f["fix"]


def test_worker_killed_is_critical_and_first(tmp_path: Path) -> None:
    crash = s.crash(
        worker="api-3:77", last_rss=1010 * MIB, limit=1024 * MIB, inflight=["/reports/{id}", "/health"]
    )
    lazy = s.statement("SELECT 1", 30, n_plus_one=True)
    findings = _findings(tmp_path, [s.sample(queries=s.queries(lazy))], crash=crash)
    assert findings[0]["kind"] == "worker_killed" and findings[0]["severity"] == "critical"
    assert (
        findings[0]["title"]
        == "Worker api-3:77 was killed at 99% of its limit with 2 request(s) in flight: /reports/{id}, /health"
    )
    assert findings[1]["kind"] == "n_plus_one"


def test_route_family_overhead_of_a_small_family_among_noise(tmp_path: Path) -> None:
    """A family with 2% of the traffic cannot hold most of the top 5%; its own rate names it."""
    rng = random.Random(11)
    recs = []
    for i in range(2000):
        admin = i % 50 == 0
        growth = rng.randrange(20, 80) * MIB if admin else rng.choice((0, 4096, 1 << 20, 1 << 20, 0))
        recs.append(s.sample("/admin/reports/{id}" if admin else f"/api/r{i % 7}", t=s.T0 + i, growth=growth))
    f = _only(_findings(tmp_path, recs), "route_family_overhead")
    ev = f["evidence"]
    assert ev["family"] == "/admin" and ev["traffic_share"] == 0.02 and ev["high_rate"] == 1.0
    assert ev["high_share"] < 0.5 and ev["rest_high_rate"] > 0.2
    assert f["title"].startswith("/admin/*: 100% of its requests are high-memory vs ")


def test_route_family_overhead_by_objects_loaded(tmp_path: Path) -> None:
    """Once the heap has grown, a heavy route's RSS growth is small; the objects it loads still show."""
    recs = []
    for i in range(300):
        admin = i % 20 == 0
        st = s.statement("SELECT * FROM orders", 1, rows=3600 if admin else 2, instances=3600 if admin else 2)
        recs.append(s.sample("/admin/orders" if admin else "/api/items", t=s.T0 + i, growth=(i % 3) * 65536,
                             queries=s.queries(st)))  # fmt: skip
    f = _only(_findings(tmp_path, recs), "route_family_overhead")
    assert (f["evidence"]["objects_p50"], f["evidence"]["rest_objects_p50"]) == (3600, 2)
    assert f["title"].startswith("/admin/*: its requests load 3,600 ORM objects (p50) vs 2 elsewhere")


def test_session_bloat_title_names_the_key_and_the_growth(tmp_path: Path) -> None:
    recs = [s.sample("/d", t=s.T0 + i, session=s.session(100_000 * (i + 1), {"perms": 100_000 * (i + 1) - 50, "uid": 8},
                                                         "abc")) for i in range(4)]  # fmt: skip
    f = _only(_findings(tmp_path, recs), "session_bloat")
    assert f["title"] == ("Session bloat: sessions up to 391 KiB (p95 391 KiB); largest: perms (391 KiB); "
                          "one session grew by 293 KiB over 4 requests, on /d")  # fmt: skip
    assert (f["evidence"]["largest_key"], f["evidence"]["size_max"]) == ("perms", 400_000)


def test_checkpoint_only_samples_do_not_count_as_zero_objects(tmp_path: Path) -> None:
    """Past the memory guard, samples carry checkpoints only: they say nothing about objects loaded."""
    recs = []
    for i in range(300):
        admin = i % 20 in (0, 1)
        if i % 2:  # every other request checkpoint-only (light mode, or the memory guard)
            recs.append(s.sample("/admin/orders" if admin else "/api/items", t=s.T0 + i))
            continue
        st = s.statement("SELECT * FROM orders", 1, rows=3600 if admin else 2, instances=3600 if admin else 2)
        recs.append(s.sample("/admin/orders" if admin else "/api/items", t=s.T0 + i, queries=s.queries(st)))
    f = _only(_findings(tmp_path, recs), "route_family_overhead")
    assert (f["evidence"]["objects_p50"], f["evidence"]["rest_objects_p50"]) == (3600, 2)


def test_n_plus_one_names_the_frame_and_route_where_it_repeats(tmp_path: Path) -> None:
    """The same statement runs once per request on one route and 60 times on another: the finding points
    at the loop, not at the single lookup."""
    sql = "SELECT customers.id FROM customers WHERE customers.id = ?"
    recs = []
    for i in range(40):
        once = s.statement(sql, 1, frame="app.py:107 in customer_summary")
        recs.append(s.sample("/customers/{id}/summary", t=s.T0 + i, queries=s.queries(once)))
    for i in range(5):
        loop = s.statement(sql, 60, n_plus_one=True, lazy=True, frame="app.py:87 in list_orders")
        recs.append(s.sample("/orders", t=s.T0 + 100 + i, queries=s.queries(loop)))
    f = _only(_findings(tmp_path, recs), "n_plus_one")
    assert f["evidence"]["site"] == "app.py:87 in list_orders"
    assert f["evidence"]["routes"] == ["/orders"]


def test_session_bloat_names_the_route_that_grows_it(tmp_path: Path) -> None:
    """A big session travels to every route; the finding names the one whose requests make it grow."""
    recs, size = [], 1_000
    for i in range(30):
        route = "/dashboard" if i % 3 == 0 else "/orders"
        size += 20_000 if route == "/dashboard" else 0
        recs.append(s.sample(route, t=s.T0 + i, session=s.session(size, {"permissions": size - 20}, "sid1")))
    # Another user's small session gains a byte (a counter's tenth visit), last seen on another route.
    recs += [
        s.sample("/orders", t=s.T0 + 40 + i, session=s.session(60 + i, {"visits": 2}, "sid2"))
        for i in range(2)
    ]
    f = _only(_findings(tmp_path, recs), "session_bloat")
    assert f["title"].endswith(", on /dashboard")
    assert f["evidence"]["grown_on"] == [{"route": "/dashboard", "bytes": 200_000 - 20_000},
                                         {"route": "/orders", "bytes": 1}]  # fmt: skip


def _customer_pages(with_summary: bool) -> list[dict[str, Any]]:
    """/customers/{id} joinedloads three collections: its rows multiply, and some customers have far more
    than others (memory follows the path); with_summary adds a light route to the /customers family."""
    rng = random.Random(5)
    recs = []
    for i in range(240):
        if i % 2 and with_summary:
            recs.append(
                s.sample("/customers/{customer_id}/summary", t=s.T0 + i, growth=rng.randrange(0, 200_000))
            )
            continue
        if i % 3 == 0:
            recs.append(s.sample("/api/items", t=s.T0 + i, growth=rng.randrange(0, 100_000)))
            continue
        customer = rng.randrange(1, 13)
        n = 40 if customer in (3, 7) else 4  # children per collection
        rows = n**3
        st = s.statement("SELECT customers.*, orders_1.*, notes_1.*, addresses_1.* FROM customers LEFT OUTER JOIN "
                         "orders ... LEFT OUTER JOIN notes ... LEFT OUTER JOIN addresses ...", 1, rows=rows,
                         instances=1 + 3 * n)  # fmt: skip
        rec = s.sample("/customers/{customer_id}", t=s.T0 + i, growth=rows * 200 + rng.randrange(0, 50_000),
                       queries=s.queries(st))  # fmt: skip
        rec["request"]["path"] = f"/customers/{customer}"
        recs.append(rec)
    return recs


def test_one_cause_one_finding_a_cartesian_join_whose_rows_follow_the_data(tmp_path: Path) -> None:
    """The route's memory follows the customer because the join multiplies each customer's collections:
    one finding (the join, with the spread as its evidence), not a second one for the variance; and the
    /customers family whose high-memory requests are all that route's points to it (info)."""
    findings = _findings(tmp_path, _customer_pages(with_summary=True))
    warnings = [f for f in findings if f["severity"] in SEVERE]
    assert [f["kind"] for f in warnings] == ["cartesian_join"], [(f["kind"], f["title"]) for f in findings]
    f = warnings[0]
    assert f["evidence"]["varies_with"]["variable"] == "path" and f["evidence"]["varies_with"]["r"] > 0.9
    assert "on /customers/{customer_id} memory per request follows the path (r=" in f["title"]
    assert not [g for g in findings if g["kind"] == "state_dependent_variance"]
    fam = [g for g in findings if g["kind"] == "route_family_overhead"]
    assert [g["severity"] for g in fam] in ([], ["info"])
    if fam:
        assert fam[0]["evidence"]["see"] == [f"cartesian_join:{f['subject'][:80]}"]


def test_one_cause_one_finding_a_family_that_loads_whole_tables(tmp_path: Path) -> None:
    """Every /admin page loads a whole table; one of them crosses the large-result threshold: one finding
    (the family), naming that statement, not a second one for the statement."""
    rng = random.Random(2)
    recs = []
    for i in range(300):
        page = (
            ("/admin/orders", "/admin/notes", "/admin/addresses")[i // 20 % 3]
            if i % 20 == 0
            else "/api/items"
        )
        big = page == "/admin/orders"
        n = 12_000 if big else (3_600 if page.startswith("/admin") else 2)
        st = s.statement(f"SELECT * FROM {page.rsplit('/', 1)[1]}", 1, rows=n, instances=n,
                         rss_delta=40 * MIB if big else 0)  # fmt: skip
        growth = 40 * MIB if big else rng.randrange(0, 200_000)  # (a warm heap hides the other pages' cost)
        recs.append(s.sample(page, t=s.T0 + i, growth=growth, queries=s.queries(st)))
    findings = _findings(tmp_path, recs)
    assert [f["kind"] for f in findings if f["severity"] in SEVERE] == ["route_family_overhead"], [
        (f["kind"], f["title"]) for f in findings
    ]
    f = _only(findings, "route_family_overhead")
    assert [x["routes"] for x in f["evidence"]["statements"]] == [["/admin/orders"]]
    assert f["evidence"]["statements"][0]["instances"] == 12_000
    assert f["title"].endswith("; /admin/orders loads up to 12,000 objects from one statement")


def test_a_family_is_not_explained_away_by_an_n_plus_one_it_shares_with_light_routes(tmp_path: Path) -> None:
    """An N+1 that runs on every route says nothing about why one family's requests are heavy."""
    lazy = s.statement(
        "SELECT tags.id FROM tags WHERE ? = tags.item_id", 30, n_plus_one=True, frame="app/v.py:9 in f"
    )
    recs = [s.sample("/admin/export" if i % 10 == 0 else "/items/{item_id}", t=s.T0 + i,
                     growth=50 * MIB if i % 10 == 0 else 8192, queries=s.queries(lazy)) for i in range(200)]  # fmt: skip
    findings = _findings(tmp_path, recs)
    assert {f["kind"]: f["severity"] for f in findings} == {
        "route_family_overhead": "warning",
        "n_plus_one": "warning",
    }
