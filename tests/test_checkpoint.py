"""The checkpoint API outside and inside a profiled request."""

from __future__ import annotations

import asyncio

from memprof import checkpoint, current_profile
from memprof.profile import MAX_CHECKPOINTS, RequestProfile, _current


def test_noop_outside_a_request() -> None:
    assert current_profile() is None

    @checkpoint("f")
    def f(x: int) -> int:
        return x + 1

    @checkpoint("g")
    async def g(x: int) -> int:
        return x * 2

    with checkpoint("block"):
        pass
    checkpoint.mark("point")
    assert f(1) == 2 and asyncio.run(g(2)) == 4
    assert f.__name__ == "f" and g.__name__ == "g"


def test_inside_a_profile_records_spans_and_points() -> None:
    profile = RequestProfile("GET", "/", "aggressive", True)
    token = _current.set(profile)
    try:

        @checkpoint("sync_fn")
        def f() -> list[int]:
            return [0] * 1000

        @checkpoint("async_fn")
        async def g() -> int:
            return 1

        f()
        asyncio.run(g())
        checkpoint.mark("point")
        try:
            with checkpoint("failing"):
                raise KeyError("x")
        except KeyError:
            pass
    finally:
        _current.reset(token)
    names = [c[0] for c in profile.checkpoints]
    assert names == ["sync_fn", "async_fn", "point", "failing"]
    extra = profile.checkpoints[3][4]
    assert extra is not None and extra["error"] is True and extra["rss_before"] > 0
    assert extra["heap_before"] > 0 and profile.checkpoints[3][3] > 0, "heap before and after a span"
    assert profile.checkpoints[2][4] is None


def test_checkpoints_are_capped_and_ignored_after_finish() -> None:
    profile = RequestProfile("GET", "/", "light", False)
    for i in range(MAX_CHECKPOINTS + 5):
        profile.add_checkpoint(f"c{i}")
    assert len(profile.checkpoints) == MAX_CHECKPOINTS and profile.dropped_checkpoints == 5
    profile.finished = True
    profile.checkpoints.clear()
    profile.add_checkpoint("late")
    assert profile.checkpoints == []
