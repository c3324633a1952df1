"""memprof's own footprint under an address-space limit (``prlimit --as``), with real uvicorn workers.

Each thread a process starts gets a glibc malloc arena (64 MiB of address space) and a stack: memprof
runs one background thread with a 2 MiB stack. An allocation that worked without memprof must still work
with it, within that thread's arena (absent with ``MALLOC_ARENA_MAX=1``), its stack and memprof's imports.
Figures and the benchmark: docs/performance.md, "Footprint".
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.footprint import APP, Worker

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(180),
    pytest.mark.skipif(not sys.platform.startswith("linux") or not shutil.which("prlimit"), reason="Linux"),
]

LIMIT_MIB = 800
IMPORTS_MIB = 16  # memprof's imports and its thread's stack
ARENA_MIB = 64  # one glibc arena on 64-bit Linux


@pytest.fixture(scope="module")
def app_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="memprof-footprint-app-"))
    (path / "footprint_app.py").write_text(APP)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _env(tmp_path: Path, memprof: bool, arena_max: str | None) -> dict[str, str]:
    env = {**os.environ, "FOOTPRINT_MEMPROF": "1" if memprof else "0", "MEMPROF_DATA_DIR": str(tmp_path)}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
    env.pop("MEMPROF_RAISE_INTERNAL_ERRORS", None)
    env.pop("MALLOC_ARENA_MAX", None)
    if arena_max is not None:
        env["MALLOC_ARENA_MAX"] = arena_max
    return env


@pytest.fixture(scope="module")
def headroom(app_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> int:
    """What the app alone can still map under the limit (one thread: MALLOC_ARENA_MAX changes nothing)."""
    bare = Worker(app_dir, _env(tmp_path_factory.mktemp("bare"), False, None), LIMIT_MIB)
    try:
        bare.warm(50)
        room = LIMIT_MIB - bare.status()["VmSize"] // 1024
        assert bare.allocates(room - 4)
    finally:
        bare.stop()
    return room


@pytest.mark.parametrize(
    ("arena_max", "allowance_mib"),
    [("1", IMPORTS_MIB), (None, ARENA_MIB + IMPORTS_MIB)],
    ids=["MALLOC_ARENA_MAX=1", "glibc-default"],
)
def test_an_app_under_an_address_space_limit_keeps_its_allocations(
    app_dir: Path, headroom: int, tmp_path: Path, arena_max: str | None, allowance_mib: int
) -> None:
    profiled = Worker(app_dir, _env(tmp_path, True, arena_max), LIMIT_MIB)
    try:
        profiled.warm(50)
        assert profiled.status()["Threads"] == 2, "the app's thread and memprof's one background thread"
        assert profiled.allocates(headroom - allowance_mib)  # before: three threads took ~225 MiB
    finally:
        profiled.stop()
