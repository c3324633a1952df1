"""What redacting the request's path costs per record, in the writer thread (never on the request path).

    .venv/bin/python -m benchmarks.bench_redaction [--rounds 15] [--records 5000]

For each kind of path, the pair: ``Runtime.build_record`` of a finished profile as memprof runs it
(``redacted``) against the same with the path left as it is (``base``: ``redact_path`` and
``redact_method`` replaced by the identity), interleaved in rounds; the figure is the median over rounds
of the CPU time per record (``time.thread_time_ns``), the cost the median of the per-round differences.
``redact_path`` alone is timed too. Paths: a short route, a typical REST path with a numeric id, one with
a UUID, and one carrying a JWT (the case redaction exists for).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from memprof import load_settings
from memprof import runtime as runtime_module
from memprof.profile import RequestProfile
from memprof.runtime import Runtime
from memprof.safety.redaction import redact_method, redact_path

JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIn0."
    "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
PATHS = {
    "short route": "/health",
    "REST, numeric id": "/api/v1/customers/4812/invoices",
    "REST, UUID": "/api/v1/orders/4ff906cf-7813-4209-9c8b-69a5b761c986/items",
    "JWT in the path": f"/auth/reset/{JWT}",
}


def _identity(value: str, *_: Any) -> str:
    return value


def _profile(path: str) -> RequestProfile:
    profile = RequestProfile("GET", path, load_settings().mode, False)
    profile.route = None  # no template: the record's route is the (redacted) path too
    profile.checkpoints.append(("request_end", 1000, 0, None))
    profile.finished = True
    return profile


def _per_record(build: Callable[[RequestProfile], Any], profile: RequestProfile, n: int) -> float:
    t0 = time.thread_time_ns()
    for _ in range(n):
        build(profile)
    return (time.thread_time_ns() - t0) / n / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--records", type=int, default=5000)
    args = parser.parse_args()
    runtime = Runtime(load_settings(data_dir=Path(tempfile.mkdtemp()), enabled=True))
    print("| path | redact_path µs | build_record base µs | redacted µs | cost per record µs |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for kind, path in PATHS.items():
        profile = _profile(path)
        base, redacted, costs, alone = [], [], [], []
        for _ in range(args.rounds):
            runtime_module.redact_path, runtime_module.redact_method = _identity, _identity  # type: ignore[assignment]
            b = _per_record(runtime.build_record, profile, args.records)
            runtime_module.redact_path, runtime_module.redact_method = redact_path, redact_method
            r = _per_record(runtime.build_record, profile, args.records)
            a = _per_record(lambda p: redact_path(p.path), profile, args.records)
            base.append(b)
            redacted.append(r)
            costs.append(r - b)
            alone.append(a)
        print(
            f"| {kind} | {statistics.median(alone):.2f} | {statistics.median(base):.2f} | "
            f"{statistics.median(redacted):.2f} | {statistics.median(costs):+.2f} |"
        )
    runtime.close()


if __name__ == "__main__":
    main()
