"""``memprof reproduce`` through main() (exit code, stdout, stderr), on the apps of tests/test_reproduce.py."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.cli import run_cli
from tests.conftest import read_samples

APP = "tests.test_reproduce:perm_app"


def invoke(*args: str) -> tuple[int, str, str]:
    """``memprof reproduce ARGS`` through main(): exit code, stdout, stderr."""
    result = run_cli("reproduce", *args)
    print(result)
    return result.code, result.stdout, result.stderr


def test_json_names_the_parameter_memory_follows(data_dir: Path) -> None:
    code, out, exc = invoke(
        APP,
        "--request",
        "GET /dashboard",
        "--param",
        "permissions=0,20,40,80",
        "--setup",
        "tests.test_reproduce:set_named",
        "--session",
        "--runs",
        "3",
        "--json",
        "--data-dir",
        str(data_dir),
    )
    assert code == 0, exc
    data = json.loads(out)
    assert data["samples_dir"] == str(data_dir)
    # The profiled requests' records were kept: priming and measured requests of 4 variants x 2 runs.
    assert len(read_samples(data_dir)) >= 5 * 3 * 2
    assert data["request"] == "GET /dashboard"
    assert data["explained_by"] == "permissions"
    assert data["effects"]["permissions"]["slope"] == pytest.approx(20_000, rel=0.2)
    assert data["effects"]["permissions"]["r2"] > 0.98
    assert [v["label"] for v in data["variants"]] == [
        "baseline",
        "permissions=20",
        "permissions=40",
        "permissions=80",
        "session=existing",
    ]
    # the summary line states the same slope (20,000 B = 19.5 KB per permission, within the 20% above)
    match = re.match(
        r"memory follows permissions: \+(\d+\.\d) KB per unit of permissions, R² ", data["summary"][0]
    )
    assert match is not None, data["summary"][0]
    assert float(match.group(1)) == pytest.approx(19.5, rel=0.2)


def test_table_with_every_kind_of_variation() -> None:
    code, out, exc = invoke(
        APP,
        "-r",
        "GET /dashboard",
        "--cache",
        "--cache-clear",
        "tests.test_reproduce:clear_cache",
        "--clock",
        "0,12",
        "--set-clock",
        "tests.test_reproduce:set_hour",
        "--session-sizes",
        "0,2000",
        "--session-fill",
        "tests.test_reproduce:fill",
        "--repeats",
        "3",
        "--runs",
        "1",
        "-H",
        "X-Test: 1",
    )
    assert code == 0, exc
    assert "memprof reproduce: GET /dashboard" in out
    for label in ("baseline", "cache=cold", "cache=cleared", "clock=12", "session_bytes=2000"):
        assert label in out
    assert "growth/request" in out
    assert "no variable explains memory" in out
    assert "cache: peaks differ by" in out
    assert "repeated requests:" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--request", "/dashboard"], "'/dashboard' is not a request: expected METHOD /path"),
        (["--request", "GET /x", "--param", "permissions=1,2"], "--param needs --setup MODULE:FUNCTION"),
        (
            ["--request", "GET /x", "--param", "n=1", "--setup", "tests.test_reproduce:set_named"],
            "needs at least two values",
        ),
        (["--request", "GET /x", "--cache"], "--cache needs --cache-clear MODULE:FUNCTION"),
        (
            ["--request", "GET /x", "--clock", "1,2", "--set-clock", "tests.nope:f"],
            "cannot import 'tests.nope'",
        ),
        (["--request", "GET /x", "-H", "novalue"], "--header 'novalue' is not a header"),
    ],
)
def test_bad_input_is_one_clear_error(args: list[str], message: str) -> None:
    code, out, err = invoke(APP, *args)
    assert code == 2 and out == ""
    assert err.startswith("memprof: ") and message in err and err.count("\n") == 1


def test_bad_app_is_one_clear_error() -> None:
    code, out, err = invoke("tests.test_reproduce:nothing", "--request", "GET /")
    assert code == 2 and out == ""
    assert err.startswith("memprof: ") and "has no attribute 'nothing'" in err
