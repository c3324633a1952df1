"""Sizes for people: ``"50 MB"`` to bytes and back (binary multiples: 1 KB = 1024 B)."""

from __future__ import annotations

import re

_UNITS = {
    "": 1,
    "B": 1,
    "K": 1024,
    "KB": 1024,
    "KIB": 1024,
    "M": 1024**2,
    "MB": 1024**2,
    "MIB": 1024**2,
    "G": 1024**3,
    "GB": 1024**3,
    "GIB": 1024**3,
    "T": 1024**4,
    "TB": 1024**4,
    "TIB": 1024**4,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")


def parse_size(value: str | float) -> int:
    """``"50 MB"``, ``"1.5GiB"``, ``"512 KB"``, ``"1024"`` or a number of bytes -> bytes.

    Raises ValueError naming the value and the accepted form.
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a size: expected a number and a unit such as '50 MB'")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"{value!r} is not a size: it must not be negative")
        return int(value)
    match = _SIZE.match(str(value))
    unit = match.group(2).upper() if match else None
    if match is None or unit not in _UNITS:
        raise ValueError(
            f"{value!r} is not a size: expected a number and a unit such as '50 MB' (B, KB, MB, GB, TB)"
        )
    return int(float(match.group(1)) * _UNITS[unit])


def format_size(n: float, signed: bool = False) -> str:
    """Bytes -> ``"1.2 MB"`` (binary multiples); ``signed`` adds ``+`` to positive values."""
    sign = "-" if n < 0 else ("+" if signed and n > 0 else "")
    value = abs(float(n))
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            text = f"{value:.0f}" if unit == "B" else f"{value:.1f}"
            return f"{sign}{text} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover
