"""The frames behind a SQL execution: the application's (outside SQLAlchemy, memprof, the standard library,
installed packages and the venv's scripts) and, when an installed library issued the SQL, the library's.

A walk stops at the request's boundary: memprof's middleware (the frames beyond it are the server or a test
driver, not the code to change) or the asyncio event loop running the request's task.

Under an ``AsyncSession`` the statement runs in a greenlet whose stack ends where SQLAlchemy's
``greenlet_spawn`` started it: the application's ``await`` is in the parent greenlet, suspended in
``greenlet_spawn``, so the parents' frames are walked on when the current stack ends without a boundary.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import site
import sys
import sysconfig
from types import CodeType, FrameType
from typing import Any

import sqlalchemy

import memprof

_greenlet: Any
try:
    _greenlet = importlib.import_module("greenlet")  # untyped; only needed for asyncio SQLAlchemy
except ImportError:  # pragma: no cover
    _greenlet = None

_MAX_DEPTH = 200
_MAX_CACHE = 4096
MAX_APP_FRAMES = 8  # application frames kept per capture, innermost first

Site = tuple[str, int, str]  # (file name, line, function): formatted by describe_site in the writer thread
# An application frame of a capture: (id of the frame, its code, its last instruction, its line). No frame
# is kept: the id tells a frame still running from a new one (see memprof.integrations.sqlalchemy._loops).
AppFrame = tuple[int, CodeType, int, int]


def _dirs(paths: list[str | None]) -> tuple[str, ...]:
    return tuple(sorted({os.path.normpath(p) + os.sep for p in paths if p}))


def _site_dirs() -> tuple[str, ...]:
    paths: list[str | None] = [sysconfig.get_paths().get(key) for key in ("purelib", "platlib")]
    try:
        paths += [*site.getsitepackages(), site.getusersitepackages()]
    except AttributeError:  # pragma: no cover - some embedded interpreters lack them
        pass
    return _dirs(paths)


_SITE_DIRS = _site_dirs()
# The standard library, SQLAlchemy and the venv's console scripts (``.venv/bin/uvicorn``).
_OTHER_DIRS = _dirs(
    [
        *(sysconfig.get_paths().get(key) for key in ("stdlib", "platstdlib", "scripts")),
        os.path.join(sys.prefix, "bin"),
        os.path.join(sys.prefix, "Scripts"),
    ]
)
_SQLALCHEMY = os.path.dirname(sqlalchemy.__file__) + os.sep
_MEMPROF_DIR = os.path.dirname(memprof.__file__) + os.sep
_DEMO = _MEMPROF_DIR + "demo" + os.sep  # memprof's demo app is an application like any other
_ASYNCIO = os.path.dirname(asyncio.__file__) + os.sep
_LOOP_FILES = tuple(_ASYNCIO + name for name in ("events.py", "base_events.py", "runners.py"))
# site-packages and dist-packages anywhere (another virtualenv, the system Python) are library code too.
_MARKERS = (os.sep + "site-packages" + os.sep, os.sep + "dist-packages" + os.sep)

_OTHER, _APP, _LIBRARY, _MEMPROF, _BOUNDARY = 0, 1, 2, 3, 4
_kinds: dict[str, int] = {}


def _kind(filename: str) -> int:
    """What code in ``filename`` is (cached per file name)."""
    known = _kinds.get(filename)
    if known is not None:
        return known
    if filename.startswith("<"):
        kind = _OTHER
    elif filename.startswith(_MEMPROF_DIR) and not filename.startswith(_DEMO):
        kind = _MEMPROF
    elif filename.startswith(_LOOP_FILES):
        kind = _BOUNDARY
    elif filename.startswith(_SQLALCHEMY):
        kind = _OTHER
    elif any(marker in filename for marker in _MARKERS) or filename.startswith(_SITE_DIRS):
        kind = _LIBRARY
    elif filename.startswith(_OTHER_DIRS):
        kind = _OTHER
    else:
        kind = _APP
    if len(_kinds) < _MAX_CACHE:
        _kinds[filename] = kind
    return kind


_CWD = os.getcwd() + os.sep  # frames are shown relative to the directory the process started in


def short_path(filename: str) -> str:
    """``filename`` relative to the directory the process started in, when it is below it."""
    return filename[len(_CWD) :] if filename.startswith(_CWD) else filename


def library_path(filename: str) -> str:
    """``package/module.py``: ``filename`` relative to the site-packages directory that holds it."""
    for marker in _MARKERS:
        at = filename.rfind(marker)
        if at >= 0:
            return filename[at + len(marker) :]
    for prefix in _SITE_DIRS:
        if filename.startswith(prefix):
            return filename[len(prefix) :]
    return short_path(filename)


_INLINE = frozenset({"<listcomp>", "<dictcomp>", "<setcomp>", "<genexpr>"})


def function_name(code: CodeType) -> str:
    """The name of the function ``code`` belongs to. A comprehension or generator expression runs in a
    frame of its own on 3.11 (on 3.12+ only a generator expression does: PEP 709 inlines comprehensions):
    it is named after the function that contains it, so that the same line reads the same on every Python."""
    name = code.co_name
    if name not in _INLINE:
        return name
    # "list_orders.<locals>.<listcomp>" -> "list_orders"; "C.m.<locals>.<listcomp>.<genexpr>" -> "m"
    outer = [part for part in code.co_qualname.split(".") if part != "<locals>" and part not in _INLINE]
    return outer[-1] if outer else "<module>"


def _walk(frame: FrameType | None, app: list[AppFrame], library: list[Site], own: bool) -> tuple[bool, bool]:
    """Walk outwards from ``frame``, appending application frames to ``app`` and the innermost library
    frame (before any application frame) to ``library``. ``own``: memprof's listener frames may still come
    first. (stopped at a boundary or with enough frames, still in memprof's own frames)."""
    kinds = _kinds
    for _ in range(_MAX_DEPTH):
        if frame is None:
            return False, own
        code = frame.f_code
        try:
            kind = kinds[code.co_filename]
        except KeyError:
            kind = _kind(code.co_filename)
        if kind == _MEMPROF:
            if not own:
                return True, False  # memprof's middleware: the server or a test driver lies beyond
        else:
            own = False
            if kind == _APP:
                app.append((id(frame), code, frame.f_lasti, frame.f_lineno))
                if len(app) >= MAX_APP_FRAMES:
                    return True, False
            elif kind == _LIBRARY:
                if not app and not library:
                    library.append((code.co_filename, frame.f_lineno, function_name(code)))
            elif kind == _BOUNDARY:
                return True, False
        frame = frame.f_back
    return True, own


def capture(depth: int = 1) -> tuple[list[AppFrame], Site | None]:
    """The application frames (innermost first, at most :data:`MAX_APP_FRAMES`) that led to the current
    SQL execution, and the library frame that issued it when an installed package stands between them and
    SQLAlchemy. Plain values: no frame is kept."""
    app: list[AppFrame] = []
    library: list[Site] = []
    stopped, own = _walk(sys._getframe(depth), app, library, True)
    if not stopped and _greenlet is not None:
        parent = _greenlet.getcurrent().parent
        hops = 0
        while not stopped and parent is not None and hops < 8:
            stopped, own = _walk(parent.gr_frame, app, library, own)
            parent = parent.parent
            hops += 1
    return app, (library[0] if library else None)


def site_of(frame: AppFrame) -> Site:
    """(file name, line, function) of an application frame of a capture."""
    return (frame[1].co_filename, frame[3], function_name(frame[1]))


def application_site() -> Site | None:
    """(file name, line, function) of the code that led to the current SQL execution, or None: plain
    values, formatted by :func:`describe_site` on the background thread."""
    app, _library = capture(2)
    return site_of(app[0]) if app else None


def describe_site(site: Site | None) -> str | None:
    """``file:line in function``, the file relative to the directory the process started in."""
    return None if site is None else f"{short_path(site[0])}:{site[1]} in {site[2]}"


def describe_library(site: Site | None) -> str | None:
    """``package/module.py:line in function`` of a library frame."""
    return None if site is None else f"{library_path(site[0])}:{site[1]} in {site[2]}"
