"""The variables of a reproduction: what changes between variants, and the hooks that set it.

A :class:`Variable` has a name, the values it takes, and a hook ``apply(ctx, value)`` called before the
measured request of every variant (also with its default value when another variable is being varied,
so each variant starts from a known state). Hooks may make priming requests through ``ctx.request()``
or ``ctx.client``, and may be ``async``. For ``isolate=True`` (a fresh subprocess per run) hooks must be
importable module-level functions.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

    from memprof.testing.client import ProfiledClient

Hook = Callable[["Context", Any], object]

_UNSET: Any = object()


@dataclass(frozen=True)
class RequestSpec:
    """The request being reproduced: ``GET /path?x=1`` plus optional headers and body."""

    method: str
    url: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None

    @classmethod
    def parse(
        cls, text: str, headers: Sequence[tuple[str, str]] = (), body: bytes | None = None
    ) -> RequestSpec:
        """``"GET /path"`` -> RequestSpec; a ValueError naming the expected form otherwise."""
        parts = text.split()
        if len(parts) != 2 or not parts[1].startswith("/") or not parts[0].isalpha():
            raise ValueError(
                f"{text!r} is not a request: expected METHOD /path, e.g. 'GET /dashboard?user=7'"
            )
        return cls(parts[0].upper(), parts[1], tuple(headers), body)

    def __str__(self) -> str:
        return f"{self.method} {self.url}"


@dataclass
class Context:
    """What a hook gets: the profiled client of this run, the app, and every variable's value."""

    client: ProfiledClient
    app: Any
    spec: RequestSpec
    values: dict[str, Any] = field(default_factory=dict)

    def request(self) -> httpx.Response:
        """Send the reproduced request once (for priming; it is not measured)."""
        response: httpx.Response = self.client.request(
            self.spec.method, self.spec.url, headers=list(self.spec.headers), content=self.spec.body
        )
        return response

    def run(self, result: object) -> None:
        """Wait for a hook's result when it is awaitable (run on the client's event loop)."""
        if inspect.isawaitable(result):
            portal = self.client.portal
            if portal is None:  # pragma: no cover - the harness always runs hooks inside the client
                raise RuntimeError(
                    "async hooks need the client's event loop: use the client as a context manager"
                )

            async def wait() -> object:
                return await result

            portal.call(wait)


@dataclass(frozen=True)
class Variable:
    """One thing varied between variants: ``name``, its ``values``, and the hook that sets a value.

    ``default`` (the first value unless given) is the value used while other variables are varied.
    ``unit`` names one step of a numeric variable in summaries ("1.2 MB per permission").
    """

    name: str
    values: tuple[Any, ...]
    apply: Hook | None = None
    default: Any = _UNSET
    unit: str | None = None

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").isalnum():
            raise ValueError(f"{self.name!r} is not a variable name: use letters, digits and underscores")
        if len(self.values) < 2:
            raise ValueError(f"variable {self.name!r} needs at least two values to compare")
        if len(set(map(repr, self.values))) != len(self.values):
            raise ValueError(f"variable {self.name!r} has repeated values: {list(self.values)!r}")
        if self.default is _UNSET:
            object.__setattr__(self, "default", self.values[0])
        elif self.default not in self.values:
            raise ValueError(
                f"the default {self.default!r} of variable {self.name!r} is not one of its values"
            )

    @property
    def numeric(self) -> bool:
        """Whether every value is a finite number (then memory is fitted against it)."""
        return all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in self.values
        )

    def set(self, ctx: Context, value: Any) -> None:
        """Run the hook for ``value`` (and wait for it when async)."""
        if self.apply is not None:
            ctx.run(self.apply(ctx, value))

    # -- the scenarios of the original reproduction tests -------------------------------------------
    @classmethod
    def param(
        cls,
        name: str,
        values: Sequence[float],
        setup: Hook,
        *,
        unit: str | None = None,
        default: Any = _UNSET,
    ) -> Variable:
        """A numeric parameter of the app (permission count, rows, items) that ``setup(ctx, value)`` sets."""
        return cls(name, tuple(values), setup, default, unit)

    @classmethod
    def session_state(cls, *, name: str = "session") -> Variable:
        """Fresh session (no cookies) vs existing session (one priming request first, cookies kept)."""
        return cls(name, ("fresh", "existing"), _SessionState())

    @classmethod
    def session_size(cls, sizes: Sequence[int], fill: Hook, *, name: str = "session_bytes") -> Variable:
        """Session data size: ``fill(ctx, size)`` puts about ``size`` bytes in the client's session."""
        return cls(name, tuple(sizes), fill, unit="byte of session")

    @classmethod
    def cache(
        cls, clear: Hook | None, *, states: Sequence[str] = ("cold", "warm", "cleared"), name: str = "cache"
    ) -> Variable:
        """Cache state: cold (``clear`` first), warm (a priming request first), cleared (priming, then
        ``clear``). ``clear(ctx, state)`` empties the app's caches. The default is ``warm``."""
        unknown = set(states) - {"cold", "warm", "cleared"}
        if unknown:
            raise ValueError(f"unknown cache states {sorted(unknown)}: use cold, warm, cleared")
        default = "warm" if "warm" in states else states[0]
        return cls(name, tuple(states), _CacheState(clear), default)

    @classmethod
    def clock(
        cls, values: Sequence[Any], set_clock: Hook, *, name: str = "clock", unit: str | None = None
    ) -> Variable:
        """Time-based variations: ``set_clock(ctx, value)`` moves the app's clock (hours, dates, ...)."""
        return cls(name, tuple(values), set_clock, unit=unit)


class _SessionState:
    """The hook of :meth:`Variable.session_state` (a class so that it pickles for subprocesses)."""

    def __call__(self, ctx: Context, value: Any) -> None:
        if value == "fresh":
            ctx.client.cookies.clear()
        else:
            ctx.request()


class _CacheState:
    """The hook of :meth:`Variable.cache`."""

    def __init__(self, clear: Hook | None) -> None:
        self.clear = clear

    def __call__(self, ctx: Context, value: Any) -> None:
        if value in ("warm", "cleared"):
            ctx.request()
        if value in ("cold", "cleared") and self.clear is not None:
            ctx.run(self.clear(ctx, value))


class NamedSetup:
    """``setup(ctx, name, value)`` as a hook ``(ctx, value)`` for variable ``name`` (the CLI's --setup)."""

    def __init__(self, setup: Callable[[Context, str, Any], object], name: str) -> None:
        self.setup = setup
        self.name = name

    def __call__(self, ctx: Context, value: Any) -> object:
        return self.setup(ctx, self.name, value)


def variants(variables: Sequence[Variable]) -> list[tuple[str | None, dict[str, Any]]]:
    """One factor at a time: the baseline (every default), then each variable through its values with
    the others at their defaults. Returns (varied variable or None, values) pairs, baseline first."""
    names = [v.name for v in variables]
    if len(set(names)) != len(names):
        raise ValueError(f"variable names must be unique: {names}")
    defaults = {v.name: v.default for v in variables}
    out: list[tuple[str | None, dict[str, Any]]] = [(None, dict(defaults))]
    for var in variables:
        for value in var.values:
            if value != var.default:
                out.append((var.name, {**defaults, var.name: value}))
    return out


def series_of(variable: Variable, results: Mapping[str, Any]) -> list[tuple[Any, Any]]:
    """(value, result) of every variant of ``variable`` (its default is the baseline), in value order."""
    return [
        (value, results["baseline" if value == variable.default else f"{variable.name}={value}"])
        for value in variable.values
    ]
