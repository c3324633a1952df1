"""Findings from records the real SQLAlchemy integration wrote: a real FastAPI app on real SQLite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker
from starlette.testclient import TestClient

from memprof import MemprofMiddleware, instrument_sqlalchemy, uninstrument_sqlalchemy
from memprof.analysis import Filters, analyze
from tests.sqla_apps import Schema, criteria_session_class, make_schema, seed, sync_app


@pytest.fixture
def schema() -> Schema:
    return make_schema()


@pytest.fixture
def engine(tmp_path: Path, schema: Schema) -> Iterator[Engine]:
    engine = create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    schema.Base.metadata.create_all(engine)
    with Session(engine) as session:
        seed(session, schema, authors=12, books=25, awards=25)
    instrument_sqlalchemy(engine)
    yield engine
    uninstrument_sqlalchemy()
    engine.dispose()


def test_sqlalchemy_findings_name_the_statement_and_the_frame(
    engine: Engine, schema: Schema, make_settings: Any, data_dir: Path, samples: Any
) -> None:
    scoped = sessionmaker(engine, class_=criteria_session_class(schema, check_relationship_load=False))
    with TestClient(MemprofMiddleware(sync_app(schema, scoped), settings=make_settings())) as client:
        for _ in range(3):
            for path in ("/n1", "/joined", "/users/1"):
                assert client.get(path).status_code == 200
    assert len(samples()) == 9
    summary = analyze([str(data_dir)]).summary
    found = {f["kind"]: f for f in summary["findings"]}

    n1 = found["n_plus_one"]["evidence"]
    assert n1["max_per_request"] == 12 and n1["requests"] == 3 and n1["lazy"]
    assert n1["site"].startswith("tests/sqla_apps.py:") and n1["site"].endswith(" in n_plus_one")
    assert f"FROM {schema.prefix}_book" in n1["statements"][0]["sql"] and n1["routes"] == ["/n1"]
    assert "selectinload" in found["n_plus_one"]["fix"]

    cart = found["cartesian_join"]["evidence"]
    # 12 authors x 20 visible books (the criteria hide one in five) x 25 awards rows, for 12 + 240 + 300 objects
    assert (cart["rows"], cart["instances"]) == (12 * 20 * 25, 12 + 12 * 20 + 12 * 25)
    assert "selectinload" in found["cartesian_join"]["fix"]

    crit = found["loader_criteria_explosion"]["evidence"]
    assert crit["model"].endswith(".Book") and crit["duplicates"] > 0

    sql = summary["sql"]
    assert sql["models"][0]["model"].endswith((".Book", ".Award"))
    assert any(f"FROM {schema.prefix}_author" in st["sql"] for st in sql["by_time"])

    clean = analyze([str(data_dir)], Filters(route="/users/{user_id}")).summary
    assert clean["samples"] == 3
    assert [f for f in clean["findings"] if f["severity"] in ("warning", "critical")] == []
