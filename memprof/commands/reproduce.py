"""``memprof reproduce MODULE:APP --request "GET /path"``: the reproduction harness from the command line.

A thin wrapper over :func:`memprof.testing.reproduce`: options become :class:`~memprof.testing.Variable`
objects, the result is printed as a rich table (or JSON with ``--json``).
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer


def _values(text: str, option: str) -> tuple[Any, ...]:
    """``"10,100,1000"`` -> (10, 100, 1000); numbers become numbers, anything else stays text."""
    out: list[Any] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            raise ValueError(f"{option} {text!r} has an empty value: give values separated by commas")
        try:
            out.append(int(part))
        except ValueError:
            try:
                out.append(float(part))
            except ValueError:
                out.append(part)
    return tuple(out)


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise ValueError(f"--header {text!r} is not a header: expected 'Name: value'")
    return name.strip(), value.strip()


def build_variables(
    params: list[str],
    setup: str | None,
    session: bool,
    session_sizes: str | None,
    session_fill: str | None,
    cache: bool,
    cache_clear: str | None,
    clock: str | None,
    set_clock: str | None,
) -> list[Any]:
    """The variables the options describe (hooks imported from ``module:function``)."""
    from memprof.testing._imports import load_app
    from memprof.testing.variables import NamedSetup, Variable

    def hook(spec: str | None, option: str, needed_by: str) -> Any:
        if spec is None:
            raise ValueError(f"{needed_by} needs {option} MODULE:FUNCTION")
        return load_app(spec, what=f"{option} hook")

    variables: list[Any] = []
    if params:
        setup_hook = hook(setup, "--setup", "--param")
        for text in params:
            name, sep, values = text.partition("=")
            if not sep or not name.strip():
                raise ValueError(f"--param {text!r} is not NAME=V1,V2,...")
            variables.append(
                Variable.param(name.strip(), _values(values, "--param"), NamedSetup(setup_hook, name.strip()))
            )
    if session:
        variables.append(Variable.session_state())
    if session_sizes is not None:
        sizes = _values(session_sizes, "--session-sizes")
        variables.append(
            Variable.session_size(sizes, hook(session_fill, "--session-fill", "--session-sizes"))
        )
    if cache:
        variables.append(Variable.cache(hook(cache_clear, "--cache-clear", "--cache")))
    if clock is not None:
        variables.append(Variable.clock(_values(clock, "--clock"), hook(set_clock, "--set-clock", "--clock")))
    return variables


def reproduce(
    target: Annotated[str, typer.Argument(metavar="MODULE:APP", help="The ASGI app, e.g. myapp.main:app.")],
    request: Annotated[
        str,
        typer.Option(
            "--request", "-r", metavar="REQUEST", help='The request to reproduce, e.g. "GET /dashboard".'
        ),
    ],
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param",
            "-p",
            metavar="NAME=V1,V2,...",
            help="A numeric parameter NAME=V1,V2,... set by --setup (repeatable).",
        ),
    ] = None,
    setup: Annotated[
        str | None,
        typer.Option(
            metavar="MODULE:FUNCTION",
            help="MODULE:FUNCTION called as setup(ctx, name, value) for each --param.",
        ),
    ] = None,
    session: Annotated[
        bool, typer.Option("--session", help="Compare a fresh and an existing session.")
    ] = False,
    session_sizes: Annotated[
        str | None,
        typer.Option(
            metavar="SIZES", help="Session data sizes in bytes, e.g. 0,10000,100000 (needs --session-fill)."
        ),
    ] = None,
    session_fill: Annotated[
        str | None,
        typer.Option(
            metavar="MODULE:FUNCTION", help="MODULE:FUNCTION called as fill(ctx, size) to fill the session."
        ),
    ] = None,
    cache: Annotated[bool, typer.Option("--cache", help="Compare cold, warm and cleared caches.")] = False,
    cache_clear: Annotated[
        str | None,
        typer.Option(
            metavar="MODULE:FUNCTION",
            help="MODULE:FUNCTION called as clear(ctx, state) to empty the app's caches.",
        ),
    ] = None,
    clock: Annotated[
        str | None, typer.Option(metavar="VALUES", help="Clock values, e.g. 0,6,12,18 (needs --set-clock).")
    ] = None,
    set_clock: Annotated[
        str | None,
        typer.Option(metavar="MODULE:FUNCTION", help="MODULE:FUNCTION called as set_clock(ctx, value)."),
    ] = None,
    repeats: Annotated[
        int,
        typer.Option(min=1, metavar="N", help="Measured requests per run (>= 2 gives growth per request)."),
    ] = 1,
    runs: Annotated[
        int, typer.Option(min=1, metavar="N", help="Runs per variant (their spread is the noise).")
    ] = 3,
    isolate: Annotated[bool, typer.Option("--isolate", help="Run every run in a fresh subprocess.")] = False,
    header: Annotated[
        list[str] | None, typer.Option("--header", "-H", metavar="HEADER", help="'Name: value' (repeatable).")
    ] = None,
    body: Annotated[str | None, typer.Option(metavar="TEXT", help="Request body.")] = None,
    data_dir: Annotated[
        str | None,
        typer.Option(
            metavar="DIR", help="Keep the sample records of the profiled requests here (for memprof analyze)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Run one request under controlled variations and find which variable memory follows."""
    from memprof.commands._errors import CliError
    from memprof.testing.harness import ReproduceError
    from memprof.testing.harness import reproduce as run
    from memprof.testing.render import render

    if "." not in sys.path and "" not in sys.path:
        sys.path.insert(0, "")  # MODULE:APP is looked up from the current directory, like uvicorn does
    try:
        variables = build_variables(
            param or [], setup, session, session_sizes, session_fill, cache, cache_clear, clock, set_clock
        )
        result = run(
            target,
            request,
            variables,
            repeats=repeats,
            runs=runs,
            isolate=isolate,
            headers=[_header(h) for h in header or []],
            body=body.encode() if body is not None else None,
            data_dir=data_dir,
        )
    except (ReproduceError, ValueError) as exc:
        raise CliError(str(exc)) from None
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2, default=str))
    else:
        render(result)
