"""Function calling for chat: which tools a request offers, how the model learns of them, how a forced call is
constrained to valid JSON, and how a reply becomes `tool_calls`.

A forced call (`tool_choice: required` or a named function) is generated under a JSON Schema grammar: the
output is `{"name": ..., "arguments": {...}}` for one of the offered functions, its arguments valid against
that function's parameters, so even a tiny model emits a call that parses. With `auto` the model writes
freely, in its family's markup, which `tool_formats` reads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any, Literal

import jsonschema
import referencing

from oasis.errors import invalid_request
from oasis.protocol.extensions import AllowedToolsChoice, ChatCompletionRequest

Mode = Literal["auto", "required", "named"]


@dataclass(frozen=True)
class ToolPlan:
    mode: Mode
    functions: list[dict[str, Any]]  # each {"name", "description"?, "parameters"?}
    parallel: bool
    legacy: bool  # the deprecated `functions` / `function_call` API: answer with `function_call`

    @property
    def forced(self) -> bool:
        return self.mode != "auto"

    @property
    def names(self) -> list[str]:
        return [function["name"] for function in self.functions]


def plan_tools(request: ChatCompletionRequest) -> ToolPlan | None:
    """None when the request offers no tools or turns them off (`none`)."""
    # Read the deprecated fields without tripping pydantic's deprecation warning on every request.
    legacy_functions = request.__dict__.get("functions") or []
    legacy = bool(legacy_functions) and not request.tools
    if legacy:
        functions = [f.model_dump(exclude_none=True) for f in legacy_functions]
        choice: Any = request.__dict__.get("function_call")
        choice = getattr(choice, "name", choice)  # {"name": ...} -> the name
        named = None if choice in (None, "auto", "none") else choice
        mode_choice = "none" if choice == "none" else ("named" if named else "auto")
    elif isinstance(request.tool_choice, AllowedToolsChoice):
        functions = _allowed(request, request.tool_choice)
        named, mode_choice = None, request.tool_choice.allowed_tools.mode
    else:
        functions = [tool.function.model_dump(exclude_none=True) for tool in request.tools or []]
        raw = request.tool_choice.root if request.tool_choice is not None else None
        named = raw.function.name if raw is not None and not isinstance(raw, str) else None
        mode_choice = "named" if named else (raw if isinstance(raw, str) else "auto")
    if not functions:
        if mode_choice in ("required", "named"):
            raise invalid_request("'tool_choice' needs 'tools' to choose from.", param="tool_choice")
        return None
    if mode_choice == "none":
        return None
    if named is not None:
        chosen = [f for f in functions if f["name"] == named]
        if not chosen:
            raise invalid_request(f"'{named}' is not one of the offered tools.", param="tool_choice")
        functions = chosen
    parallel = request.parallel_tool_calls is not False and not legacy and named is None
    return ToolPlan(mode=mode_choice, functions=functions, parallel=parallel, legacy=legacy)  # type: ignore[arg-type]


def _allowed(request: ChatCompletionRequest, choice: AllowedToolsChoice) -> list[dict[str, Any]]:
    """The offered functions that `allowed_tools` names: the only ones the model is shown and may call."""
    offered = {tool.function.name: tool.function.model_dump(exclude_none=True) for tool in request.tools or []}
    names = []
    for index, tool in enumerate(choice.allowed_tools.tools):
        function = tool.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if tool.get("type") != "function" or name not in offered:
            raise invalid_request(
                "Each of 'allowed_tools.tools' must name one of the offered functions, as "
                '{"type": "function", "function": {"name": ...}}.',
                param=f"tool_choice.allowed_tools.tools[{index}]",
            )
        names.append(name)
    return [function for name, function in offered.items() if name in names]


def tools_system_prompt(plan: ToolPlan) -> str:
    """How a chat template that knows nothing of tools still tells the model about them."""
    described = "\n".join(json.dumps(function, separators=(",", ":")) for function in plan.functions)
    return (
        "You can call these functions:\n"
        f"{described}\n"
        'To call one, reply with only a JSON object: {"name": <function name>, "arguments": <arguments object>}.'
    )


def call_schema(plan: ToolPlan) -> dict[str, Any]:
    """The JSON Schema that a forced reply must satisfy: one call, or a list of calls when parallel."""
    one_call = {
        "anyOf": [
            {
                "type": "object",
                "properties": {
                    "name": {"const": function["name"]},
                    "arguments": function.get("parameters") or {"type": "object"},
                },
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
            for function in plan.functions
        ]
    }
    if plan.parallel:
        return {"anyOf": [one_call, {"type": "array", "items": one_call, "minItems": 1}]}
    return one_call


def fits(plan: ToolPlan, name: str, arguments: str) -> bool:
    """Whether a call's arguments are valid for its function's parameters (a schema that is itself broken
    cannot be checked, so anything fits it)."""
    function = next((f for f in plan.functions if f["name"] == name), None)
    if function is None:
        return False
    validator = _validator(json.dumps(function.get("parameters") or {"type": "object"}, sort_keys=True))
    try:
        return validator is None or bool(validator.is_valid(json.loads(arguments)))
    except Exception:  # a `$ref` that leads nowhere (or off this machine): the schema cannot be checked
        return True


# `$ref`s resolve within the schema only: jsonschema's default registry fetches any URL it names, with urlopen and no
# timeout, on the event loop (a request could make the server wait on, or read without end from, any address).
_NO_RETRIEVAL: referencing.Registry[Any] = referencing.Registry()


# Parameter schemas longer than this are compiled each time rather than remembered (each may be as long as a
# request body).
_CACHED_SCHEMA_CHARS = 64 * 1024


def _validator(schema: str) -> Any:
    return _remembered_validator(schema) if len(schema) <= _CACHED_SCHEMA_CHARS else _compiled(schema)


def _compiled(schema: str) -> Any:
    parsed = json.loads(schema)
    kind = jsonschema.validators.validator_for(parsed)
    try:
        kind.check_schema(parsed)
    except jsonschema.SchemaError:
        return None
    return kind(parsed, registry=_NO_RETRIEVAL)


_remembered_validator = lru_cache(maxsize=256)(_compiled)


def only(plan: ToolPlan, name: str) -> ToolPlan:
    """The plan that forces one call to `name` (a call written again under its grammar)."""
    return replace(plan, mode="named", functions=[f for f in plan.functions if f["name"] == name], parallel=False)
