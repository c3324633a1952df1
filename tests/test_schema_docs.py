"""The published JSON Schemas and the field reference are exactly what the record models generate."""

from __future__ import annotations

from pathlib import Path

from memprof.records import models as schema

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_json_schemas_are_current(tmp_path: Path) -> None:
    for generated in schema.write_json_schemas(tmp_path):
        published = DOCS / "schema" / generated.name
        assert published.is_file(), (
            f"{published} is missing: run python -m memprof.records.models docs/schema"
        )
        assert published.read_text() == generated.read_text(), f"{published.name} is stale"


def test_field_reference_is_current(tmp_path: Path) -> None:
    generated = schema.write_field_reference(tmp_path / "records.md").read_text()
    assert (DOCS / "records.md").read_text() == generated, "docs/records.md is stale"
    for tag in schema.RECORD_MODELS:
        assert f"## `{tag}`" in generated


def test_unknown_major_version_is_refused() -> None:
    import pytest

    with pytest.raises(schema.UnsupportedRecord, match=r"version '2\.0' is not supported"):
        schema.check_version({"schema": "memprof.sample", "version": "2.0"})
    with pytest.raises(schema.UnsupportedRecord, match="unknown record schema"):
        schema.check_version({"schema": "other"})
    assert schema.check_version({"schema": "memprof.sample", "version": "1.7"}) == "memprof.sample"
