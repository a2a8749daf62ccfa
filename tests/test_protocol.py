"""The generated wire types must match the vendored spec: regenerate them when this fails."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from oasis.protocol import openapi_types
from oasis.protocol.spec import SPEC_PATH, load_openapi_spec

ROOT = Path(__file__).resolve().parents[1]


def test_generated_types_are_fresh() -> None:
    check = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "generate_protocol.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert check.returncode == 0, check.stderr


def test_spec_loads_despite_repeated_anchors() -> None:
    spec = load_openapi_spec(SPEC_PATH)
    operations = [op for path in spec["paths"].values() for op in path.values() if "operationId" in op]
    assert len(operations) == 64
    assert set(spec["components"]["schemas"]) >= {"OpenAIFile", "Model", "CreateChatCompletionRequest"}
    assert openapi_types.OpenAIFile.model_fields.keys() >= {"id", "bytes", "purpose", "status"}


def test_json_depth_counts_structure_across_blocks_and_not_inside_strings() -> None:
    import json

    from oasis.protocol import json_depth

    string = '"' + 'x[{\\"' * 1000 + '"'  # brackets and escaped quotes in a string do not count
    for levels in (json_depth.MAX_DEPTH, json_depth.MAX_DEPTH + 1):
        # the opening brackets straddle the first block's end, so the depth carries from one block to the next
        body = ("[" * 10 + string + "," + "1," * 600_000 + "[" * (levels - 10) + "]" * levels).encode()
        assert len(body) > 1 << 20 and json.loads(body)
        assert json_depth.too_deep(body) is (levels > json_depth.MAX_DEPTH)
    assert not json_depth.too_deep(b'{"a": "' + b"[" * 1000 + b'"}')
