"""JSON Schemas as clients send them (pydantic's `$defs`, recursion, `Any`, references by path) become grammars
that take exactly the documents the schema does: each document below is fed token by token to the grammar."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest

from oasis.engines.llamacpp import native
from oasis.engines.llamacpp.chain import ChainDraw
from oasis.services.chat.tools import ToolPlan, call_schema
from tests.conftest import smollm


@pytest.fixture
async def engine() -> AsyncIterator[Any]:
    from oasis.engines.llamacpp.engine import LlamaCppEngine
    from oasis.settings import ModelSpec

    loaded = LlamaCppEngine(ModelSpec(**smollm(parallel=1, context_length=256)))
    await loaded.start()
    yield loaded
    await loaded.close()


def _takes(engine: Any, schema: Mapping[str, Any], document: str) -> bool:
    """Whether the schema's grammar takes `document` whole (every token, then the end)."""
    lib = native.lib()
    grammar = engine._new_grammar(native.json_grammar(schema))
    draw = ChainDraw(engine._n_vocab)
    try:
        for token in engine.tokenize(document, add_special=False):
            if not draw._allows(grammar, token):
                return False
            lib.llama_sampler_accept(grammar, token)
        return bool(draw._allows(grammar, engine._eog_tokens[0]))
    finally:
        lib.llama_sampler_free(grammar)


TREE: dict[str, Any] = {  # pydantic's schema of a model that holds itself: its `$ref` at the root beside `$defs`
    "$defs": {
        "Leaf": {"type": "object", "properties": {"v": {"type": "integer"}}, "required": ["v"]},
        "_Tree": {
            "type": "object",
            "properties": {
                "leaf": {"$ref": "#/$defs/Leaf"},
                "kids": {"type": "array", "items": {"$ref": "#/$defs/_Tree"}},
            },
            "required": ["leaf", "kids"],
        },
    },
    "$ref": "#/$defs/_Tree",
}
BY_PATH: dict[str, Any] = {  # two references whose pointers end alike (`.../items`): one rule each
    "type": "object",
    "properties": {
        "a": {"type": "array", "items": {"type": "integer"}},
        "b": {"type": "array", "items": {"type": "boolean"}},
        "c": {"$ref": "#/properties/a/items"},
        "d": {"$ref": "#/properties/b/items"},
    },
    "required": ["c", "d"],
}
NAMED_ROOT: dict[str, Any] = {  # a definition named as one of the grammar's own rules, holding itself
    "$ref": "#/$defs/root",
    "$defs": {"root": {"type": "object", "properties": {"kids": {"type": "array", "items": {"$ref": "#/$defs/root"}}}}},
}
ANY_NOTE: dict[str, Any] = {  # pydantic's `note: Any`
    "type": "object",
    "properties": {"note": {"title": "Note"}},
    "required": ["note"],
    "additionalProperties": False,
}


@pytest.mark.parametrize(
    ("schema", "taken", "refused"),
    [
        (TREE, ['{"leaf": {"v": 1}, "kids": [{"leaf": {"v": 2}, "kids": []}]}'], ['{"leaf": {"v": "x"}, "kids": []}']),
        (BY_PATH, ['{"c": 3, "d": true}'], ['{"c": true, "d": true}', '{"c": 3, "d": 4}']),
        (NAMED_ROOT, ['{"kids": [{"kids": []}, {}]}'], ['{"kids": [1]}']),
        (ANY_NOTE, ['{"note": null}', '{"note": "x"}', '{"note": [1, {"a": 2}]}', '{"note": 2.5}'], ["{}"]),
        ({}, ['{"a": [1]}', "{}"], ["[1]", '"text"']),  # the empty schema at the root: JSON mode, any object
    ],
)
async def test_a_schemas_grammar_takes_the_documents_it_allows(
    engine: Any, schema: dict[str, Any], taken: list[str], refused: list[str]
) -> None:
    for document in taken:
        assert _takes(engine, schema, document), document
    for document in refused:
        assert not _takes(engine, schema, document), document


async def test_a_forced_call_keeps_its_parameters_references(engine: Any) -> None:
    """A function's parameters refer to their own definitions (`#` is theirs, not the call schema's): the
    references still hold once the parameters sit inside the call schema (`$defs` and `definitions` apart), and a
    property may be named as a keyword (`default`)."""
    parameters: dict[str, Any] = {
        "type": "object",
        "properties": {
            "default": {"$ref": "#/$defs/A"},
            "old": {"$ref": "#/definitions/A"},
            "again": {"$ref": "#"},
        },
        "required": ["default", "old"],
        "$defs": {"A": {"type": "integer"}},
        "definitions": {"A": {"type": "boolean"}},
    }
    other = {"type": "object", "properties": {"x": {"$ref": "#/$defs/A"}}, "$defs": {"A": {"type": "string"}}}
    plan = ToolPlan(
        "required", [{"name": "f", "parameters": parameters}, {"name": "g", "parameters": other}], False, False
    )
    schema = call_schema(plan)
    arguments = {"default": 1, "old": True}
    assert _takes(engine, schema, json.dumps({"name": "f", "arguments": arguments}))
    nested = {**arguments, "again": {**arguments}}
    assert _takes(engine, schema, json.dumps({"name": "f", "arguments": nested}))
    assert not _takes(engine, schema, json.dumps({"name": "f", "arguments": {**arguments, "old": 1}}))
    assert _takes(engine, schema, json.dumps({"name": "g", "arguments": {"x": "s"}}))
    assert not _takes(engine, schema, json.dumps({"name": "g", "arguments": {"x": 1}}))
