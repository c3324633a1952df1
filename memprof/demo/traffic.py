"""Bounded demo traffic: a fixed list of requests, sent by a few concurrent clients on 127.0.0.1."""

from __future__ import annotations

import random
import threading
from collections import Counter
from dataclasses import dataclass, field

import httpx

USERS = ["alice", "bob", "carol", "power"]


@dataclass
class TrafficResult:
    """What was sent and how it went."""

    sent: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    errors: int = 0


def plan(seed: int = 7) -> list[list[str]]:
    """One list of paths per client. Each client logs in as one user first (its own session cookie)."""
    rng = random.Random(seed)
    clients: list[list[str]] = []
    for user in USERS:
        paths = [f"/login/{user}"]
        paths += ["/dashboard"] * 30
        paths += ["/orders"] * 12
        paths += [f"/customers/{rng.randint(1, 300)}" for _ in range(12)]
        paths += [f"/customers/{rng.randint(1, 300)}/summary" for _ in range(30)]
        paths += [f"/badge/{rng.randint(0, 10**9)}" for _ in range(60)]
        paths += ["/health"] * 30
        paths += ["/admin/customers", "/admin/addresses", "/admin/notes"] * 2
        body = paths[1:]
        rng.shuffle(body)
        clients.append([paths[0], *body])
    # The power user's session grows on /dashboard: its dashboard requests come first, so that every one
    # is profiled in full (with its session) before anything can raise the memory guard, and the analyzer
    # sees the route the session grows on. The export is the large result set that pushes memory past the
    # dump threshold: the first one follows those dashboards while memory is still low, so it is profiled
    # in full before the memory guard reduces profiling to checkpoints; two more come at the end.
    power = clients[USERS.index("power")]
    rest = [path for path in power[1:] if path != "/dashboard"]
    power[1:] = [*(["/dashboard"] * power.count("/dashboard")), "/export", *rest]
    clients[0].append("/export")
    clients[1].append("/export")
    return clients


def drive(base_url: str, clients: list[list[str]], timeout: float = 60.0) -> TrafficResult:
    """Send every planned request (one thread per client), return the counts."""
    result = TrafficResult()
    lock = threading.Lock()

    def run(paths: list[str]) -> None:
        with httpx.Client(base_url=base_url, timeout=timeout) as client:
            for path in paths:
                try:
                    status = client.get(path).status_code
                except httpx.HTTPError:
                    with lock:
                        result.errors += 1
                    continue
                with lock:
                    result.sent += 1
                    result.by_status[status] += 1

    threads = [threading.Thread(target=run, args=(paths,)) for paths in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return result
