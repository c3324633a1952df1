"""Where an N+1 loop is: the innermost application frame that stays the same frame across two executions
of a statement, at the loop that encloses the instruction it is running.

Two captures (:func:`memprof.integrations.sqlalchemy._frames.capture`) of consecutive executions are
aligned from the outermost frame: frames with the same id and code on both are candidates (a frame still
running keeps its id; a new call may get a dead frame's address, so an id alone cannot prove a frame is the
same). Of the candidates, the innermost whose instruction lies in a loop of its code (a backward jump around
it) is the loop, named by the loop's first line (the ``for``; for a ``while`` loop the first line of its
body, where its backward jump lands); a repository helper called once per item has no loop around its
query and is skipped. With no loop among them (recursion, calls in
sequence), the innermost candidate at its current line. The bytecode is read in the writer thread.
"""

from __future__ import annotations

import dis
from types import CodeType
from typing import Any

from memprof.integrations.sqlalchemy._frames import AppFrame, Site, capture, function_name, site_of

# The candidates of one statement, innermost first: (code, last instruction, line) of each.
Candidates = tuple[tuple[CodeType, int, int], ...]

_MAX_CACHE = 4096
_ranges: dict[CodeType, tuple[tuple[int, int, int], ...]] = {}


def candidates(before: list[AppFrame], now: list[AppFrame]) -> Candidates | None:
    """The frames of ``now`` that were already running at ``before`` (same id and code, aligned from the
    outermost), innermost first; None when none was."""
    i, j = len(before) - 1, len(now) - 1
    while i >= 0 and j >= 0 and before[i][0] == now[j][0] and before[i][1] is now[j][1]:
        i -= 1
        j -= 1
    common = now[j + 1 :]
    return tuple((code, lasti, line) for _id, code, lasti, line in common) or None


def _loop_ranges(code: CodeType) -> tuple[tuple[int, int, int], ...]:
    """(first offset, last offset, first line) of each loop in ``code``: its backward jumps."""
    found = _ranges.get(code)
    if found is not None:
        return found
    lines: dict[int, int] = {}
    jumps: list[tuple[int, int]] = []
    line = code.co_firstlineno
    try:
        instructions = list(dis.get_instructions(code))
    except Exception:  # code dis cannot read (another compiler's): no loop known, the current line is named
        instructions = []
    for ins in instructions:
        lineno = ins.positions.lineno if ins.positions is not None else None
        line = lineno or line
        lines[ins.offset] = line
        # JUMP_BACKWARD closes a loop (JUMP_BACKWARD_NO_INTERRUPT is an await's); 3.11 closes a while
        # loop with a conditional POP_JUMP_BACKWARD_IF_*.
        if (ins.opname == "JUMP_BACKWARD" or ins.opname.startswith("POP_JUMP_BACKWARD")) and isinstance(
            ins.argval, int
        ):
            jumps.append((ins.argval, ins.offset))
    found = tuple((start, end, lines.get(start, code.co_firstlineno)) for start, end in jumps)
    if len(_ranges) < _MAX_CACHE:
        _ranges[code] = found
    return found


def loop_line(code: CodeType, lasti: int) -> int | None:
    """The first line of the innermost loop of ``code`` around instruction ``lasti``, or None."""
    best: tuple[int, int] | None = None
    for start, end, line in _loop_ranges(code):
        if start <= lasti <= end and (best is None or start > best[0]):
            best = (start, line)
    return None if best is None else best[1]


def loop_site(found: Candidates | None) -> Site | None:
    """(file name, line, function) of the loop among ``found`` (see the module docstring)."""
    if not found:
        return None
    for code, lasti, _line in found:
        line = loop_line(code, lasti)
        if line is not None:
            return (code.co_filename, line, function_name(code))
    code, _lasti, line = found[0]
    return (code.co_filename, line, function_name(code))


def observe_sites(stat: Any, n: int, threshold: int) -> None:
    """At the ``n``-th execution of a statement in a full profile (a ``StatementStat``): its application
    and library frames at the first execution and at the N+1 threshold; its loop at the second execution
    and again at the threshold, from the capture of the execution before. Called for executions 1, 2,
    threshold - 1 and threshold only: a few captures per statement, whatever the loop's length."""
    app, library = capture()
    if n == 1 or n == threshold:
        stat.frame = site_of(app[0]) if app else None
        stat.library = library
    if stat.stack is not None and (n == 2 or n == threshold):
        stat.loop = candidates(stat.stack, app)
    stat.stack = app if n == 1 or n == threshold - 1 else None
