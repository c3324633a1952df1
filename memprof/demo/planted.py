"""The demo app's planted problems, and which finding of the analyzer answers each.

``memprof demo`` prints the map (problem -> finding) after the diagnosis; the demo's test checks that
every problem has its finding.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Planted:
    """One problem planted in :mod:`memprof.demo.app`: the finding kind that answers it, and what that
    finding must name (a route, a function, a model) to point at the right code."""

    kind: str
    names: str
    problem: str


PLANTED = (
    Planted("session_bloat", "/dashboard", "/dashboard grows the power user's session on every visit"),
    Planted("n_plus_one", "/orders", "/orders loads each order's customer lazily, one SELECT per row"),
    Planted("cartesian_join", "/customers/{customer_id}", "/customers/{id} joinedloads three collections"),
    Planted("large_result_set", "/export", "/export builds every order as an ORM object at once"),
    Planted("unbounded_cache", "memprof.demo.app.render_badge", "render_badge: lru_cache(maxsize=None)"),
    Planted("route_family_overhead", "/admin", "/admin/* loads every row of its tables"),
    Planted("loader_criteria_explosion", "SoftDelete", "the soft-delete scope on every SELECT and lazy load"),
)


def names(finding: dict[str, Any], text: str) -> bool:
    """Whether ``finding`` names ``text`` in its title, subject or evidence (record references aside:
    they are file paths, which could contain anything)."""
    evidence = {k: v for k, v in (finding.get("evidence") or {}).items() if k != "records"}
    shown = json.dumps([finding.get("title"), finding.get("subject"), evidence], default=str)
    return text in shown


def answers(findings: list[dict[str, Any]]) -> list[tuple[Planted, dict[str, Any] | None]]:
    """Each planted problem with the first finding of its kind that names the right place (None: missed)."""
    return [
        (p, next((f for f in findings if f.get("kind") == p.kind and names(f, p.names)), None))
        for p in PLANTED
    ]


def render_map(findings: list[dict[str, Any]]) -> list[str]:
    """The map as lines of text: each planted problem, then the finding that answers it or MISSED."""
    lines = []
    for p, found in answers(findings):
        verdict = (
            f"{p.kind}: {found['title']}" if found is not None else f"MISSED (no {p.kind} naming {p.names})"
        )
        lines.append(f"  {p.problem}\n      -> {verdict}")
    return lines
