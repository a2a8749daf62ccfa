"""Loads the vendored OpenAI OpenAPI spec.

The file repeats two YAML anchors (`&run_temperature_description`, `&run_top_p_description`); plain YAML
loaders refuse that, so this loader lets a later anchor replace the earlier one, as the spec's authors meant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import Node

SPEC_PATH = Path(__file__).resolve().parents[3] / "spec" / "openai-openapi-2.0.0.yaml"


class _RepeatedAnchorLoader(yaml.SafeLoader):
    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        event = self.peek_event()
        anchor = getattr(event, "anchor", None)
        if anchor is not None and not isinstance(event, yaml.AliasEvent):
            self.anchors.pop(anchor, None)
        return super().compose_node(parent, index)


def load_openapi_spec(path: Path = SPEC_PATH) -> dict[str, Any]:
    with path.open(encoding="utf-8") as handle:
        loaded = yaml.load(handle, Loader=_RepeatedAnchorLoader)
    if not isinstance(loaded, dict):
        raise ValueError(f"{path} is not an OpenAPI document")
    return loaded
