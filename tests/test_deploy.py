"""The deployment files in deploy/ (compose, Kubernetes, Dockerfile) stay true to the program: every oasis command
they run parses, every OASIS_ variable they set is a setting, every config they mount loads, every path the
Dockerfile copies exists. (No container runtime here: they are read, not run.)"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from oasis.cli import _parser
from oasis.settings import Settings, load_settings

ROOT = Path(__file__).parent.parent
DEPLOY = ROOT / "deploy"


def _command_parses(arguments: list[str]) -> None:
    try:
        _parser().parse_args(arguments)
    except SystemExit as exc:  # argparse's way of refusing
        raise AssertionError(f"oasis {' '.join(arguments)}: not a valid command") from exc


def _is_setting(variable: str) -> bool:
    """Whether OASIS_A__B names the setting a.b (pydantic-settings' prefix and nesting)."""
    model: type[BaseModel] = Settings
    parts = variable.removeprefix("OASIS_").lower().split("__")
    for position, part in enumerate(parts):
        field = model.model_fields.get(part)
        if field is None:
            return False
        if position < len(parts) - 1:
            inner = field.annotation
            if not (isinstance(inner, type) and issubclass(inner, BaseModel)):
                return False
            model = inner
    return True


def _loads(config_text: str, tmp_path: Path) -> Settings:
    path = tmp_path / "config.yaml"
    path.write_text(config_text)
    return load_settings(path, data_dir=tmp_path / "data")


def test_the_setting_check_itself_tells_real_from_made_up() -> None:
    assert _is_setting("OASIS_DATABASE_URL") and _is_setting("OASIS_BLOBS__SECRET_ACCESS_KEY")
    assert not _is_setting("OASIS_BLOBS__NO_SUCH") and not _is_setting("OASIS_NOTHING")


def test_compose_runs_real_commands_with_real_settings(tmp_path: Path) -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    oasis_services = {name: s for name, s in compose["services"].items() if s.get("image") == "oasis:latest"}
    assert set(oasis_services) == {"api", "worker"}
    for service in oasis_services.values():
        _command_parses(service["command"])
        assert all(_is_setting(name) for name in service["environment"]), service["environment"]
        for mount in service["volumes"]:
            assert (DEPLOY / mount.split(":")[0]).exists(), mount
    settings = _loads((DEPLOY / "config.yaml").read_text(), tmp_path)
    assert settings.blobs.kind == "s3" and settings.workers.in_process is False
    identities = json.loads((DEPLOY / "s3.json").read_text())["identities"][0]["credentials"][0]
    environment = oasis_services["api"]["environment"]
    assert identities["secretKey"] == environment["OASIS_BLOBS__SECRET_ACCESS_KEY"]
    # The S3 server makes the bucket the config names; the database is the one the URL names.
    assert f"-bucket={settings.blobs.bucket}" in compose["services"]["seaweedfs"]["command"]
    assert compose["services"]["postgres"]["environment"]["POSTGRES_DB"] in environment["OASIS_DATABASE_URL"]


def test_kubernetes_manifests_run_real_commands_with_real_settings(tmp_path: Path) -> None:
    documents = [
        doc for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text())
    ]
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for document in documents:
        by_kind.setdefault(document["kind"], []).append(document)
    (config_map,) = by_kind["ConfigMap"]
    settings = _loads(config_map["data"]["config.yaml"], tmp_path)
    assert settings.blobs.kind == "s3"
    (secret,) = by_kind["Secret"]
    assert all(_is_setting(name) for name in secret["stringData"])
    deployments = {d["metadata"]["name"]: d for d in by_kind["Deployment"]}
    assert set(deployments) == {"oasis-api", "oasis-worker"}
    for deployment in deployments.values():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        _command_parses(container["args"])
        mount = container["volumeMounts"][0]["mountPath"]
        assert f"{mount}/config.yaml" in container["args"]
    (service,) = by_kind["Service"]
    assert service["spec"]["selector"] == deployments["oasis-api"]["spec"]["template"]["metadata"]["labels"]


def test_the_dockerfile_copies_what_exists_and_runs_a_real_command() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    for line in re.findall(r"^COPY (.+)$", dockerfile, re.M):
        *sources, _ = line.split()
        for source in sources:
            assert (ROOT / source).exists(), source
    (command,) = re.findall(r"^CMD (\[.*\])$", dockerfile, re.M)
    _command_parses(json.loads(command))


@pytest.mark.parametrize("path", ["compose.yaml", "config.yaml", "kubernetes/oasis.yaml"])
def test_no_secret_but_the_placeholders(path: str) -> None:
    text = (DEPLOY / path).read_text()
    for value in re.findall(r"(?:PASSWORD|SECRET_ACCESS_KEY|secretKey)\W+([^\s,\"}]+)", text):
        assert value.startswith("change-me"), value
