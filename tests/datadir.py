"""Reading everything memprof wrote under a data dir, while its background threads may still write."""

from __future__ import annotations

from pathlib import Path


def written_files(root: Path) -> dict[Path, bytes]:
    """Every file under ``root`` with its bytes.

    memprof's background threads (status, state, flight recorder) write a hidden temporary file and
    rename it into place; one listed a moment ago may be gone when read, and is skipped: its content is
    in the file it was renamed to, which is read too (or was written before the listing).
    """
    files: dict[Path, bytes] = {}
    for path in root.rglob("*"):
        try:
            if path.is_file():
                files[path] = path.read_bytes()
        except FileNotFoundError:
            continue
    return files
