"""The docs stay true: every Python snippet in README.md and docs/ runs, every `memprof` command and
`make` target they show exists, and every MEMPROF_ variable they name is a real setting (and back)."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from memprof.cli import app as cli_app
from memprof.runtime import runtimes
from memprof.settings import MemprofSettings

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
NOT_RUN = "# doc: not run"
# Variables that are not settings: the env-file pointer, the test switch, the test servers.
EXTRA_VARS = {
    "MEMPROF_ENV_FILE",
    "MEMPROF_RAISE_INTERNAL_ERRORS",
    "MEMPROF_TEST_POSTGRES_URL",
    "MEMPROF_TEST_REDIS_URL",
}


def _blocks(lang: str) -> list[tuple[str, int, str]]:
    out = []
    for path in DOCS:
        text = path.read_text()
        for m in FENCE.finditer(text):
            if m.group(1) == lang:
                out.append((path.relative_to(ROOT).as_posix(), text[: m.start()].count("\n") + 1, m.group(2)))
    return out


def _namespace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A real module (SQLAlchemy resolves annotations through sys.modules) with an app and an engine."""
    from fastapi import FastAPI
    from sqlalchemy import create_engine

    module = types.ModuleType("doc_snippet")
    monkeypatch.setitem(sys.modules, "doc_snippet", module)
    module.__dict__.update(app=FastAPI(), engine=create_engine(f"sqlite:///{tmp_path / 'doc.db'}"))
    return module.__dict__


DOCS_WITH_PYTHON = sorted({doc for doc, _line, _code in _blocks("python")})


@pytest.mark.parametrize("doc", DOCS_WITH_PYTHON)
def test_python_snippets_run(doc: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A document's snippets run in order in one namespace, like a reader would type them."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MEMPROF_DATA_DIR", str(tmp_path / "memprof-data"))
    namespace = _namespace(tmp_path, monkeypatch)
    before = {id(r) for r in runtimes()}
    try:
        for path, line, code in _blocks("python"):
            if path != doc:
                continue
            compiled = compile(code, f"{doc}:{line}", "exec")
            if not code.lstrip().startswith(NOT_RUN):
                exec(compiled, namespace)
    finally:
        # The snippets' middlewares are closed with the test: memprof.dump() writes through the latest
        # live runtime, and a later test's dump then went to a snippet's relative data dir
        # (./memprof-aggressive), resolved against the repository (20 dumps were committed from there).
        for runtime in runtimes():
            if id(runtime) not in before:
                runtime.close(timeout=1.0)


def _commands() -> set[tuple[str, ...]]:
    found: set[tuple[str, ...]] = set()
    for _doc, _line, code in _blocks("bash") + _blocks("sh") + _blocks(""):
        for raw in code.splitlines():
            for part in re.split(r"\||&&|\$\(", raw):
                words = part.strip().split()
                if words[:1] == ["memprof"] and len(words) > 1 and not words[1].startswith("-"):
                    found.add((words[1],))
    for path in DOCS:  # inline code too: `memprof analyze -`
        found.update((word,) for word in re.findall(r"`memprof ([a-z][a-z-]*)", path.read_text()))
    return found


@pytest.mark.parametrize("command", sorted(_commands()))
def test_documented_command_exists(command: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli_app, [*command, "--help"])
    assert result.exit_code == 0, result.output


def test_documented_make_targets_exist() -> None:
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([\w-]+):", makefile, re.M))
    for _doc, _line, code in _blocks("bash"):
        for target in re.findall(r"^\s*make ([\w-]+)", code, re.M):
            assert target in targets, f"make {target} is documented but not in the Makefile"


def test_documented_variables_are_settings_and_back() -> None:
    settings = {f"MEMPROF_{name.upper()}" for name in MemprofSettings.model_fields}
    for path in DOCS:
        for var in set(re.findall(r"MEMPROF_[A-Z0-9_]+[A-Z0-9]", path.read_text())):
            assert var in settings | EXTRA_VARS, f"{path.name} names {var}, which is not a setting"
    guide = (ROOT / "docs" / "guide.md").read_text()
    for var in settings:
        assert f"| {var} |" in guide, f"{var} is missing from the generated settings table of docs/guide.md"


def test_the_readme_is_short_and_starts_a_newcomer_on_pip_install() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    assert readme.index("pip install memprof") < readme.index("MemprofMiddleware")


def test_generated_references_in_the_docs_are_current() -> None:
    from memprof._docs_reference import BLOCKS, FILES, render

    assert sorted(name for names in FILES.values() for name in names) == sorted(BLOCKS)
    for path, names in FILES.items():
        text = path.read_text()
        for name in names:
            assert f"<!-- {name}:start -->" in text, f"{path.name} has no generated {name} block"
        assert text == render(text), f"docs/{path.name} is stale: run python -m memprof._docs_reference"


def test_relative_links_lead_to_files() -> None:
    for path in [*DOCS, ROOT / "CHANGELOG.md"]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text()):
            if not target.startswith(("http://", "https://", "mailto:")):
                assert (path.parent / target).exists(), f"{path.name} links to {target}, which does not exist"
