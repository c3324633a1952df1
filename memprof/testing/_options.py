"""The plugin's options: each is a command-line option and an ini key of the same name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest


@dataclass(frozen=True)
class Option:
    """One setting of the plugin: ``--memprof-x-y`` on the command line, ``memprof_x_y`` in the ini."""

    name: str
    help: str
    type: str  # "string", "int" or "bool"
    default: Any


OPTIONS = [
    Option(
        "memprof_app",
        "MODULE:APP the memprof_client fixture talks to (or override memprof_app).",
        "string",
        "",
    ),
    Option("memprof_growth_iterations", "Measured iterations of no_memory_growth tests.", "int", 10),
    Option("memprof_growth_warmup", "Warm-up iterations of no_memory_growth tests (not measured).", "int", 3),
    Option(
        "memprof_growth_tolerance",
        "Traced memory growth per iteration that no_memory_growth tolerates, e.g. '4 KB'.",
        "string",
        "4 KB",
    ),
    Option("memprof_top", "How many allocation sites, object types or statements failures list.", "int", 5),
    Option("memprof_disable", "Do not measure: memprof's markers are ignored.", "bool", False),
]


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_options(parser: pytest.Parser) -> None:
    """Register every option on the command line (group ``memprof``) and as an ini key."""
    group = parser.getgroup("memprof", "memory profiling (memprof)")
    for opt in OPTIONS:
        if opt.type == "bool":
            group.addoption(_flag(opt.name), action="store_true", default=None, dest=opt.name, help=opt.help)
            parser.addini(opt.name, opt.help, type="bool", default=opt.default)
        else:
            group.addoption(
                _flag(opt.name),
                action="store",
                default=None,
                dest=opt.name,
                type=int if opt.type == "int" else str,
                help=f"{opt.help} Default: {opt.default!r}.",
            )
            parser.addini(opt.name, opt.help, type="string", default=str(opt.default))


def option(config: pytest.Config, name: str) -> Any:
    """The value in force: the command-line option when given, else the ini key, else the default."""
    value = config.getoption(name, default=None)
    if value is not None:
        return value
    raw = config.getini(name)
    spec = next(o for o in OPTIONS if o.name == name)
    if spec.type == "int":
        try:
            return int(str(raw).strip())
        except ValueError:
            raise pytest.UsageError(f"ini key {name} = {raw!r} is not a whole number") from None
    return raw
