"""The one way memprof writes a file: private (0600 in a 0700 directory) and atomic where it replaces one.

Every file memprof writes goes through here: dumps, flight-recorder files, worker status, the control
file, dump requests (atomic replacement), and samples and state lines (appends, :func:`open_private_append`,
:func:`append_whole`). A failed write leaves no temporary file and no partial line behind.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` and its missing parents, each mode 0700, if needed and return it (``mkdir(parents=
    True)`` would give the parents the umask's mode: the data dir itself must be private too)."""
    if path.is_dir():
        return path
    missing = [path]
    while not missing[-1].parent.exists() and missing[-1].parent != missing[-1]:
        missing.append(missing[-1].parent)
    for directory in reversed(missing):
        directory.mkdir(mode=0o700, exist_ok=True)
    return path


def write_private(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` as a 0600 file: a temporary file, renamed over ``path``.

    ``durable`` fsyncs the file and its directory (a host crash keeps it); without it only the page cache
    holds it, which survives a SIGKILL of the process (the flight recorder's case, written every second).
    The temporary file is removed when anything fails.
    """
    ensure_private_dir(path.parent)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise
    if durable:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def open_private_append(path: Path) -> int:
    """Open ``path`` for appending (created 0600 in a 0700 directory) and return the descriptor."""
    ensure_private_dir(path.parent)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)


def append_whole(path: Path, data: bytes) -> None:
    """Append ``data`` (whole lines) to ``path`` or nothing: a failed write (a full disk) is cut back off
    the file, and a file this call created is removed. Raises the OSError."""
    fd = open_private_append(path)
    try:
        size = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except OSError:
            try:
                if size:
                    os.ftruncate(fd, size)
                else:
                    path.unlink(missing_ok=True)
            except OSError:
                pass
            raise
    finally:
        os.close(fd)
