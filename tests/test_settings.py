"""Settings: defaults by mode, environment variables, one clear error per bad value, no .env unasked."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.testclient import TestClient

from memprof import MemprofConfigError, MemprofMiddleware, MemprofSettings, Mode, load_settings, middleware
from tests.apps import starlette_app


def test_defaults_by_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("MEMPROF_MODE", "MEMPROF_SAMPLE_RATE", "MEMPROF_DATA_DIR"):
        monkeypatch.delenv(var, raising=False)
    s = load_settings()
    assert s.mode is Mode.LIGHT and s.effective_sample_rate == 0.01
    assert s.data_dir == Path("./memprof-data") and s.dump_threshold == 0.9 and s.enabled
    assert s.effective_kill_switch_file == Path("./memprof-data/DISABLED")
    assert load_settings(mode="aggressive").effective_sample_rate == 1.0


def test_environment_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MEMPROF_MODE", "aggressive")
    monkeypatch.setenv("MEMPROF_SAMPLE_RATE", "0.5")
    monkeypatch.setenv("MEMPROF_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MEMPROF_MEMORY_LIMIT_MB", "512")
    s = load_settings()
    assert s.mode is Mode.AGGRESSIVE and s.effective_sample_rate == 0.5 and s.data_dir == tmp_path
    assert s.memory_limit_bytes == 512 * 1024 * 1024


@pytest.mark.parametrize(
    ("var", "value", "expected"),
    [
        (
            "MEMPROF_MODE",
            "fast",
            "MEMPROF_MODE='fast' is not valid: expected 'light', 'aggressive' or 'targeted'",
        ),
        ("MEMPROF_SAMPLE_RATE", "2", "MEMPROF_SAMPLE_RATE='2' is not valid"),
        ("MEMPROF_DUMP_THRESHOLD", "abc", "MEMPROF_DUMP_THRESHOLD='abc' is not valid"),
        ("MEMPROF_ENABLED", "maybe", "MEMPROF_ENABLED='maybe' is not valid"),
        ("MEMPROF_MEMORY_LIMIT_MB", "-1", "MEMPROF_MEMORY_LIMIT_MB='-1' is not valid"),
    ],
)
def test_bad_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(MemprofConfigError) as info:
        load_settings()
    assert str(info.value).startswith(expected)
    assert "\n" not in str(info.value)


def test_a_bad_value_turns_memprof_off_and_says_so_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("MEMPROF_MODE", "everything")
    monkeypatch.setattr(middleware, "_reported", set())
    with pytest.raises(MemprofConfigError, match="MEMPROF_MODE"):
        load_settings()
    with caplog.at_level("ERROR", logger="memprof"):
        apps = [MemprofMiddleware(starlette_app()) for _ in range(2)]
    assert all(mw.runtime is None for mw in apps)
    (line,) = [r for r in caplog.records if r.name == "memprof"]
    assert line.levelname == "ERROR" and "MEMPROF_MODE='everything' is not valid" in line.getMessage()
    with TestClient(apps[0]) as client:  # the app serves, untouched
        assert client.get("/").status_code == 200


def test_no_dotenv_read_unless_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MEMPROF_MODE", raising=False)
    (tmp_path / ".env").write_text("MEMPROF_MODE=aggressive\n")
    assert load_settings().mode is Mode.LIGHT
    monkeypatch.setenv("MEMPROF_ENV_FILE", str(tmp_path / ".env"))
    assert load_settings().mode is Mode.AGGRESSIVE
    monkeypatch.setenv("MEMPROF_ENV_FILE", str(tmp_path / "missing.env"))
    with pytest.raises(MemprofConfigError, match="MEMPROF_ENV_FILE"):
        load_settings()


def test_every_field_is_described() -> None:
    for name, field in MemprofSettings.model_fields.items():
        assert field.description, f"{name} has no description"
