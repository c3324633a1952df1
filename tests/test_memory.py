"""Memory readings: fast RSS follows allocations, survives fork, and the limit has a source."""

from __future__ import annotations

import os
import time

import psutil
import pytest

from memprof import memory


def test_rss_matches_psutil_and_follows_allocation() -> None:
    before = memory.rss_bytes()
    assert abs(before - psutil.Process().memory_info().rss) < 20 * 1024 * 1024
    block = bytearray(64 * 1024 * 1024)
    for i in range(0, len(block), 4096):
        block[i] = 1
    assert memory.rss_bytes() - before > 50 * 1024 * 1024
    del block


def test_peak_is_at_least_rss() -> None:
    assert memory.peak_rss_bytes() >= memory.rss_bytes() - 4096 * 16


def test_statm_is_reopened_in_a_forked_child() -> None:
    # The parent holds a big block; the child frees nothing but must read its *own* statm.
    ballast = bytearray(128 * 1024 * 1024)
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            own = psutil.Process().memory_info().rss
            got = memory.rss_bytes()
            os.write(write_fd, f"{got} {own}".encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    os.waitpid(pid, 0)
    got, own = (int(x) for x in os.read(read_fd, 100).split())
    os.close(read_fd)
    # A descriptor inherited from the parent would report the parent's RSS, not the child's.
    assert abs(got - own) < 16 * 1024 * 1024
    del ballast


def test_limit_detection(monkeypatch: object) -> None:
    assert memory.detect_limit(123 * 1024 * 1024) == memory.MemoryLimit(123 * 1024 * 1024, "setting")
    limit = memory.detect_limit()
    assert limit.bytes > 0 and limit.source in ("cgroup_v2", "cgroup_v1", "rlimit_as", "physical")


def test_cgroup_figures_are_numbers_or_none() -> None:
    figures = memory.cgroup_memory()
    assert set(figures) == {"version", "max", "current", "anon", "file"}
    for key in ("max", "current", "anon", "file"):
        assert figures[key] is None or isinstance(figures[key], int)


@pytest.mark.parametrize(
    ("shared", "kernel", "last"),
    [("rss_at", "rss_bytes", "_last_rss"), ("peak_at", "peak_rss_bytes", "_last_peak")],
)
def test_readings_closer_than_the_resolution_share_one_kernel_read(
    monkeypatch: pytest.MonkeyPatch, shared: str, kernel: str, last: str
) -> None:
    reads: list[int] = []
    real = getattr(memory, kernel)

    def counted() -> int:
        reads.append(1)
        return int(real())

    monkeypatch.setattr(memory, kernel, counted)
    monkeypatch.setattr(memory, last, memory._NEVER)
    at = getattr(memory, shared)
    now = time.perf_counter_ns()
    first = at(now)
    assert first > 0 and at(now + memory.READING_RESOLUTION_NS - 1) == first and len(reads) == 1
    at(now + memory.READING_RESOLUTION_NS)  # old enough: read again
    assert len(reads) == 2
    at(now)  # a time before the reading (another thread's clock): read again
    assert len(reads) == 3


def test_a_forked_child_never_reuses_the_parents_reading() -> None:
    now = time.perf_counter_ns()
    memory.rss_at(now)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            # Within the resolution of the parent's reading, the child must still read its own statm.
            os.write(write_fd, str(memory._last_rss[0]).encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    os.waitpid(pid, 0)
    child_saw = int(os.read(read_fd, 100))
    os.close(read_fd)
    assert child_saw == memory._NEVER[0]  # the at-fork handler forgot the parent's reading
