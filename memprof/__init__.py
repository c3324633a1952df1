"""memprof: find out why a Python ASGI + SQLAlchemy worker intermittently runs out of memory.

The public API::

    from memprof import MemprofMiddleware, checkpoint, flush, instrument_sqlalchemy, MemprofSettings

    app = MemprofMiddleware(app)          # one line; settings from MEMPROF_* variables
    instrument_sqlalchemy(engine)         # an Engine or AsyncEngine; no argument: every engine
"""

from memprof.dump import dump
from memprof.integrations.sessions import register_session_provider
from memprof.integrations.sqlalchemy import instrument_sqlalchemy, uninstrument_sqlalchemy
from memprof.middleware import MemprofMiddleware
from memprof.profile import RequestProfile, checkpoint, current_profile
from memprof.settings import MemprofConfigError, MemprofSettings, Mode, load_settings
from memprof.state import register_state
from memprof.writer import flush

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
