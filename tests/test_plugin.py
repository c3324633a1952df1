"""The pytest plugin through pytester: each marker passing and failing, the client, options and ini keys."""

from __future__ import annotations

import textwrap

import pytest

pytest_plugins = ["pytester"]

# The app the inner test runs talk to: real Starlette, with an endpoint whose allocation the test chooses,
# backed by a real SQLite database instrumented with memprof's SQLAlchemy integration.
APP = """
from sqlalchemy import create_engine, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.pool import StaticPool
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from memprof import checkpoint, instrument_sqlalchemy

KEPT = []


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "plugin_items"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]


engine = create_engine("sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False})
Base.metadata.create_all(engine)
with Session(engine) as session:
    session.add_all([Item(id=i, name=f"item-{i}") for i in range(1, 101)])
    session.commit()
instrument_sqlalchemy(engine)


def items(request: Request):
    # One query per item (an N+1 by construction): n statements, n instances.
    n = int(request.query_params.get("n", "1"))
    with checkpoint("build"), Session(engine) as session:
        names = [session.execute(select(Item).where(Item.id == i)).scalar_one().name for i in range(1, n + 1)]
    return JSONResponse({"n": len(names)})


app = Starlette(routes=[Route("/items", items)])
"""


@pytest.fixture
def inner(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(myapp=APP)
    pytester.makeconftest(
        """
        import pytest
        import myapp
        from memprof import uninstrument_sqlalchemy

        @pytest.fixture
        def memprof_app():
            return myapp.app

        def pytest_unconfigure(config):
            uninstrument_sqlalchemy()  # the inner run shares this process with the outer one
        """
    )
    return pytester


def run(pytester: pytest.Pytester, source: str, *args: str) -> pytest.RunResult:
    pytester.makepyfile(test_inner=textwrap.dedent(source))
    # memprof is already imported in this process: the inner run cannot assertion-rewrite it, and says so.
    return pytester.runpytest_inprocess(
        "-p", "no:cacheprovider", "-rA", "-W", "ignore::pytest.PytestAssertRewriteWarning", *args
    )


def test_markers_are_documented(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_inprocess("--markers")
    for name in ("memory_limit(limit)", "no_memory_growth(", "max_queries(n)", "max_instances(n)"):
        result.stdout.fnmatch_lines([f"@pytest.mark.{name}*"])


def test_memory_limit_passes_under_the_limit(inner: pytest.Pytester) -> None:
    result = run(
        inner,
        """
        import pytest

        @pytest.mark.memory_limit("5 MB")
        def test_small():
            data = bytearray(1024 * 1024)
            assert len(data) == 1024 * 1024
        """,
    )
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*memory_limit: peak 1.[0-2] MB of 5.0 MB*"])  # other threads add a little


def test_memory_limit_fails_over_the_limit_with_a_report(inner: pytest.Pytester) -> None:
    result = run(
        inner,
        """
        import pytest

        KEEP = []

        @pytest.mark.memory_limit("2 MB")
        def test_big():
            KEEP.append(bytearray(3 * 1024 * 1024))
        """,
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*memory_limit: the test allocated 3.0 MB at its peak, over its limit of 2.0 MB*",
            "*largest allocation sites still alive*",
            "*test_inner.py:*: 3.0 MB in * blocks*",
        ]
    )


def test_memory_limit_with_a_bad_argument_fails_the_test_not_the_run(inner: pytest.Pytester) -> None:
    result = run(
        inner,
        """
        import pytest

        @pytest.mark.memory_limit("lots")
        def test_bad():
            pass

        def test_other():
            pass
        """,
    )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*memory_limit: 'lots' is not a size*"])


def test_no_memory_growth_passes_for_a_steady_body(inner: pytest.Pytester) -> None:
    result = run(
        inner,
        """
        import pytest

        CALLS = []

        @pytest.mark.no_memory_growth(iterations=6, warmup=2)
        def test_steady():
            data = [str(i) for i in range(10_000)]
            CALLS.append(None) if not CALLS else None
            assert len(data) == 10_000

        def test_ran_the_body_once_per_iteration():
            pass
        """,
    )
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*no_memory_growth: memory levelled off over 6 iterations after 2 warm-up*"])


def test_no_memory_growth_fails_for_a_leak_and_names_the_type(inner: pytest.Pytester) -> None:
    result = run(
        inner,
        """
        import pytest

        class Leaked:
            def __init__(self):
                self.payload = bytearray(20_000)

        CACHE = []
        RUNS = []

        @pytest.mark.no_memory_growth(iterations=5, warmup=2)
        def test_leaky():
            RUNS.append(1)
            CACHE.append(Leaked())

        def test_body_ran_warmup_plus_iterations():
            assert len(RUNS) == 7
        """,
    )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*no_memory_growth: memory kept growing over 5 iterations after 2 warm-up: +[12][0-9].? KB per iteration*",
            "*object types that grew in every iteration:*",
            "*test_inner.Leaked: +5 (+1.0 per iteration)*",
        ]
    )


def test_no_memory_growth_catches_a_small_object_leak_by_type(inner: pytest.Pytester) -> None:
    result = run(
        inner,
        """
        import pytest

        class Session:
            pass

        OPEN = []

        @pytest.mark.no_memory_growth(iterations=8)
        def test_small_leak():
            OPEN.append(Session())
        """,
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*test_inner.Session: +8 (+1.0 per iteration)*"])


def test_no_memory_growth_repeats_async_bodies(inner: pytest.Pytester) -> None:
    result = run(
        inner,
        """
        import pytest

        CACHE = []

        @pytest.fixture
        def anyio_backend():
            return "asyncio"

        @pytest.mark.anyio
        @pytest.mark.no_memory_growth(iterations=4, warmup=1)
        async def test_async_leak():
            CACHE.append(bytearray(50_000))

        def test_count():
            assert len(CACHE) == 5
        """,
    )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        ["*memory kept growing over 4 iterations after 1 warm-up: +[3-6][0-9].? KB per iteration*"]
    )


def test_growth_defaults_come_from_ini_and_options(inner: pytest.Pytester) -> None:
    inner.makeini(
        """
        [pytest]
        memprof_growth_iterations = 4
        memprof_growth_warmup = 1
        memprof_growth_tolerance = 100 KB
        """
    )
    source = """
        import pytest

        CACHE = []

        @pytest.mark.no_memory_growth
        def test_leak_below_tolerance():
            CACHE.append(b"x" * 50_000)
        """
    result = run(inner, source)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*levelled off over 4 iterations after 1 warm-up*tolerance 100.0 KB*"])
    # The command line wins over the ini file.
    result = run(inner, source, "--memprof-growth-tolerance", "10 KB", "--memprof-growth-iterations", "5")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*kept growing over 5 iterations after 1 warm-up*tolerance 10.0 KB*"])


def test_bad_ini_value_is_one_clear_usage_error(inner: pytest.Pytester) -> None:
    inner.makeini("[pytest]\nmemprof_growth_tolerance = a lot\n")
    result = run(inner, "def test_x():\n    pass\n")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*memprof_growth_tolerance: 'a lot' is not a size*"])


def test_disable_option_skips_measuring(inner: pytest.Pytester) -> None:
    source = """
        import pytest

        @pytest.mark.memory_limit("1 KB")
        def test_big():
            data = bytearray(1024 * 1024)
        """
    run(inner, source).assert_outcomes(failed=1)
    run(inner, source, "--memprof-disable").assert_outcomes(passed=1)


def test_memprof_client_responses_expose_their_profile(inner: pytest.Pytester) -> None:
    result = run(
        inner,
        """
        from memprof.testing import profile_of

        def test_profile(memprof_client):
            response = memprof_client.get("/items?n=3")
            assert response.status_code == 200 and response.json() == {"n": 3}
            profile = profile_of(response)
            assert profile.checkpoint_names == [
                "request_start", "app_start", "build", "response_start", "response_end", "request_end"
            ]
            assert profile.request["route"] == "/items"
            assert profile.query_count == 3
            assert profile.instances == 3
            assert profile.instances_by_class == {"myapp.Item": 3}
            assert profile.session is None and profile.session_size is None
            assert memprof_client.last is profile
            assert len(memprof_client.profiles) == 1
        """,
    )
    result.assert_outcomes(passed=1)


def test_max_queries_passes_and_fails(inner: pytest.Pytester) -> None:
    result = run(
        inner,
        """
        import pytest

        @pytest.mark.max_queries(5)
        def test_few(memprof_client):
            memprof_client.get("/items?n=5")

        @pytest.mark.max_queries(5)
        def test_many(memprof_client):
            memprof_client.get("/items?n=2")
            memprof_client.get("/items?n=12")
        """,
    )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*max_queries(5): GET /items (route /items, status 200) executed 12 SQL statements*",
            "*12x SELECT plugin_items.id, plugin_items.name*",
        ]
    )
    assert "n=2" not in result.stdout.str()


def test_max_instances_passes_and_fails(inner: pytest.Pytester) -> None:
    result = run(
        inner,
        """
        import pytest

        @pytest.mark.max_instances(10)
        def test_few(memprof_client):
            memprof_client.get("/items?n=10")

        @pytest.mark.max_instances(10)
        def test_many(memprof_client):
            memprof_client.get("/items?n=12")
        """,
    )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        ["*max_instances(10): GET /items*loaded 12 ORM instances*", "*myapp.Item: 12 loaded*"]
    )


def test_max_queries_without_requests_fails_with_an_explanation(inner: pytest.Pytester) -> None:
    result = run(
        inner,
        """
        import pytest

        @pytest.mark.max_queries(3)
        def test_nothing():
            pass
        """,
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*max_queries(3): no request went through memprof_client*"])


def test_app_from_ini_key(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(myapp=APP)
    pytester.makeini("[pytest]\nmemprof_app = myapp:app\n")
    pytester.makeconftest(
        "from memprof import uninstrument_sqlalchemy\n\n\n"
        "def pytest_unconfigure(config):\n    uninstrument_sqlalchemy()\n"
    )
    result = run(
        pytester,
        """
        def test_get(memprof_client):
            assert memprof_client.get("/items?n=1").status_code == 200
            assert memprof_client.last.query_count == 1
        """,
    )
    result.assert_outcomes(passed=1)


def test_missing_app_is_a_clear_failure(pytester: pytest.Pytester) -> None:
    result = run(pytester, "def test_get(memprof_client):\n    pass\n")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*memprof_client needs an app: override the memprof_app fixture*"])


def test_a_failing_test_keeps_its_own_failure(inner: pytest.Pytester) -> None:
    result = run(
        inner,
        """
        import pytest

        @pytest.mark.memory_limit("1 KB")
        def test_fails_itself():
            data = bytearray(100_000)
            assert False, "the test's own assertion"
        """,
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*the test's own assertion*"])


def test_unmarked_tests_are_untouched(inner: pytest.Pytester) -> None:
    result = run(
        inner,
        """
        import tracemalloc

        def test_plain():
            assert not tracemalloc.is_tracing()
        """,
    )
    result.assert_outcomes(passed=1)
    assert "memory_limit" not in result.stdout.str() and "no_memory_growth" not in result.stdout.str()


def test_no_memory_growth_with_the_client_passes_for_a_steady_app_and_fails_for_a_leak(
    inner: pytest.Pytester,
) -> None:
    result = run(
        inner,
        """
        import pytest
        import myapp

        @pytest.mark.max_queries(50)
        @pytest.mark.no_memory_growth(iterations=6, warmup=2)
        def test_steady(memprof_client):
            assert memprof_client.get("/items?n=40").status_code == 200

        @pytest.mark.no_memory_growth(iterations=6, warmup=2)
        def test_leak(memprof_client):
            memprof_client.get("/items?n=1")
            myapp.KEPT.append(bytearray(30_000))

        @pytest.mark.max_queries(50)
        @pytest.mark.no_memory_growth(iterations=3, warmup=2)
        def test_queries_still_checked_after_compaction(memprof_client):
            memprof_client.get("/items?n=60")
            memprof_client.get("/items?n=1")
        """,
    )
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(["PASSED test_inner.py::test_steady"])
    result.stdout.fnmatch_lines(
        [
            "*test_leak*",
            "no_memory_growth: memory kept growing over 6 iterations after 2 warm-up*",
            "*max_queries(50): GET /items (route /items, status 200) executed 60 SQL statements*",
        ]
    )
