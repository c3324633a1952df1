"""Imports stay lazy: what a fresh interpreter has loaded after ``import memprof``, after pytest started with
the plugin, and after ``memprof --help`` or ``memprof analyze`` (module lists, never timings)."""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import memprof
from memprof.analysis.synthetic import T0, sample, write_jsonl

# The app stack: what a process that only imports memprof, runs its pytest plugin or analyzes records
# must not load.
APP_STACK = ("sqlalchemy", "starlette", "fastapi", "httpx", "pydantic", "pydantic_settings", "structlog")
RUNTIME = ("memprof.runtime", "memprof.middleware", "memprof.settings", "memprof.integrations.sqlalchemy")
PRINT_MODULES = "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"


def _modules_after(code: str, cwd: Path | None = None) -> set[str]:
    """The modules a fresh interpreter has loaded after running ``code`` (its last line of output)."""
    out = subprocess.run(
        [sys.executable, "-c", code + PRINT_MODULES], capture_output=True, text=True, check=True, cwd=cwd
    ).stdout
    return set(json.loads(out.splitlines()[-1]))


def _heavy(modules: set[str], allowed: tuple[str, ...] = ()) -> list[str]:
    tops = {m.split(".")[0] for m in modules}
    return sorted({*(tops & set(APP_STACK)), *(modules & set(RUNTIME))} - set(allowed))


def test_import_memprof_loads_nothing_else() -> None:
    modules = _modules_after("import memprof")
    assert _heavy(modules) == []
    assert sorted(m for m in modules if m.startswith("memprof")) == ["memprof"]


def test_the_public_surface_is_exactly_this() -> None:
    assert memprof.__all__ == [
        "MemprofConfigError",
        "MemprofMiddleware",
        "MemprofSettings",
        "Mode",
        "RequestProfile",
        "__version__",
        "checkpoint",
        "current_profile",
        "dump",
        "flush",
        "instrument_sqlalchemy",
        "load_settings",
        "register_session_provider",
        "register_state",
        "uninstrument_sqlalchemy",
    ]


def test_every_public_name_resolves_on_first_use_to_what_its_module_defines() -> None:
    modules = _modules_after("from memprof import *")
    assert {"sqlalchemy", "memprof.runtime", "memprof.middleware"} <= modules
    for name, module in memprof._MODULES.items():
        assert getattr(memprof, name) is getattr(importlib.import_module(module), name), name
        assert name in dir(memprof)
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        memprof.nonexistent  # type: ignore[attr-defined]  # noqa: B018


def test_memprof_dump_is_the_function_whatever_is_imported_first() -> None:
    code = (
        "import memprof.watchdog.dump, memprof\nprint(type(memprof.dump).__name__, memprof.dump.__module__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["function", "memprof.watchdog.dump"]


def test_the_pytest_plugin_loads_nothing_of_the_app_stack(tmp_path: Path) -> None:
    assert _heavy(_modules_after("import memprof.testing.plugin")) == []
    # The same in a real pytest run, up to a test using a marker (which needs no more than tracemalloc).
    (tmp_path / "test_trivial.py").write_text(
        textwrap.dedent(
            """
            import json, sys
            import pytest

            @pytest.mark.memory_limit("50 MB")
            def test_modules(request):
                assert request.config.pluginmanager.hasplugin("memprof")
                print("MODULES", json.dumps(sorted(sys.modules)))
            """
        )
    )
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout
    line = next(line for line in out.splitlines() if line.startswith("MODULES"))
    modules = set(json.loads(line.removeprefix("MODULES ")))
    assert "memprof.testing._measure" in modules
    assert _heavy(modules) == []


def test_a_memprof_fixture_imports_the_runtime_when_used(tmp_path: Path) -> None:
    (tmp_path / "test_fixture.py").write_text(
        "import sys\n\n"
        "def test_settings(memprof_settings):\n"
        "    assert memprof_settings.mode == 'aggressive'\n"
        "    assert 'pydantic_settings' in sys.modules\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _cli(*args: str) -> str:
    return f"import sys\nfrom memprof.cli import main\nsys.argv = ['memprof', *{args!r}]\ntry:\n    main()\nexcept SystemExit:\n    pass"


def test_memprof_help_loads_no_command_s_dependencies() -> None:
    modules = _modules_after(_cli("--help"))
    assert _heavy(modules) == []
    loaded = [
        m for m in modules if m.startswith(("memprof.analysis", "memprof.safety.control", "memprof.watchdog"))
    ]
    assert loaded == []
    assert "psutil" not in modules


def test_memprof_analyze_loads_the_analyzer_only(tmp_path: Path) -> None:
    data = tmp_path / "memprof-data"
    write_jsonl(data / "samples-1.jsonl", [sample(t=T0 + i) for i in range(3)])
    modules = _modules_after(_cli("analyze", str(data)), cwd=tmp_path)
    assert "memprof.analysis.analyze" in modules
    # typer itself imports pydantic to convert a command's parameters; memprof's models are not loaded.
    assert _heavy(modules, allowed=("pydantic",)) == []
    assert "memprof.records.models" not in modules


def test_type_checkers_see_every_lazy_name_where_it_is_imported_from() -> None:
    """The ``if TYPE_CHECKING:`` imports of memprof/__init__.py (what mypy sees) match the lazy table."""
    tree = ast.parse(Path(memprof.__file__).read_text())
    block = next(n for n in tree.body if isinstance(n, ast.If) and ast.unparse(n.test) == "TYPE_CHECKING")
    seen = {
        alias.name: node.module
        for node in block.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
        if alias.asname == alias.name  # "import X as X": re-exported under mypy --strict
    }
    assert seen == memprof._MODULES
    assert set(memprof.__all__) == {*seen, "__version__"}


def test_the_built_in_session_analysis_needs_no_import_of_its_own(tmp_path: Path) -> None:
    """Lazy imports must not lose a hook: a fresh process that only imports the middleware analyzes the
    session of a Starlette app (the integration registers itself when the middleware is imported)."""
    code = textwrap.dedent(
        f"""
        from starlette.applications import Starlette
        from starlette.middleware import Middleware
        from starlette.middleware.sessions import SessionMiddleware
        from starlette.responses import PlainTextResponse
        from starlette.routing import Route
        from starlette.testclient import TestClient

        import memprof
        from memprof import MemprofMiddleware

        async def fill(request):
            request.session["cart"] = "x" * 5000
            return PlainTextResponse("ok")

        app = Starlette(routes=[Route("/", fill)], middleware=[Middleware(SessionMiddleware, secret_key="k" * 32)])
        settings = memprof.load_settings(mode="aggressive", data_dir={str(tmp_path)!r}, watchdog_interval_ms=0)
        with TestClient(MemprofMiddleware(app, settings=settings)) as client:
            assert client.get("/").text == "ok"
        memprof.flush()
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    (path,) = tmp_path.glob("samples-*.jsonl")
    (record,) = [json.loads(line) for line in path.read_text().splitlines()]
    assert record["session"]["largest"][0]["key"] == "cart" and record["session"]["size"] > 5000


def test_the_middleware_never_loads_the_analysis_engine() -> None:
    """DuckDB is the analyzer's engine only: a worker that imports the middleware (and its runtime) does not
    load it, nor any module of memprof.analysis."""
    modules = _modules_after(
        "import memprof.middleware, memprof.runtime, memprof.watchdog\nfrom memprof import *"
    )
    assert "duckdb" not in {m.split(".")[0] for m in modules}
    assert not any(m.startswith("memprof.analysis") for m in modules)


def test_memprof_analyze_loads_duckdb() -> None:
    modules = _modules_after("import memprof.analysis.analyze")
    assert "duckdb" in modules
