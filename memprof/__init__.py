"""memprof: find out why a Python ASGI + SQLAlchemy worker intermittently runs out of memory.

The public API::

    from memprof import MemprofMiddleware, checkpoint, flush, instrument_sqlalchemy, MemprofSettings

    app = MemprofMiddleware(app)          # one line; settings from MEMPROF_* variables
    instrument_sqlalchemy(engine)         # an Engine or AsyncEngine; no argument: every engine

Names are imported on first use (PEP 562), so that ``import memprof`` (done by the pytest plugin in every
test run, and by the command line) loads neither SQLAlchemy nor pydantic nor the runtime until they are
needed; see "Import cost" in docs/performance.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from memprof.integrations.sessions import register_session_provider as register_session_provider
    from memprof.integrations.sqlalchemy import instrument_sqlalchemy as instrument_sqlalchemy
    from memprof.integrations.sqlalchemy import uninstrument_sqlalchemy as uninstrument_sqlalchemy
    from memprof.middleware import MemprofMiddleware as MemprofMiddleware
    from memprof.profile import RequestProfile as RequestProfile
    from memprof.profile import checkpoint as checkpoint
    from memprof.profile import current_profile as current_profile
    from memprof.settings import MemprofConfigError as MemprofConfigError
    from memprof.settings import MemprofSettings as MemprofSettings
    from memprof.settings import Mode as Mode
    from memprof.settings import load_settings as load_settings
    from memprof.watchdog.dump import dump as dump
    from memprof.watchdog.state import register_state as register_state
    from memprof.writer import flush as flush

__version__ = "0.1.0"

__all__ = [
    "MemprofConfigError",
    "MemprofMiddleware",
    "MemprofSettings",
    "Mode",
    "RequestProfile",
    "__version__",
    "checkpoint",
    "current_profile",
    "dump",
    "flush",
    "instrument_sqlalchemy",
    "load_settings",
    "register_session_provider",
    "register_state",
    "uninstrument_sqlalchemy",
]

# Public name -> the module that defines it.
_MODULES = {
    "dump": "memprof.watchdog.dump",
    "register_session_provider": "memprof.integrations.sessions",
    "instrument_sqlalchemy": "memprof.integrations.sqlalchemy",
    "uninstrument_sqlalchemy": "memprof.integrations.sqlalchemy",
    "MemprofMiddleware": "memprof.middleware",
    "RequestProfile": "memprof.profile",
    "checkpoint": "memprof.profile",
    "current_profile": "memprof.profile",
    "MemprofConfigError": "memprof.settings",
    "MemprofSettings": "memprof.settings",
    "Mode": "memprof.settings",
    "load_settings": "memprof.settings",
    "register_state": "memprof.watchdog.state",
    "flush": "memprof.writer",
}


if not TYPE_CHECKING:  # type checkers see the imports above, and flag a misspelt memprof.X

    def __getattr__(name: str) -> Any:
        module = _MODULES.get(name)
        if module is None:
            raise AttributeError(f"module 'memprof' has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value  # later look-ups are plain attribute reads
        return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_MODULES})
