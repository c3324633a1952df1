"""The memprof pytest plugin (registered through the ``pytest11`` entry point as ``memprof``).

Markers: ``memory_limit``, ``no_memory_growth``, ``max_queries``, ``max_instances``; fixtures:
``memprof_app``, ``memprof_settings``, ``memprof_client``. A failed check edits the test's report (as
pytest-memray does): the run never crashes because of memprof. A test without memprof's markers pays a
few marker look-ups; disable the plugin entirely with ``-p no:memprof``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import pytest

from memprof._units import format_size, parse_size
from memprof.testing._fixtures import CLIENTS, memprof_app, memprof_client, memprof_settings
from memprof.testing._markers import (
    MARKERS,
    MarkerError,
    check_limit,
    check_requests,
    count_of,
    limit_of,
    positive_int,
)
from memprof.testing._options import add_options, option

__all__ = [
    "memprof_app",
    "memprof_client",
    "memprof_settings",
    "pytest_addoption",
    "pytest_configure",
    "pytest_pyfunc_call",
    "pytest_runtest_makereport",
]


@dataclass(frozen=True)
class _Config:
    iterations: int
    warmup: int
    tolerance: int
    top: int
    disabled: bool


_CONFIG = pytest.StashKey[_Config]()
_FAILURES = pytest.StashKey[list[str]]()
_NOTES = pytest.StashKey[list[str]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    for name, doc in MARKERS.items():
        config.addinivalue_line("markers", doc if doc.startswith(name) else f"{name}: {doc}")
    try:
        tolerance = parse_size(option(config, "memprof_growth_tolerance"))
    except ValueError as exc:
        raise pytest.UsageError(f"memprof_growth_tolerance: {exc}") from None
    values = {
        n: option(config, n) for n in ("memprof_growth_iterations", "memprof_growth_warmup", "memprof_top")
    }
    for name, value in values.items():
        if value < (1 if name != "memprof_growth_warmup" else 0):
            raise pytest.UsageError(f"{name} = {value} is too small")
    config.stash[_CONFIG] = _Config(
        iterations=values["memprof_growth_iterations"],
        warmup=values["memprof_growth_warmup"],
        tolerance=tolerance,
        top=values["memprof_top"],
        disabled=bool(option(config, "memprof_disable")),
    )


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Generator[None, object, object]:
    limit_marker = pyfuncitem.get_closest_marker("memory_limit")
    growth_marker = pyfuncitem.get_closest_marker("no_memory_growth")
    if limit_marker is None and growth_marker is None:
        return (yield)
    cfg = pyfuncitem.config.stash[_CONFIG]
    if cfg.disabled:
        return (yield)
    original = pyfuncitem.obj
    failures = pyfuncitem.stash.setdefault(_FAILURES, [])
    notes = pyfuncitem.stash.setdefault(_NOTES, [])
    clients = pyfuncitem.stash.get(CLIENTS, [])
    try:
        run = _measured(original, limit_marker, growth_marker, cfg, failures, notes, clients)
    except MarkerError as exc:
        failures.append(str(exc))
        return (yield)
    pyfuncitem.obj = run
    try:
        return (yield)
    finally:
        pyfuncitem.obj = original


class _Judge:
    """What a test's markers ask for (a traced peak limit, repeated runs that must level off) and the
    verdicts, added to the test's failures or notes."""

    def __init__(
        self,
        limit_marker: pytest.Mark | None,
        growth_marker: pytest.Mark | None,
        cfg: _Config,
        failures: list[str],
        notes: list[str],
    ) -> None:
        self.limit = limit_of(limit_marker) if limit_marker is not None else None
        self.growth: tuple[int, int, int] | None = None
        if growth_marker is not None:
            self.growth = (
                positive_int(growth_marker, "iterations", 0, cfg.iterations, 3),
                positive_int(growth_marker, "warmup", 1, cfg.warmup, 0),
                _tolerance(growth_marker, cfg.tolerance),
            )
        self.cfg = cfg
        self.failures = failures
        self.notes = notes

    def growth_result(self, result: Any) -> None:
        """A no_memory_growth verdict."""
        (self.failures if result.failed else self.notes).append(
            "no_memory_growth: " + result.describe(self.cfg.top)
        )

    def traced(self, t: Any) -> None:
        """A memory_limit verdict on the traced peak."""
        if self.limit is None:
            return
        if t.peak > self.limit:
            self.failures.append(check_limit(t.peak, self.limit, t.top_sites(self.cfg.top)))
        else:
            self.notes.append(f"memory_limit: peak {format_size(t.peak)} of {format_size(self.limit)}")


def _measured(
    func: Callable[..., Any],
    limit_marker: pytest.Mark | None,
    growth_marker: pytest.Mark | None,
    cfg: _Config,
    failures: list[str],
    notes: list[str],
    clients: list[Any],
) -> Callable[..., Any]:
    """``func`` wrapped to repeat it (no_memory_growth) and/or measure its traced peak (memory_limit)."""
    judge = _Judge(limit_marker, growth_marker, cfg, failures, notes)
    if inspect.iscoroutinefunction(func):
        return _measured_async(func, judge, clients)
    return _measured_sync(func, judge, clients)


def _measured_sync(func: Callable[..., Any], judge: _Judge, clients: list[Any]) -> Callable[..., Any]:
    from memprof.testing import _measure

    @functools.wraps(func)
    def run(*args: Any, **kwargs: Any) -> Any:
        t = _measure.Traced()
        if judge.limit is not None:
            t.start()
        try:
            if judge.growth is None:
                func(*args, **kwargs)
            else:
                iterations, warmup, tolerance = judge.growth
                result = _measure.measure_growth(
                    lambda: _compacting(func(*args, **kwargs), clients),
                    iterations=iterations,
                    warmup=warmup,
                    tolerance=tolerance,
                )
                judge.growth_result(result)
            judge.traced(t)
        finally:
            t.stop()

    return run


def _measured_async(func: Callable[..., Any], judge: _Judge, clients: list[Any]) -> Callable[..., Any]:
    from memprof.testing import _measure

    @functools.wraps(func)
    async def run(*args: Any, **kwargs: Any) -> Any:
        # Async bodies are repeated by awaiting them again; warm-up and measurement as for sync ones.
        t = _measure.Traced()
        if judge.limit is not None:
            t.start()
        try:
            if judge.growth is None:
                await func(*args, **kwargs)
            else:
                iterations, warmup, tolerance = judge.growth

                async def body() -> None:
                    await func(*args, **kwargs)
                    _compacting(None, clients)

                result = await _measure.measure_growth_async(
                    body, iterations=iterations, warmup=warmup, tolerance=tolerance
                )
                judge.growth_result(result)
            judge.traced(t)
        finally:
            t.stop()

    return run


def _compacting(result: Any, clients: list[Any]) -> Any:
    """After each repetition, memprof_client forgets the profiles the checks do not need (else the list
    of profiles would itself grow with every iteration)."""
    for client in clients:
        client.compact()
    return result


def _tolerance(marker: pytest.Mark, default: int) -> int:
    value = marker.kwargs.get("tolerance", marker.args[2] if len(marker.args) > 2 else None)
    if value is None:
        return default
    try:
        return parse_size(value)
    except ValueError as exc:
        raise MarkerError(f"no_memory_growth: tolerance {exc}") from None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report: pytest.TestReport = yield
    if call.when != "call":
        return report
    notes = item.stash.get(_NOTES, None)
    failures = [*item.stash.get(_FAILURES, []), *_request_failures(item, item.stash.get(CLIENTS, None))]
    if not failures and not notes:
        return report
    if notes:
        report.sections.append(("memprof", "\n".join(notes)))
    if failures:
        text = "\n\n".join(failures)
        if report.passed:
            report.outcome = "failed"
            report.longrepr = text
        else:
            report.sections.append(("memprof failures", text))
    return report


def _request_failures(item: pytest.Item, clients: list[Any] | None) -> list[str]:
    cfg = item.config.stash[_CONFIG]
    out: list[str] = []
    for kind in ("max_queries", "max_instances"):
        marker = item.get_closest_marker(kind)
        if marker is None or cfg.disabled:
            continue
        try:
            limit = count_of(marker)
        except MarkerError as exc:
            out.append(str(exc))
            continue
        profiles = [p for client in clients or [] for p in client.profiles]
        out.extend(check_requests(kind, limit, profiles, cfg.top))
    return out
