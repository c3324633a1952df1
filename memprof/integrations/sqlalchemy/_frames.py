"""The first application frame behind a SQL execution: outside SQLAlchemy, memprof, the standard
library and installed packages.

Under an ``AsyncSession`` the statement runs in a greenlet whose stack ends where SQLAlchemy's
``greenlet_spawn`` started it: the application's ``await`` is in the parent greenlet, suspended in
``greenlet_spawn``, so the parents' frames are searched when the current stack has no application frame.
"""

from __future__ import annotations

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


def _library_prefixes() -> tuple[str, ...]:
    paths = {sysconfig.get_paths().get(key) for key in ("stdlib", "platstdlib", "purelib", "platlib")}
    try:
        paths.update(site.getsitepackages())
        paths.add(site.getusersitepackages())
    except AttributeError:  # pragma: no cover - some embedded interpreters lack them
        pass
    paths.add(os.path.dirname(sqlalchemy.__file__))
    return tuple(sorted(os.path.normpath(p) + os.sep for p in paths if p))


_PREFIXES = _library_prefixes()
_MEMPROF = os.path.dirname(memprof.__file__) + os.sep
_DEMO = _MEMPROF + "demo" + os.sep  # memprof's demo app is an application like any other
# site-packages and dist-packages anywhere (another virtualenv, the system Python) are library code too.
_MARKERS = (os.sep + "site-packages" + os.sep, os.sep + "dist-packages" + os.sep)
_is_app_cache: dict[str, bool] = {}


def is_application_file(filename: str) -> bool:
    """Whether code in ``filename`` belongs to the application (cached per file name)."""
    known = _is_app_cache.get(filename)
    if known is not None:
        return known
    app = not (
        filename.startswith("<")
        or filename.startswith(_PREFIXES)
        or (filename.startswith(_MEMPROF) and not filename.startswith(_DEMO))
        or any(marker in filename for marker in _MARKERS)
    )
    if len(_is_app_cache) < _MAX_CACHE:
        _is_app_cache[filename] = app
    return app


_CWD = os.getcwd() + os.sep  # frames are shown relative to the directory the process started in


def short_path(filename: str) -> str:
    """``filename`` relative to the directory the process started in, when it is below it."""
    return filename[len(_CWD) :] if filename.startswith(_CWD) else filename


def _from_stack(frame: FrameType | None) -> FrameType | None:
    # The hot loop of a full profile's first execution of a statement (20-30 frames of SQLAlchemy
    # under an ORM call): a subscript per frame, the cache filled on a miss.
    cache = _is_app_cache
    for _ in range(_MAX_DEPTH):
        if frame is None:
            return None
        filename = frame.f_code.co_filename
        try:
            app = cache[filename]
        except KeyError:
            app = is_application_file(filename)
        if app:
            return frame
        frame = frame.f_back
    return None


def _from_parent_greenlets() -> FrameType | None:
    """The first application frame in the suspended greenlets above this one (AsyncSession)."""
    if _greenlet is None:
        return None
    parent = _greenlet.getcurrent().parent
    depth = 0
    while parent is not None and depth < 8:
        frame = _from_stack(parent.gr_frame)
        if frame is not None:
            return frame
        parent = parent.parent
        depth += 1
    return None


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


def application_site() -> tuple[str, int, str] | None:
    """(file name, line, function) of the code that led to the current SQL execution, or None: plain
    values, formatted by :func:`describe_site` on the background thread."""
    frame = _from_stack(sys._getframe(1))
    if frame is None:
        frame = _from_parent_greenlets()
    return None if frame is None else (frame.f_code.co_filename, frame.f_lineno, function_name(frame.f_code))


def describe_site(site: tuple[str, int, str] | None) -> str | None:
    """``file:line in function``, the file relative to the directory the process started in."""
    return None if site is None else f"{short_path(site[0])}:{site[1]} in {site[2]}"


def application_frame() -> str | None:
    """``file:line in function`` of the code that led to the current SQL execution, or None."""
    return describe_site(application_site())
