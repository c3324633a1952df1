"""Secrets in URL paths: a JWT or a long hex id in a path reaches no record, dump, flight file, status or
log line, while the route template (or the rest of a raw path) stays readable. Redaction keeps file
paths and identifiers readable."""

from __future__ import annotations

import json
import secrets
import threading
import uuid
from pathlib import Path

import httpx
import pytest

from memprof.safety.redaction import redact_method, redact_path, redact_text
from tests._memprof_server import Server, wait_for
from tests.cli import run_cli

JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIn0."
    "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)


def everything_written(data_dir: Path) -> str:
    return "\n".join(p.read_bytes().decode(errors="replace") for p in data_dir.rglob("*") if p.is_file())


def hold_while(server: Server, path: str, check: object) -> None:
    """Run ``GET path`` (held in flight by the app) in a thread while ``check()`` runs."""
    done = threading.Thread(target=lambda: httpx.get(f"{server.url}{path}", timeout=30))
    done.start()
    try:
        check()  # type: ignore[operator]
    finally:
        done.join(30)


def flight_file_holds(data_dir: Path, text: str) -> str:
    files = list((data_dir / "workers").glob("*.json"))
    content = "".join(p.read_text() for p in files)
    return content if text in content else ""


def test_no_secret_from_a_path_reaches_records_dumps_flight_files_or_logs(tmp_path: Path) -> None:
    hex_id = secrets.token_hex(20)
    data_dir = tmp_path / "data"
    server = Server(tmp_path / "app", data_dir, MEMPROF_LOG_EVENTS="true", APP_LOG_JSON="1")
    flight: list[str] = []

    def while_held() -> None:
        flight.append(wait_for(lambda: flight_file_holds(data_dir, "/echo/[REDACTED]")))
        assert run_cli("dump", str(data_dir)).code == 0

    try:
        server.get(f"/echo/{JWT}")
        server.get(f"/echo/{hex_id}")
        server.get(f"/echo/{uuid.uuid4()}")
        hold_while(server, f"/echo/{JWT}?hold=2", while_held)
    finally:
        server.stop()
    samples = [
        json.loads(line) for p in data_dir.glob("samples-*.jsonl") for line in p.read_text().splitlines()
    ]
    echoes = [s["request"] for s in samples if s["request"]["route"] == "/echo/{token}"]
    assert [r["path"] for r in echoes] == ["/echo/[REDACTED]"] * 4
    (dump_file,) = (data_dir / "dumps").glob("dump-*-manual.json")
    dump = json.loads(dump_file.read_text())
    assert [r["path"] for r in dump["inflight"] if r["route"] == "/echo/{token}"] == ["/echo/[REDACTED]"]
    assert '"route":"/echo/{token}"' in flight[0]
    logs = server.output()
    assert "memprof.request.completed" in logs and "/echo/[REDACTED]" in logs  # the events were logged
    for secret in (JWT, hex_id, JWT.split(".")[2]):
        assert secret not in everything_written(data_dir)
        assert secret not in logs


def test_a_raw_path_without_a_route_template_is_redacted_segment_by_segment(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    # Light mode at half the requests: the held one may be profiled or not; both kinds are in flight files.
    server = Server(
        tmp_path / "app", data_dir, app="app_raw:app", MEMPROF_MODE="light", MEMPROF_SAMPLE_RATE="0.5"
    )
    seen: list[str] = []
    try:
        for _ in range(10):
            server.get(f"/reset/{JWT}/confirm")
        for _ in range(2):
            hold_while(
                server,
                f"/reset/{JWT}/confirm?hold",
                lambda: seen.append(
                    wait_for(lambda: flight_file_holds(data_dir, "/reset/[REDACTED]/confirm"))
                ),
            )
    finally:
        server.stop()
    requests = [
        json.loads(line)["request"]
        for p in data_dir.glob("samples-*.jsonl")
        for line in p.read_text().splitlines()
    ]
    requests = [r for r in requests if r["path"] != "/rss"]  # the server's readiness probe, sampled or not
    assert requests and {(r["path"], r["route"]) for r in requests} == {("/reset/[REDACTED]/confirm",) * 2}
    assert JWT not in everything_written(data_dir) and JWT not in "".join(seen) and JWT not in server.output()


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (f"/reset/{JWT}", "/reset/[REDACTED]"),
        ("/files/0123456789abcdef0123456789abcdef01234567/raw", "/files/[REDACTED]/raw"),
        ("/orders/4ff906cf-7813-4209-9c8b-69a5b761c986", "/orders/[REDACTED]"),
        ("/r/Xk9_aB3-qLm2ZpR7tYw1vNc8", "/r/[REDACTED]"),  # a base64url token (secrets.token_urlsafe)
        ("/users/john.doe@example.com/profile", "/users/[REDACTED]/profile"),
        ("/proxy/admin:s3cret@internal/x", "/proxy/[REDACTED]@internal/x"),
        ("/x/session=abc123", "/x/[REDACTED]"),
        # Readable things stay readable.
        ("/customers/123/orders", "/customers/123/orders"),
        ("/users/{user_id}/orders/{order_id}", "/users/{user_id}/orders/{order_id}"),
        ("/how-to-configure-your-database-in-2024", "/how-to-configure-your-database-in-2024"),
        ("/reports/2024-11/quarterly_summary_final", "/reports/2024-11/quarterly_summary_final"),
        ("/api/v1/items", "/api/v1/items"),
    ],
)
def test_redact_path(path: str, expected: str) -> None:
    assert redact_path(path) == expected


def test_file_paths_in_messages_stay_readable() -> None:
    for message in (
        "Permission denied: '/srv/app/memprof-data/samples-20261204T101010-ip-10-0-3-17.ec2.internal-1234-0001.jsonl'",
        "No space left on device: '/var/lib/memprof/dumps/.dump-20261204T101010123456-1234-threshold.json.77.88.tmp'",
        "[Errno 20] Not a directory: '/tmp/pytest-of-root/pytest-3/test_flight0/data/workers/api-7f9c8d6b5-x2kqp-17.json'",
    ):
        assert redact_text(message, 1000) == message
    assert redact_text(f"failed for /reset/{JWT} at /srv/app/x.json", 1000) == (
        "failed for /reset/[REDACTED] at /srv/app/x.json"
    )


def test_only_standard_methods_are_kept_as_sent() -> None:
    assert redact_method("GET") == "GET"
    assert redact_method(JWT) == "[REDACTED]"
    assert len(redact_method("X" * 100)) <= 35
