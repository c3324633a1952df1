"""Shared fixtures: settings in a temporary data dir, real Starlette and FastAPI apps, and a guard that
fails any test in which memprof swallowed an internal error."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# `import memprof` loads nothing (its names are imported on first use), and pytester's in-process runs
# (test_plugin, test_reproduce_docs) drop the modules first imported during a run when it ends. The app
# stack is imported here, once, so that every inner run shares one copy of it: one SQLAlchemy, one runtime.
import memprof
import memprof.integrations.sqlalchemy
import memprof.testing.client
from memprof.background import _timeouts_logged
from memprof.safety.isolation import errors as internal_errors
from memprof.settings import MemprofSettings

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(autouse=True)
def _no_swallowed_internal_errors(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test when memprof swallowed one of its own errors (like sentry-python's suite does)."""
    internal_errors.reset()
    _timeouts_logged.clear()  # each bounded wait given up is logged once per process: once per test here
    yield
    if request.node.get_closest_marker("internal_errors_expected"):
        return
    assert internal_errors.total == 0, f"memprof swallowed internal errors: {dict(internal_errors.counts)}"


@pytest.fixture(autouse=True)
def _no_leftover_opentelemetry() -> Iterator[None]:
    """A test (or a README snippet) that instrumented OpenTelemetry does not leak it into the next."""
    yield
    from memprof.integrations.opentelemetry import is_instrumented, uninstrument_opentelemetry

    if is_instrumented():
        uninstrument_opentelemetry()


@pytest.fixture(autouse=True)
def _no_leftover_sqlalchemy_listeners() -> Iterator[None]:
    """The middleware instruments SQLAlchemy by itself (MEMPROF_SQLALCHEMY=auto): its listeners do not
    outlive the test that added them."""
    yield
    memprof.integrations.sqlalchemy.uninstrument_sqlalchemy()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "internal_errors_expected: memprof errors are provoked on purpose")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "memprof-data"


@pytest.fixture
def make_settings(data_dir: Path) -> Callable[..., MemprofSettings]:
    def factory(**overrides: Any) -> MemprofSettings:
        overrides.setdefault("data_dir", data_dir)
        overrides.setdefault("mode", "aggressive")
        overrides.setdefault("log_events", False)
        return memprof.load_settings(**overrides)

    return factory


def read_samples(data_dir: Path) -> list[dict[str, Any]]:
    """Every sample record written to ``data_dir``, after flushing the writers."""
    assert memprof.flush(10.0)
    out: list[dict[str, Any]] = []
    for path in sorted(data_dir.glob("samples-*.jsonl")):
        out.extend(json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return out


@pytest.fixture
def samples(data_dir: Path) -> Callable[[], list[dict[str, Any]]]:
    return lambda: read_samples(data_dir)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs: a real file system that fills up and can be remounted read-only."""
    mount = tmp_path / "mnt"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        if IN_CI:
            pytest.fail(f"cannot mount a tmpfs in CI: {done.stderr.decode()}")
        pytest.skip(f"mounting a tmpfs is not permitted here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(directory: Path) -> Path:
    """Write a file until the file system is full; return it."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"x" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    return filler
