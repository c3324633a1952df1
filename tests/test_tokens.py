"""Targeted mode: signed X-Memprof-Profile tokens through a real app and the `memprof sign` CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from memprof import MemprofConfigError, MemprofMiddleware
from memprof.safety.tokens import MAX_TTL_S, TokenVerifier, path_matches, sign_token
from tests._memprof_server import Server
from tests.apps import starlette_app
from tests.cli import run_cli
from tests.datadir import written_files

SECRET = "targeted-secret-0123456789abcdef"


def targeted(make_settings: Callable[..., Any], **kw: Any) -> MemprofMiddleware:
    return MemprofMiddleware(
        starlette_app(), settings=make_settings(mode="targeted", targeted_secret=SECRET, **kw)
    )


def get(client: TestClient, token: str | None, path: str = "/slow?s=0") -> Any:
    return client.get(path, headers={"X-Memprof-Profile": token} if token is not None else {})


def test_valid_token_profiles_one_request_with_full_detail(
    make_settings: Callable[..., Any], samples: Any, data_dir: Path
) -> None:
    mw = targeted(make_settings)
    token = sign_token(SECRET, ttl=60, path="/slow")
    with TestClient(mw) as client:
        assert get(client, None).json()["request_id"] is None
        rid = get(client, token).json()["request_id"]
        assert rid is not None
        assert get(client, token).json()["request_id"] is None  # replayed
    (rec,) = samples()
    assert rec["request"]["id"] == rid and rec["mode"] == "targeted" and rec["detail"] == "full"
    counts = mw.runtime.verifier.counts  # type: ignore[union-attr]
    assert counts["accepted"] == 1 and counts["replayed"] == 1 and counts["missing"] == 1
    for content in written_files(data_dir).values():
        assert token.encode() not in content  # the header is never stored


def test_bad_tokens_leave_the_response_unchanged_and_are_counted_by_reason(
    make_settings: Callable[..., Any], samples: Any
) -> None:
    mw = targeted(make_settings)
    now = time.time()
    good = sign_token(SECRET, ttl=60)
    head, sig = good.rsplit(".", 1)
    bad: dict[str, str | bytes] = {
        "forged": head + "." + ("A" if sig[0] != "A" else "B") + sig[1:],
        "forged_other_key": sign_token("another-secret-0123456789", ttl=60),
        "expired": sign_token(SECRET, ttl=10, now=now - 100),
        "ttl_too_long": sign_token(SECRET, ttl=MAX_TTL_S, now=now + 2 * 86400),
        "path": sign_token(SECRET, ttl=60, path="/admin"),
        "malformed": "not-a-token",
        "bad_version": "v9" + good[2:],
        "garbage": "\u00e9".encode("latin-1") * 3,
    }
    with TestClient(mw) as client:
        plain = client.get("/users/1")
        for token in bad.values():
            r = client.get("/users/1", headers={"X-Memprof-Profile": token})
            assert (r.status_code, r.content, r.headers.get("content-type")) == (
                plain.status_code,
                plain.content,
                plain.headers.get("content-type"),
            )
    assert samples() == []
    counts = dict(mw.runtime.verifier.counts)  # type: ignore[union-attr]
    assert counts == {
        "missing": 1,
        "forged": 2,
        "expired": 1,
        "ttl_too_long": 1,
        "path": 1,
        "malformed": 2,
        "bad_version": 1,
    }


def test_clock_skew_is_bounded() -> None:
    v = TokenVerifier(SECRET, max_skew_s=30)
    now = time.time()
    assert v.check(sign_token(SECRET, ttl=10, now=now - 30), "/", now=now)  # expired 20 s ago: skew
    assert not v.check(sign_token(SECRET, ttl=10, now=now - 50), "/", now=now)  # 40 s ago: refused
    assert v.counts["expired"] == 1


def test_rate_limit_and_bounded_replay_cache() -> None:
    v = TokenVerifier(SECRET, rate_per_s=1.0)  # bursts of 2
    results = [v.check(sign_token(SECRET, ttl=60), "/") for _ in range(4)]
    assert results == [True, True, False, False] and v.counts["rate_limited"] == 2

    small = TokenVerifier(SECRET, rate_per_s=1000, cache_size=5)
    now = time.time()
    assert all(small.check(sign_token(SECRET, ttl=5, now=now), "/", now=now) for _ in range(5))
    assert not small.check(sign_token(SECRET, ttl=60, now=now), "/", now=now)
    assert small.counts["replay_cache_full"] == 1 and small.cached_nonces == 5
    later = now + 60  # the five nonces have expired (with skew): they make room
    assert small.check(sign_token(SECRET, ttl=60, now=later), "/", now=later)
    assert small.cached_nonces == 1


def test_targeted_mode_without_a_secret_is_refused_at_start_up(make_settings: Callable[..., Any]) -> None:
    with pytest.raises(MemprofConfigError, match="MEMPROF_TARGETED_SECRET"):
        MemprofMiddleware(starlette_app(), settings=make_settings(mode="targeted"))
    with pytest.raises(MemprofConfigError, match="MEMPROF_TARGETED_SECRET is not valid") as info:
        make_settings(mode="targeted", targeted_secret="short-secret")
    assert "short-secret" not in str(info.value)  # the message never echoes a secret


def test_sign_cli_prints_the_bare_header_value(
    make_settings: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEMPROF_TARGETED_SECRET", SECRET)
    result = run_cli("sign", "--ttl", "120", "--path", "/users")
    assert result.code == 0 and result.stderr == "", result
    token = result.stdout.strip()
    assert "\n" not in token and token.startswith("v1.")
    mw = targeted(make_settings)
    with TestClient(mw) as client:
        assert get(client, token, "/users/5").status_code == 200
    assert mw.runtime.verifier.counts["accepted"] == 1  # type: ignore[union-attr]


def test_sign_cli_errors_are_one_clear_sentence(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMPROF_")}
    cmd = [sys.executable, "-c", "from memprof.cli import main; main()", "sign"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip() == (
        "memprof: MEMPROF_TARGETED_SECRET is not set: export the same secret the workers use"
    )
    env["MEMPROF_TARGETED_SECRET"] = SECRET
    r = subprocess.run([*cmd, "--ttl", "0"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "TTL must be between 1 and 86400" in r.stderr
    r = subprocess.run([*cmd, "--path", "/x"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.count(".") == 4


@pytest.mark.parametrize(
    ("prefix", "path", "matches"),
    [
        ("/x", "/x", True),
        ("/x", "/x/y", True),
        ("/x/", "/x", True),
        ("/x/", "/x/y", True),
        ("/x", "/xyz", False),
        ("/reports", "/reports-admin", False),
        ("/reports", "/reports/2024", True),
        ("/", "/anything", True),
        ("/x/y", "/x", False),
    ],
)
def test_a_token_covers_its_path_and_what_is_under_it_by_whole_segments(
    prefix: str, path: str, matches: bool
) -> None:
    assert path_matches(path, prefix) is matches
    verifier = TokenVerifier(SECRET)
    assert verifier.check(sign_token(SECRET, ttl=60, path=prefix), path) is matches
    assert verifier.counts["path"] == (0 if matches else 1)


def test_a_token_for_x_does_not_profile_xyz_under_uvicorn(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = Server(tmp_path / "app", data_dir, MEMPROF_MODE="targeted", MEMPROF_TARGETED_SECRET=SECRET)

    def send(path: str, prefix: str) -> None:
        token = sign_token(SECRET, ttl=60, path=prefix)
        httpx.get(f"{server.url}{path}", headers={"X-Memprof-Profile": token}, timeout=10).raise_for_status()

    try:
        send("/echo/x", "/echo/x")
        send("/echo/xyz", "/echo/x")
        send("/echo/abc", "/echo")
        send("/slow/0", "/slow/0")
        send("/slow/01", "/slow/0")
    finally:
        server.stop()
    paths = [
        json.loads(line)["request"]["path"]
        for p in data_dir.glob("samples-*.jsonl")
        for line in p.read_text().splitlines()
    ]
    assert sorted(paths) == ["/echo/abc", "/echo/x", "/slow/0"]  # never /echo/xyz nor /slow/01
