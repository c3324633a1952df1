"""The worked ``MemoryReproductionTest`` of docs/reproduction.md runs, as it is, under pytest."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

DOC = Path(__file__).resolve().parent.parent / "docs" / "reproduction.md"
EXAMPLE = re.compile(r"^```python\n(# test_memory_reproduction\.py\n.*?)^```", re.S | re.M)


def test_the_worked_example_runs_and_passes(pytester: pytest.Pytester) -> None:
    match = EXAMPLE.search(DOC.read_text())
    assert match is not None, "docs/reproduction.md lost its worked example"
    pytester.makepyfile(test_memory_reproduction=match.group(1))
    pytester.makeini("[pytest]\npython_classes = Test* *Test\n")
    result = pytester.runpytest_inprocess(
        "-p", "no:cacheprovider", "-s", "-W", "ignore::pytest.PytestAssertRewriteWarning"
    )
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["*memory follows permissions: +[34].? KB per permission, R² *"])
