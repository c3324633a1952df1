"""Bounded demo traffic: a fixed list of requests, sent by a few concurrent clients on 127.0.0.1.

The traffic comes in three phases. In ``opening`` the admin goes through the admin panel (the heaviest
pages, one at a time); in ``browse`` four users use the app the way its planted problems need; in
``crisis`` all four export every order at once, which pushes the process past its dump threshold. The
memory guard narrows profiling to checkpoints from that moment on (the production behaviour), so
everything the diagnosis needs in full detail is sent before it. The admin panel's memory is taken up
before the browsing, so that the process's peak while browsing, which the dump threshold must stay above,
and its resting memory, which a leak would raise, do not depend on when the heaviest page happens to run.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

USERS = ["alice", "bob", "carol", "power"]
ADMIN = "carol"  # the one user of the admin panel
ADMIN_PAGES = ["/admin/customers", "/admin/addresses", "/admin/notes"]


@dataclass(frozen=True)
class Plan:
    """One list of paths per user and phase; a user keeps its client (and session cookie) across phases."""

    opening: list[list[str]]
    browse: list[list[str]]
    crisis: list[list[str]]

    def phases(self) -> list[list[list[str]]]:
        """The phases in the order they are sent."""
        return [self.opening, self.browse, self.crisis]


@dataclass
class TrafficResult:
    """What was sent and how it went."""

    sent: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    errors: int = 0


def plan(seed: int = 7) -> Plan:
    """The demo's traffic. Each user logs in first (its own session cookie)."""
    rng = random.Random(seed)
    browse: list[list[str]] = []
    for user in USERS:
        paths = ["/dashboard"] * 30
        paths += ["/orders"] * 12
        paths += [f"/customers/{rng.randint(1, 300)}" for _ in range(12)]
        paths += [f"/customers/{rng.randint(1, 300)}/summary" for _ in range(30)]
        paths += [f"/badge/{rng.randint(0, 10**9)}" for _ in range(60)]
        paths += ["/health"] * 30
        rng.shuffle(paths)
        if user == "power":
            # The power user's session grows on /dashboard: its dashboards come first, so that the
            # analyzer follows the session's growth from its first request on the route it grows on.
            paths = [*(["/dashboard"] * paths.count("/dashboard")), *(p for p in paths if p != "/dashboard")]
        browse.append([f"/login/{user}", *paths])
    # An admin panel has few users: one opens every page of it, eight times over, before the users come.
    opening = [ADMIN_PAGES * 8 if user == ADMIN else [] for user in USERS]
    crisis = [["/export"] for _user in USERS]
    return Plan(opening, browse, crisis)


def drive(
    base_url: str,
    phases: list[list[list[str]]],
    timeout: float = 60.0,
    after_phase: Callable[[int], None] | None = None,
) -> TrafficResult:
    """Send every planned request: one thread per client, the phases one after the other (every client
    finishes a phase before any starts the next; ``after_phase(i)`` runs in between). Returns the counts."""
    result = TrafficResult()
    lock = threading.Lock()
    clients = max((len(phase) for phase in phases), default=0)
    finished = iter(range(len(phases)))
    failures: list[BaseException] = []

    def phase_done() -> None:
        index = next(finished)
        if after_phase is not None and not failures:
            try:
                after_phase(index)
            except Exception as exc:  # raised below, in the caller's thread
                failures.append(exc)

    barrier = threading.Barrier(clients, action=phase_done) if clients else None

    def run(index: int) -> None:
        with httpx.Client(base_url=base_url, timeout=timeout) as client:
            for phase in phases:
                for path in phase[index] if index < len(phase) else []:
                    try:
                        status = client.get(path).status_code
                    except httpx.HTTPError:
                        with lock:
                            result.errors += 1
                        continue
                    with lock:
                        result.sent += 1
                        result.by_status[status] += 1
                if barrier is not None:
                    barrier.wait()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise failures[0]
    return result
