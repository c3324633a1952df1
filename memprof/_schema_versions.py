"""Record kinds and their versions, and the version check readers make: no pydantic, so the analyzer can
check records without loading the models of :mod:`memprof.schema` (which re-exports these names)."""

from __future__ import annotations

from typing import Any

SAMPLE_SCHEMA = "memprof.sample"
SAMPLE_VERSION = "1.0"
DUMP_VERSION = "1.0"
CRASH_VERSION = "1.0"
STATE_VERSION = "1.0"

# Schema tag -> the version this memprof writes; readers accept any minor version of its major.
VERSIONS = {
    SAMPLE_SCHEMA: SAMPLE_VERSION,
    "memprof.dump": DUMP_VERSION,
    "memprof.crash": CRASH_VERSION,
    "memprof.state": STATE_VERSION,
}


class UnsupportedRecord(ValueError):
    """A record whose schema tag or major version this memprof does not know."""


def check_version(record: dict[str, Any]) -> str:
    """Return the record's schema tag, or raise :class:`UnsupportedRecord` naming what is wrong."""
    tag = record.get("schema")
    if tag not in VERSIONS:
        raise UnsupportedRecord(f"unknown record schema {tag!r}")
    current = VERSIONS[tag]
    version = str(record.get("version", ""))
    if version.split(".", 1)[0] != current.split(".", 1)[0]:
        raise UnsupportedRecord(
            f"{tag} version {version!r} is not supported (this memprof reads {current.split('.')[0]}.x); "
            "upgrade memprof to read it"
        )
    return str(tag)
