"""Every file memprof writes is private (0600) in private directories (0700), the data dir included, and a
failed write leaves no temporary file behind."""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

import memprof
from memprof import MemprofMiddleware
from memprof.files import write_private
from memprof.watchdog.requests import ask_for_dump
from tests._memprof_server import wait_for
from tests.apps import starlette_app
from tests.cli import run_cli


def _modes(root: Path) -> dict[str, int]:
    out = {".": stat.S_IMODE(root.stat().st_mode)}
    for path in root.rglob("*"):
        try:
            out[str(path.relative_to(root))] = stat.S_IMODE(path.stat().st_mode)
        except FileNotFoundError:  # a temporary file renamed away between listing and stat
            continue
    return out


def test_every_file_and_directory_memprof_writes_is_private(
    tmp_path: Path, make_settings: Callable[..., Any]
) -> None:
    top = tmp_path / "srv"  # missing parents are created private too
    data_dir = top / "memprof-data"
    settings = make_settings(
        data_dir=data_dir, watchdog_interval_ms=20, state_interval_s=0.05, control_poll_interval_s=0.05
    )
    mw = MemprofMiddleware(starlette_app(), settings=settings)
    with TestClient(mw) as client:
        for _ in range(5):
            assert client.get("/").status_code == 200
        assert memprof.dump("private") is not None
        ask_for_dump(data_dir, "asked")
        assert wait_for(lambda: len(list((data_dir / "dumps").glob("dump-*asked*.json"))) == 1)
        assert wait_for(lambda: any((data_dir / "status").glob("*.json")))
        assert wait_for(lambda: any((data_dir / "workers").glob("*.json")))
        assert run_cli("enable", "light", "--for", "1m", "--data-dir", str(data_dir)).code == 0
        assert run_cli("disable", "--data-dir", str(data_dir)).code == 0
        assert memprof.flush(10.0)
        modes = _modes(top)
    kinds = {name.split("/")[1].split("-")[0] for name in modes if name.startswith("memprof-data/")}
    assert {"samples", "state", "dumps", "status", "workers", "control.json", "DISABLED"} <= kinds
    assert "dump" in kinds  # the dump request file
    for name, mode in _modes(top).items() | modes.items():  # during the run and after the shutdown
        path = top / name
        expected = 0o700 if path.is_dir() else 0o600
        assert mode == expected, f"{name}: {oct(mode)}"


def test_a_failed_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    target.mkdir()  # renaming a file over a directory fails
    with pytest.raises(OSError):
        write_private(target, b"{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]
    write_private(tmp_path / "ok.json", b"{}")
    assert stat.S_IMODE((tmp_path / "ok.json").stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.json", "out.json"]
