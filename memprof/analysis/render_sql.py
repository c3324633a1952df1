"""SQL in text output: one line (newlines and runs of spaces collapsed), cut where statements differ."""

from __future__ import annotations

from collections.abc import Sequence

MIN_CUT = 60


def one_line(sql: str) -> str:
    """``sql`` on one line: every run of whitespace (newlines too) becomes one space."""
    return " ".join(str(sql).split())


def cuts(sqls: Sequence[str], *, minimum: int = MIN_CUT, maximum: int = 400) -> list[str]:
    """Each statement on one line, cut just past where it differs from every other one listed with it (at
    least ``minimum`` characters, at most ``maximum``), an ellipsis marking the cut."""
    lines = [one_line(s) for s in sqls]
    out = []
    for i, line in enumerate(lines):
        common = 0
        for j, other in enumerate(lines):
            if i != j:
                n = 0
                while n < min(len(line), len(other)) and line[n] == other[n]:
                    n += 1
                common = max(common, n)
        keep = min(max(minimum, common + 20), maximum)
        out.append(line if len(line) <= keep else line[: keep - 1] + "…")
    return out
