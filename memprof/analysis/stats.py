"""Distribution summaries in SQL: the stat block of the summary (count, mean, min, max, p25/p50/p75/p95/p99,
population variance and std), computed by DuckDB over any column.

Percentiles are nearest-rank (``quantile_disc``: the ``ceil(q * n)``-th smallest value); sums of integer
columns are exact (HUGEINT), so the variance of byte counts is exact before it is rounded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

QUANTILES = (25, 50, 75, 95, 99)
EMPTY: dict[str, Any] = {"count": 0, "mean": 0.0, "min": 0, "max": 0, "p25": 0, "p50": 0, "p75": 0, "p95": 0,
                         "p99": 0, "variance": 0.0, "std": 0.0}  # fmt: skip


def stat_sql(column: str, name: str) -> str:
    """SELECT-list items computing the stat block of integer ``column`` as columns ``{name}_*``."""
    qs = ", ".join(str(q / 100) for q in QUANTILES)
    return (
        f"count({column}) AS {name}_n, sum({column}::HUGEINT) AS {name}_s1, "
        f"sum({column}::HUGEINT * {column}::HUGEINT) AS {name}_s2, min({column}) AS {name}_min, "
        f"max({column}) AS {name}_max, quantile_disc({column}, [{qs}]) AS {name}_q"
    )


def stat_block(row: dict[str, Any], name: str) -> dict[str, Any]:
    """The stat block from the columns :func:`stat_sql` made (integers: exact sums, rounded once)."""
    n = int(row.get(f"{name}_n") or 0)
    if n == 0:
        return dict(EMPTY)
    s1, s2 = int(row[f"{name}_s1"]), int(row[f"{name}_s2"])
    variance = (n * s2 - s1 * s1) / (n * n)
    q = row[f"{name}_q"]
    return {
        "count": n,
        "mean": round(s1 / n, 3),
        "min": row[f"{name}_min"],
        "max": row[f"{name}_max"],
        **{f"p{p}": v for p, v in zip(QUANTILES, q, strict=True)},
        "variance": round(variance, 3),
        "std": round(math.sqrt(variance), 3),
    }


def describe(values: Sequence[int]) -> dict[str, Any]:
    """The stat block of ``values`` (integers), computed by the same SQL as the summary's."""
    import duckdb

    with duckdb.connect() as con:
        con.execute("CREATE TABLE v (x BIGINT)")
        if values:
            con.executemany("INSERT INTO v VALUES (?)", [(int(x),) for x in values])
        cur = con.execute(f"SELECT {stat_sql('x', 'x')} FROM v")
        names = [d[0] for d in cur.description or ()]
        row = dict(zip(names, cur.fetchone() or (), strict=True))
    return stat_block(row, "x")
