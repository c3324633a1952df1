"""``memprof.testing.reproduce(...)``: run one request under controlled variations and find which variable
memory follows. (The module is not called ``reproduce`` so that it cannot shadow the function.)


Phase 4 of the original method, "make the error deterministic": each variant (one factor at a time: a
baseline, then each variable through its values) runs in a fresh profiled client, optionally several
times and optionally in a fresh subprocess, and the suspect request is measured:

- peak: the highest Python allocation (tracemalloc) above the start of the request, i.e. what the
  request needs at once; traced allocations are exact and repeatable, unlike RSS, which the allocator
  keeps high after frees (RSS deltas are reported alongside);
- retained: what the requests left allocated after ``gc.collect()``; over repeated requests its slope is
  the growth per request (accumulation);
- queries, instances, session size: read from the request's memprof record when the SQLAlchemy and
  sessions integrations attached those sections.

Memory (the variant's peak) is fitted against each numeric variable by least squares; the variable whose
fit is good (R² >= ``min_r2``) and whose effect across its range is above noise (three times the typical
spread between runs: the median over the variable's variants, so that one run disturbed by another thread's
allocations does not hide an effect; and ``min_effect``) is named.
"""

from __future__ import annotations

import gc
import multiprocessing
import pickle
import statistics
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from memprof._units import parse_size
from memprof.memory import rss_bytes
from memprof.testing._imports import load_app
from memprof.testing._measure import Traced, client_files
from memprof.testing.fit import explain, linear_fit
from memprof.testing.results import Measurement, ReproductionResult, VariableEffect, VariantResult
from memprof.testing.variables import Context, RequestSpec, Variable, series_of, variants


class ReproduceError(ValueError):
    """The reproduction cannot run as asked; the message says what to change."""


def reproduce(
    app: Any,
    request: str | RequestSpec,
    variables: Sequence[Variable] = (),
    *,
    repeats: int = 1,
    runs: int = 3,
    isolate: bool = False,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes | None = None,
    min_r2: float = 0.9,
    min_effect: int | str = "64 KB",
    data_dir: str | Path | None = None,
    prime: bool = True,
) -> ReproductionResult:
    """Run ``request`` against ``app`` for every variant of ``variables`` and compare their memory.

    ``app`` is an ASGI app or ``"module:attr"`` (required with ``isolate=True``, which runs each run
    of each variant in a fresh subprocess; hooks must then be importable functions). ``repeats``
    requests are measured per run (growth per request needs >= 2), ``runs`` runs per variant give the
    noise. ``prime`` sends the request once in every run before the variables' hooks, so that what only
    the first request of a fresh client allocates is not measured (the hooks then set the state: a cold
    cache is cleared, a fresh session has its cookies dropped). Records of the profiled requests go to
    ``data_dir`` when given.
    """
    spec = request if isinstance(request, RequestSpec) else _parse(request, headers, body)
    if repeats < 1 or runs < 1:
        raise ReproduceError(f"repeats and runs must be at least 1 (got repeats={repeats}, runs={runs})")
    if isolate and not isinstance(app, str):
        raise ReproduceError(
            "isolate=True runs each variant in a fresh process: give the app as 'module:attr'"
        )
    try:
        floor = parse_size(min_effect)
        plan = variants(variables)
    except ValueError as exc:
        raise ReproduceError(str(exc)) from None
    if isolate:
        _check_picklable(variables)
    try:
        target = app if isolate else (load_app(app) if isinstance(app, str) else app)
    except ValueError as exc:
        raise ReproduceError(str(exc)) from None
    results: dict[str, VariantResult] = {}
    for varied, values in plan:
        label = "baseline" if varied is None else f"{varied}={values[varied]}"
        results[label] = VariantResult(label, varied, None if varied is None else values[varied], values)
    if not isolate:
        # One discarded run of the baseline absorbs what only the first request of a process allocates
        # (imports, compiled patterns, the app's lazy set-up), which would otherwise look like noise.
        run_variant(target, spec, variables, results["baseline"].values, 1, None)
    for _ in range(runs):  # runs interleave variants, so that drift does not favour one of them
        for variant in results.values():
            directory = str(data_dir) if data_dir is not None else None
            if isolate:
                measured = _run_isolated(target, spec, variables, variant.values, repeats, directory, prime)
            else:
                measured = run_variant(target, spec, variables, variant.values, repeats, directory, prime)
            variant.runs.append(measured)
    effects = _effects(variables, results)
    fits = {name: e.fit for name, e in effects.items() if e.fit is not None}
    noise = {name: e.noise for name, e in effects.items()}
    return ReproductionResult(
        request=str(spec),
        repeats=repeats,
        runs=runs,
        isolated=isolate,
        variants=list(results.values()),
        effects=effects,
        explained_by=explain(fits, noise, min_r2=min_r2, min_effect=floor),
        samples_dir=str(data_dir) if data_dir is not None else None,
    )


def _parse(request: str, headers: Sequence[tuple[str, str]], body: bytes | None) -> RequestSpec:
    try:
        return RequestSpec.parse(request, headers, body)
    except ValueError as exc:
        raise ReproduceError(str(exc)) from None


def _effects(variables: Sequence[Variable], results: dict[str, VariantResult]) -> dict[str, VariableEffect]:
    effects = {}
    for var in variables:
        series = series_of(var, results)
        peaks = [float(v.peak) for _, v in series]
        fit = linear_fit([float(x) for x, _ in series], peaks) if var.numeric else None
        effects[var.name] = VariableEffect(
            variable=var.name,
            numeric=var.numeric,
            unit=var.unit,
            noise=float(statistics.median(v.noise for _, v in series)),
            spread=max(peaks) - min(peaks),
            fit=fit,
        )
    return effects


def run_variant(
    app: Any,
    spec: RequestSpec,
    variables: Sequence[Variable],
    values: dict[str, Any],
    repeats: int,
    data_dir: str | None = None,
    prime: bool = True,
) -> list[Measurement]:
    """One run of one variant in this process: a fresh client (lifespan included), a priming request
    (``prime``), every variable's hook with this variant's value, then ``repeats`` measured requests."""
    from memprof.testing.client import ProfiledClient

    target = load_app(app) if isinstance(app, str) else app
    with ProfiledClient(target, data_dir=data_dir) as client:
        ctx = Context(client, target, spec, dict(values))
        runtime = client.middleware.runtime
        if runtime is None:
            raise ReproduceError("memprof did not start in the reproduction (see the error logged above)")
        writer = runtime.writer
        # Traced from before the priming request, so that what memprof's background thread holds from the
        # last request is traced alike at every measurement.
        traced = Traced()
        traced.start()
        try:
            if prime:
                ctx.request()
            for var in variables:
                var.set(ctx, values[var.name])
            _settle(writer)
            harness_files = client_files()
            start = traced.current_excluding(harness_files)
            out = []
            for _ in range(repeats):
                client.profiles.clear()  # the harness keeps only the latest record alive
                _settle(writer)
                before = traced.current
                rss_before = rss_bytes()
                traced.reset_peak()
                response = ctx.request()
                peak = traced.peak - before
                _settle(writer)
                profile = client.last
                out.append(
                    Measurement(
                        status=response.status_code,
                        peak=peak,
                        retained=traced.current_excluding(harness_files) - start,
                        rss_delta=rss_bytes() - rss_before,
                        queries=profile.query_count if profile else None,
                        instances=profile.instances if profile else None,
                        session_size=profile.session_size if profile else None,
                    )
                )
                del response
            return out
        finally:
            traced.stop()


def _settle(writer: Any) -> None:
    """Let memprof's background thread finish and collect garbage, so a measurement starts from rest."""
    writer.flush(5.0)
    gc.collect()


def _run_isolated(
    app: str,
    spec: RequestSpec,
    variables: Sequence[Variable],
    values: dict[str, Any],
    repeats: int,
    data_dir: str | None,
    prime: bool,
) -> list[Measurement]:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        future = pool.submit(run_variant, app, spec, list(variables), values, repeats, data_dir, prime)
        result: list[Measurement] = future.result()
        return result


def _check_picklable(variables: Sequence[Variable]) -> None:
    for var in variables:
        try:
            pickle.dumps(var)
        except Exception as exc:
            raise ReproduceError(
                f"variable {var.name!r} cannot be sent to a subprocess ({type(exc).__name__}: {exc}): with "
                "isolate=True its hook must be a module-level function, not a lambda or a local function"
            ) from None
