"""Whether the samples carry SQL data, and what to do when they do not (``sql_status`` in the summary).

Without statements no SQL finding (N+1, cartesian join, large result set, loader criteria) is possible,
and an empty SQL section looks like a healthy app: the analyzer says so, in one line.
"""

from __future__ import annotations

from typing import Any

NOT_INSTRUMENTED = (
    "no SQL in the samples: if the app uses SQLAlchemy, check that MEMPROF_SQLALCHEMY is not off and that "
    "SQLAlchemy is imported before the app starts serving (or call memprof.instrument_sqlalchemy() at "
    "start-up)"
)
COUNTS_ONLY = (
    "the samples carry only SQL counts and times (light mode): for statements, N+1 and ORM objects, "
    "profile in full for a while with `memprof enable aggressive --for 30m` (needs "
    "MEMPROF_CONTROL_MAX_MODE=aggressive) or sign requests in targeted mode"
)


def sql_status(samples: int, queries: int, statements: int) -> dict[str, Any]:
    """``{"recorded": bool, "hint": str | None}``: ``recorded`` when some sample has SQL statements.

    ``samples``: samples analysed; ``queries``: SQL executions counted in them (light samples count
    them too); ``statements``: distinct statements recorded (full-detail samples only).
    """
    if statements or not samples:
        return {"recorded": bool(statements), "hint": None}
    return {"recorded": False, "hint": COUNTS_ONLY if queries else NOT_INSTRUMENTED}
