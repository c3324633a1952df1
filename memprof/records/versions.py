"""Record tags and their versions (defined here only), and the version check readers make: no pydantic, so
the analyzer can check records without loading the models of :mod:`memprof.records.models`."""

from __future__ import annotations

from typing import Any

SAMPLE_SCHEMA = "memprof.sample"
DUMP_SCHEMA = "memprof.dump"
CRASH_SCHEMA = "memprof.crash"
STATE_SCHEMA = "memprof.state"
# Not records the analyzer reads: the flight recorder's live file and a worker's published status.
WORKER_SCHEMA = "memprof.worker"
STATUS_SCHEMA = "memprof.worker_status"

SAMPLE_VERSION = "1.1"
DUMP_VERSION = "1.1"
CRASH_VERSION = "1.1"
STATE_VERSION = "1.1"
WORKER_VERSION = CRASH_VERSION
STATUS_VERSION = "1.0"

# Schema tag -> the version this memprof writes; readers accept any minor version of its major.
VERSIONS = {
    SAMPLE_SCHEMA: SAMPLE_VERSION,
    DUMP_SCHEMA: DUMP_VERSION,
    CRASH_SCHEMA: CRASH_VERSION,
    STATE_SCHEMA: STATE_VERSION,
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
