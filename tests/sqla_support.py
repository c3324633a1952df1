"""Fixtures and helpers shared by the SQLAlchemy test modules (import the fixtures you use)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from memprof import MemprofMiddleware, instrument_sqlalchemy, uninstrument_sqlalchemy
from memprof.records.models import Sample
from tests.sqla_apps import Schema, make_schema, seed

Settings = Callable[..., Any]


@pytest.fixture
def schema() -> Schema:
    return make_schema()


@pytest.fixture
def engine(tmp_path: Path, schema: Schema) -> Iterator[Engine]:
    engine = create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    schema.Base.metadata.create_all(engine)
    with Session(engine) as session:
        seed(session, schema)
    instrument_sqlalchemy(engine)
    yield engine
    uninstrument_sqlalchemy()
    engine.dispose()


def run(app: Any, settings: Any, *paths: str, method: str = "GET") -> None:
    with TestClient(MemprofMiddleware(app, settings=settings)) as client:
        for path in paths:
            assert client.request(method, path).status_code == 200


def only(records: list[dict[str, Any]]) -> dict[str, Any]:
    assert len(records) == 1, records
    Sample.model_validate(records[0])
    return records[0]


def statement(rec: dict[str, Any], contains: str) -> dict[str, Any]:
    found = [s for s in rec["queries"]["statements"] if contains in s["sql"]]
    assert len(found) == 1, [s["sql"] for s in rec["queries"]["statements"]]
    return found[0]


def model(rec: dict[str, Any], name: str) -> dict[str, Any]:
    found = {k: v for k, v in rec["models"]["classes"].items() if k.endswith(f".{name}")}
    assert len(found) == 1, rec["models"]
    return next(iter(found.values()))
