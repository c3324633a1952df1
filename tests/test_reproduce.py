"""The reproduction harness on real Starlette apps whose memory depends (or not) on a parameter by construction.

The apps and hooks live at module level so that ``isolate=True`` can import them in a subprocess.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.pool import StaticPool
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from memprof import instrument_sqlalchemy, uninstrument_sqlalchemy
from memprof.testing import ReproduceError, Variable, reproduce
from memprof.testing.fit import explain, keeps_growing, linear_fit, robust_growth
from memprof.testing.variables import Context, RequestSpec, variants

PERMISSION_BYTES = 20_000  # what one permission costs the dashboard, by construction
STATE: dict[str, Any] = {"permissions": 0, "hour": 0, "rows": 0}
CACHE: dict[str, bytes] = {}
LEAK: list[bytes] = []


class Base(DeclarativeBase):
    pass


class Row(Base):
    __tablename__ = "reproduce_rows"
    id: Mapped[int] = mapped_column(primary_key=True)
    payload: Mapped[str]


async def dashboard(request: Request) -> Response:
    """Memory proportional to the permission count; a session touched; a cache filled on a miss."""
    permissions = [bytes(PERMISSION_BYTES) for _ in range(STATE["permissions"])]
    burst = bytes(STATE.pop("burst", 0))  # a one-off transient allocation (another thread's, say)
    del burst
    request.session["visits"] = int(request.session.get("visits", 0)) + 1
    if "menu" not in CACHE:
        scratch = [bytes(1000) for _ in range(600)]  # building the cached menu needs ~600 KB at once
        CACHE["menu"] = b"".join(scratch[:10])
    return JSONResponse({"permissions": len(permissions), "hour": STATE["hour"]})


async def flat(request: Request) -> Response:
    """The same work whatever the parameters: ~200 KB."""
    data = [bytes(10_000) for _ in range(20)]
    request.session["visits"] = int(request.session.get("visits", 0)) + 1
    return JSONResponse({"n": len(data)})


async def leaky(request: Request) -> Response:
    """Keeps 20 KB per request forever (an accumulation bug)."""
    LEAK.append(bytes(20_000))
    return JSONResponse({"kept": len(LEAK)})


async def fill_session(request: Request) -> Response:
    request.session["blob"] = "x" * int(request.query_params["size"])
    return JSONResponse({"ok": True})


_MW = [Middleware(SessionMiddleware, secret_key="reproduce-tests")]
perm_app = Starlette(
    routes=[
        Route("/dashboard", dashboard),
        Route("/flat", flat),
        Route("/leaky", leaky),
        Route("/fill-session", fill_session),
    ],
    middleware=_MW,
)


def set_permissions(ctx: Context, value: int) -> None:
    STATE["permissions"] = value


def set_named(ctx: Context, name: str, value: Any) -> None:
    """The CLI's --setup hook: setup(ctx, name, value)."""
    STATE[name] = value


def set_hour(ctx: Context, value: int) -> None:
    STATE["hour"] = value


async def clear_cache(ctx: Context, state: str) -> None:
    CACHE.clear()


def fill(ctx: Context, size: int) -> None:
    assert ctx.client.get(f"/fill-session?size={size}").status_code == 200


@pytest.fixture(autouse=True)
def _reset() -> None:
    STATE.update(permissions=0, hour=0, rows=0)
    CACHE.clear()
    LEAK.clear()


def test_fit_finds_the_parameter_memory_follows() -> None:
    result = reproduce(
        perm_app,
        "GET /dashboard",
        [
            Variable.param("permissions", [0, 25, 50, 100, 200], set_permissions, unit="permission"),
            Variable.session_state(),
            Variable.clock([0, 12], set_hour, unit="hour"),
        ],
        runs=3,
    )
    assert result.explained_by is not None and result.explained_by.variable == "permissions"
    fit = result.effects["permissions"].fit
    assert fit is not None
    assert fit.slope == pytest.approx(PERMISSION_BYTES, rel=0.2)
    assert fit.r2 > 0.98
    assert result.summary()[0].startswith("memory follows permissions: +19.")
    assert "per permission, R² 1.00" in result.summary()[0]
    # Every variant ran and answered; the table has the baseline plus one row per non-default value.
    assert [v.label for v in result.variants] == [
        "baseline",
        "permissions=25",
        "permissions=50",
        "permissions=100",
        "permissions=200",
        "session=existing",
        "clock=12",
    ]
    assert all(v.statuses == [200] for v in result.variants)
    assert result.variant("permissions=200").peak > 200 * PERMISSION_BYTES
    assert result.variant("baseline").peak < 25 * PERMISSION_BYTES
    # The clock does not move memory here: a fit, but no effect.
    clock = result.effects["clock"]
    assert clock.fit is not None and clock.fit.effect < 64 * 1024


def test_one_disturbed_run_does_not_hide_the_variable() -> None:
    disturbed: list[int] = []

    def set_permissions_disturbing_one_run(ctx: Context, value: int) -> None:
        set_permissions(ctx, value)
        if value == 50 and not disturbed:  # the first run of one variant allocates 8 MB once
            disturbed.append(value)
            STATE["burst"] = 8_000_000

    result = reproduce(
        perm_app,
        "GET /dashboard",
        [Variable.param("permissions", [0, 25, 50, 100, 200], set_permissions_disturbing_one_run)],
        runs=3,
    )
    assert disturbed == [50]
    assert max(result.variant("permissions=50").run_peaks) > 8_000_000  # the disturbance was measured
    assert result.explained_by is not None and result.explained_by.variable == "permissions"
    assert result.effects["permissions"].noise < 1_000_000


def test_memory_that_follows_no_variable_names_none() -> None:
    result = reproduce(
        perm_app,
        "GET /flat",
        [
            Variable.param("permissions", [0, 100, 200, 400], set_permissions),
            Variable.session_state(),
            Variable.session_size([0, 1_000, 3_000], fill),
        ],
        runs=3,
    )
    assert result.explained_by is None
    assert result.summary()[0] == "no variable explains memory: every effect is within noise or fits poorly"
    peaks = [v.peak for v in result.variants]
    assert max(peaks) - min(peaks) < 64 * 1024
    assert 190_000 < min(peaks) < 400_000


@pytest.fixture
def sql_app() -> Iterator[Starlette]:
    """A real SQLite database behind an endpoint that loads ``STATE["rows"]`` ORM objects in one query."""
    engine = create_engine("sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False})
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add_all([Row(id=i, payload="x" * 500) for i in range(1, 901)])
        session.commit()
    instrument_sqlalchemy(engine)

    def rows(request: Request) -> Response:
        with Session(engine) as session:
            loaded = session.scalars(select(Row).where(Row.id <= STATE["rows"])).all()
            return JSONResponse({"rows": len(loaded)})

    yield Starlette(routes=[Route("/rows", rows)])
    uninstrument_sqlalchemy()
    engine.dispose()


def set_rows(ctx: Context, value: int) -> None:
    STATE["rows"] = value


def test_queries_instances_and_session_size_come_from_the_records(sql_app: Starlette) -> None:
    result = reproduce(
        sql_app, "GET /rows", [Variable.param("rows", [10, 300, 900], set_rows, unit="row")], runs=3
    )
    assert [v.queries for v in result.variants] == [1, 1, 1]
    assert [v.instances for v in result.variants] == [10, 300, 900]
    assert result.explained_by is not None and result.explained_by.variable == "rows"
    fit = result.effects["rows"].fit
    assert fit is not None and fit.slope > 500  # at least the 500-byte payload of each row
    sessions = reproduce(perm_app, "GET /flat", [Variable.session_size([0, 3_000, 9_000], fill)], runs=1)
    sizes = [v.session_size for v in sessions.variants]
    assert sizes[0] is not None and sizes[0] < 100
    assert sizes[1] is not None and 3_000 < sizes[1] < 3_200
    assert sizes[2] is not None and 9_000 < sizes[2] < 9_200


def test_cache_states_through_hooks() -> None:
    result = reproduce(perm_app, "GET /dashboard", [Variable.cache(clear_cache)], runs=3)
    cold, warm, cleared = (result.variant(label) for label in ("cache=cold", "baseline", "cache=cleared"))
    assert warm.values["cache"] == "warm"
    # Building the cache needs ~600 KB at once: cold and cleared pay it, warm does not (the margin
    # above 250 KB absorbs what other threads allocate while tracemalloc traces the whole process).
    assert cold.peak - warm.peak > 250_000
    assert cleared.peak - warm.peak > 250_000
    assert result.effects["cache"].fit is None and result.effects["cache"].spread > 250_000
    assert result.explained_by is None  # not numeric: reported as a spread, not fitted


def test_repeated_requests_report_growth_per_request() -> None:
    result = reproduce(perm_app, "GET /leaky", repeats=6, runs=3)
    growth = result.baseline.growth_per_request
    assert growth is not None and growth == pytest.approx(20_000, rel=0.2)
    assert "retained per request" in result.summary()[-1]
    steady = reproduce(perm_app, "GET /flat", repeats=6, runs=3).baseline.growth_per_request
    assert steady is not None and steady < 2_048


def test_result_to_dict_is_json_ready() -> None:
    import json

    result = reproduce(
        perm_app, "GET /dashboard", [Variable.param("permissions", [0, 10, 20], set_permissions)], runs=3
    )
    data = json.loads(json.dumps(result.to_dict()))
    assert data["explained_by"] == "permissions"
    assert data["effects"]["permissions"]["slope"] == pytest.approx(PERMISSION_BYTES, rel=0.2)
    assert [v["label"] for v in data["variants"]] == ["baseline", "permissions=10", "permissions=20"]
    assert data["variants"][0]["queries"] is None  # no SQLAlchemy integration on this app: tolerated


@pytest.mark.slow
def test_isolated_runs_in_fresh_subprocesses() -> None:
    result = reproduce(
        "tests.test_reproduce:perm_app",
        "GET /leaky",
        [Variable.param("permissions", [0, 50], set_permissions)],
        repeats=4,
        runs=1,
        isolate=True,
    )
    # A fresh process each time: the leak starts from zero in every run, and the parent's list stays empty.
    assert [v.statuses for v in result.variants] == [[200], [200]]
    assert LEAK == []
    growth = result.baseline.growth_per_request
    assert growth is not None and growth == pytest.approx(20_000, rel=0.2)


def test_isolate_needs_importable_app_and_hooks() -> None:
    with pytest.raises(ReproduceError, match="give the app as 'module:attr'"):
        reproduce(perm_app, "GET /flat", isolate=True)
    with pytest.raises(ReproduceError, match="module-level function, not a lambda"):
        reproduce(
            "tests.test_reproduce:perm_app",
            "GET /flat",
            [Variable.param("n", [1, 2], lambda ctx, v: None)],
            isolate=True,
        )


def test_bad_input_is_one_clear_error() -> None:
    with pytest.raises(ReproduceError, match="'/flat' is not a request: expected METHOD /path"):
        reproduce(perm_app, "/flat")
    with pytest.raises(ReproduceError, match="does not name the app"):
        reproduce("perm_app", "GET /flat")
    with pytest.raises(ReproduceError, match="repeats and runs must be at least 1"):
        reproduce(perm_app, "GET /flat", repeats=0)
    with pytest.raises(ValueError, match="needs at least two values"):
        Variable.param("n", [1], set_permissions)
    with pytest.raises(ValueError, match="unknown cache states"):
        Variable.cache(None, states=("cold", "hot"))


def test_variants_are_one_factor_at_a_time() -> None:
    a = Variable("a", (1, 2, 3))
    b = Variable("b", ("x", "y"), default="y")
    assert variants([a, b]) == [
        (None, {"a": 1, "b": "y"}),
        ("a", {"a": 2, "b": "y"}),
        ("a", {"a": 3, "b": "y"}),
        ("b", {"a": 1, "b": "x"}),
    ]
    assert RequestSpec.parse("get /x?y=1").method == "GET"


def test_linear_fit() -> None:
    fit = linear_fit([0, 1, 2, 3], [1, 3, 5, 7])
    assert (fit.slope, fit.intercept, fit.r2, fit.effect) == (2.0, 1.0, 1.0, 6.0)
    noisy = linear_fit([0, 1, 2, 3, 4], [10, 0, 10, 0, 10])
    assert noisy.r2 < 0.1
    assert linear_fit([1, 2, 3], [5, 5, 5]).r2 == 0.0
    assert linear_fit([2, 2, 2], [1, 2, 3]).slope == 0.0
    with pytest.raises(ValueError, match="at least two points"):
        linear_fit([1], [1])


def test_robust_growth_ignores_a_stray_reading() -> None:
    assert robust_growth([0, 10, 20, 30, 40]) == 10.0
    assert robust_growth([0, 10, 20, 5_000, 40, 50]) == 10.0
    assert linear_fit([0, 1, 2, 3, 4, 5], [0, 10, 20, 5_000, 40, 50]).slope > 100
    assert robust_growth([7]) == 0.0


def test_keeps_growing_and_explain() -> None:
    assert keeps_growing([0, 10, 20, 30, 40], tolerance=5)
    assert keeps_growing([0, 30, 60, 290, 120, 150, 180], tolerance=5)  # a leak with one stray reading
    # Readings scattered around a flat line rise in most steps with a slope above tolerance, but no trend.
    assert not keeps_growing([10, 50, 0, 60, 65, 5, 70], tolerance=4)  # slope 5, 4 rises of 6, R² 0.15
    assert not keeps_growing(
        [0, 100, 100, 100, 100], tolerance=5
    )  # one jump, then level: a cache, not a leak
    assert not keeps_growing([0, 1, 2, 3], tolerance=5)
    good = linear_fit([0, 1, 2, 3], [0, 100, 200, 300])
    flat = linear_fit([0, 1, 2, 3], [0, 1, 0, 1])
    assert explain({"a": good, "b": flat}, {"a": 1, "b": 1}).variable == "a"  # type: ignore[union-attr]
    assert explain({"a": good}, {"a": 200}) is None  # effect 300 is within 3x noise
    assert explain({"a": good}, {}, min_effect=1_000) is None
