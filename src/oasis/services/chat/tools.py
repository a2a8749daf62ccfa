"""Function calling for chat: which tools a request offers, how the model learns of them, how a forced call is
constrained to valid JSON, and how a reply becomes `tool_calls`.

A forced call (`tool_choice: required` or a named function) is generated under a JSON Schema grammar: the
output is `{"name": ..., "arguments": {...}}` for one of the offered functions, its arguments valid against
that function's parameters, so even a tiny model emits a call that parses. With `auto` the model writes
freely, in its family's markup, which `tool_formats` reads.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any, Literal

import jsonschema
import referencing

from oasis.engines.lark_grammar import LARK_SCHEMA_KEY, UnusableGrammar, read_lark
from oasis.engines.text import (
    BARE_CALL_OPENING,
    DSML,
    DSML_CALLS,
    GEMMA_CALL_END,
    GEMMA_CALL_OPENING,
    GLM_CALLS,
    HARMONY_CALL_OPENING,
    MINIMAX_M2_CALLS,
    MISTRAL_CALLS,
    QWEN3_CODER_CALLS,
    CallGrammar,
    NamedCalls,
    XmlCalls,
)
from oasis.errors import invalid_request
from oasis.protocol.extensions import AllowedToolsChoice, ChatCompletionRequest, CustomTool, NamedCustomToolChoice
from oasis.services.chat.tool_formats import (
    DEEPSEEK_CALL_BEGIN,
    DEEPSEEK_CALL_END,
    DEEPSEEK_CALLS_BEGIN,
    DEEPSEEK_CALLS_END,
    DEEPSEEK_TOOL_SEP,
    FORMATS,
    reads_bare_calls,
    reads_fenced_calls,
)

Mode = Literal["auto", "required", "named"]


@dataclass(frozen=True)
class CallKeys:
    """The keys of a call object as a family writes it: the name's, the arguments', and an id of the family's own
    (held as written, not kept: a call's id is oasis's to give), before the name and always (`id_first`: Command
    R's), or after the arguments and perhaps (Mistral Nemo's)."""

    name: str = "name"
    arguments: str = "arguments"
    call_id: str | None = None
    id_first: bool = False
    by_name: bool = False  # a call is `{"get_weather": {…}}` (Apertus's): the other keys are not written


# Llama 3's templates ask for `parameters`; Command R's write `tool_call_id`, `tool_name` and `parameters`; Mistral
# Nemo's (and 7B v0.3's) an `id` after the arguments
LLAMA_3_KEYS = CallKeys(arguments="parameters")
COMMAND_R_KEYS = CallKeys("tool_name", "parameters", "tool_call_id", id_first=True)
MISTRAL_LIST_KEYS = CallKeys(call_id="id")
APERTUS_KEYS = CallKeys(by_name=True)


@dataclass(frozen=True)
class ToolPlan:
    mode: Mode
    functions: list[dict[str, Any]]  # each {"name", "description"?, "parameters"?}
    parallel: bool
    legacy: bool  # the deprecated `functions` / `function_call` API: answer with `function_call`
    # Custom tools (after the 2.0.0 spec) among the functions: the model sees each as a function of one string,
    # `input` (constrained by the tool's regex or lark grammar, if it has one), and its calls answer as custom calls.
    custom: frozenset[str] = frozenset()

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
    elif isinstance(request.tool_choice, NamedCustomToolChoice):
        functions = _offered(request)
        named = request.tool_choice.custom.name
        if named not in _custom_names(request):
            raise invalid_request(f"'{named}' is not one of the offered custom tools.", param="tool_choice.custom.name")
        mode_choice = "named"
    else:
        functions = _offered(request)
        raw = request.tool_choice.root if request.tool_choice is not None else None
        named = raw.function.name if raw is not None and not isinstance(raw, str) else None
        if named is not None and named in _custom_names(request):
            raise invalid_request(
                f'\'{named}\' is a custom tool: force it with {{"type": "custom", "custom": {{"name": ...}}}}.',
                param="tool_choice",
            )
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
    custom = frozenset(_custom_names(request) & {function["name"] for function in functions})
    return ToolPlan(mode=mode_choice, functions=functions, parallel=parallel, legacy=legacy, custom=custom)  # type: ignore[arg-type]


def _offered(request: ChatCompletionRequest) -> list[dict[str, Any]]:
    """Every offered tool as a function: a custom tool as a function of its text `input`."""
    functions = []
    for index, tool in enumerate(request.tools or []):
        if isinstance(tool, CustomTool):
            functions.append(_as_function(tool, index))
        else:
            functions.append(tool.function.model_dump(exclude_none=True))
    names = [function["name"] for function in functions]
    if any(tool.type == "custom" for tool in request.tools or []) and len(set(names)) < len(names):
        # a custom tool's calls are told from a function's by name alone
        raise invalid_request("A custom tool and another tool share a name: each tool needs its own.", param="tools")
    return functions


def _custom_names(request: ChatCompletionRequest) -> set[str]:
    return {tool.custom.name for tool in request.tools or [] if isinstance(tool, CustomTool)}


def _as_function(tool: CustomTool, index: int) -> dict[str, Any]:
    """A custom tool as the function a local model is shown and called under: one string, `input`, which a regex
    grammar constrains as a JSON Schema pattern (whole-string match), and a lark grammar through its own keyword
    (LARK_SCHEMA_KEY), which the engine turns into its grammar and `fits` checks."""
    custom = tool.custom
    text: dict[str, Any] = {"type": "string", "description": "The tool's input, as free text."}
    grammar = custom.format.grammar if custom.format is not None and custom.format.type == "grammar" else None
    if grammar is not None and grammar.syntax == "lark":
        try:
            read_lark(grammar.definition)
        except UnusableGrammar as exc:
            raise invalid_request(
                f"Invalid lark grammar: {exc}.",
                param=f"tools[{index}].custom.format.grammar.definition",
                code="invalid_grammar",
            ) from None
        text = {
            "type": "string",
            "description": "The tool's input, in its lark grammar.",
            LARK_SCHEMA_KEY: grammar.definition,
        }
    elif grammar is not None:
        param = f"tools[{index}].custom.format.grammar"
        whole = f"^(?:{grammar.definition})$"  # the input is all of it; the definition's own anchors change nothing
        try:
            re.compile(whole)
        except re.error as exc:
            raise invalid_request(f"Invalid regex grammar: {exc}.", param=f"{param}.definition") from None
        text = {"type": "string", "pattern": whole, "description": "The tool's input, in its grammar."}
    function: dict[str, Any] = {
        "name": custom.name,
        "parameters": {"type": "object", "properties": {"input": text}, "required": ["input"]},
    }
    if custom.description:
        function["description"] = custom.description
    return function


def grammar_inputs(request: ChatCompletionRequest) -> list[tuple[str, dict[str, Any]]]:
    """Each custom tool's grammar, as the `input` schema a model is held to, and the param that names it (so that
    a grammar an engine cannot hold is refused naming its tool)."""
    found = []
    for index, tool in enumerate(request.tools or []):
        if isinstance(tool, CustomTool) and tool.custom.format is not None and tool.custom.format.type == "grammar":
            schema = _as_function(tool, index)["parameters"]["properties"]["input"]
            found.append((f"tools[{index}].custom.format.grammar.definition", schema))
    return found


def custom_input(arguments: str) -> str:
    """A custom tool's input, from the arguments the model wrote for it: their `input`, or the text as written
    when it is not the object asked for."""
    try:
        value = json.loads(arguments)
    except json.JSONDecodeError:
        return arguments
    if isinstance(value, dict) and isinstance(value.get("input"), str):
        return str(value["input"])
    return arguments


def _allowed(request: ChatCompletionRequest, choice: AllowedToolsChoice) -> list[dict[str, Any]]:
    """The offered tools that `allowed_tools` names: the only ones the model is shown and may call."""
    offered = {function["name"]: function for function in _offered(request)}
    custom = _custom_names(request)
    names = []
    for index, tool in enumerate(choice.allowed_tools.tools):
        kind = tool.get("type")
        named = tool.get(kind) if kind in ("function", "custom") else None
        name = named.get("name") if isinstance(named, dict) else None
        if name not in offered or (kind == "custom") != (name in custom):
            raise invalid_request(
                "Each of 'allowed_tools.tools' must name one of the offered tools, as "
                '{"type": "function", "function": {"name": ...}} or {"type": "custom", "custom": {"name": ...}}.',
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


def call_schema(plan: ToolPlan, keys: CallKeys = CallKeys()) -> dict[str, Any]:
    """The JSON Schema that a forced reply must satisfy: one call, or a list of calls when parallel (its keys as
    `keys` name them: a family's own calls may name them otherwise). A function's
    parameters keep their own `$ref`s (a pydantic model's `$defs`): `#` is now the call schema's root, so they point
    into its `$defs`, where the parameters' definitions move (llama.cpp's converter reads no `$defs` beside a
    `$ref`, and pydantic puts a recursive model's `$ref` at the root)."""
    defs: dict[str, Any] = {}
    alternatives = []
    for index, function in enumerate(plan.functions):
        arguments = function.get("parameters") or {"type": "object"}
        if _has_local_ref(arguments):
            arguments, moved = _definitions_moved(arguments, f"parameters-{index}")
            defs.update(moved)
        properties = {keys.name: {"const": function["name"]}, keys.arguments: arguments}
        required = [keys.name, keys.arguments]
        if keys.by_name:
            properties, required = {function["name"]: arguments}, [function["name"]]
        elif keys.call_id is not None and keys.id_first:
            properties, required = {keys.call_id: {"type": "string"}, **properties}, [keys.call_id, *required]
        elif keys.call_id is not None:
            properties[keys.call_id] = {"type": "string"}
        alternatives.append(
            {"type": "object", "properties": properties, "required": required, "additionalProperties": False}
        )
    one_call: dict[str, Any] = {"anyOf": alternatives}
    schema = {"anyOf": [one_call, {"type": "array", "items": one_call, "minItems": 1}]} if plan.parallel else one_call
    return {**schema, "$defs": defs} if defs else schema


_DEFINITIONS = ("$defs", "definitions")
# Keywords whose values are data (a `{"$ref": ...}` there is a value the output holds, not a reference), and those
# whose values map names to schemas (where a property may be named `default`)
_DATA_KEYWORDS = frozenset({"const", "enum", "default", "examples"})
_NAMED_SCHEMAS = frozenset({"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"})


def _has_local_ref(node: Any, names: bool = False) -> bool:
    """Whether a schema (`names`: a map of names to schemas) holds a `$ref` into the document it is in."""
    if isinstance(node, list):
        return any(_has_local_ref(item) for item in node)
    if not isinstance(node, dict):
        return False
    ref = None if names else node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#"):
        return True
    return any(
        _has_local_ref(value, not names and key in _NAMED_SCHEMAS)
        for key, value in node.items()
        if names or key not in _DATA_KEYWORDS
    )


def _definitions_moved(parameters: dict[str, Any], key: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The parameters without their definitions, and the call schema's `$defs` entries that hold them (`key` for
    the parameters themselves, `key-defs-name` or `key-definitions-name` for each definition), every local `$ref`
    pointing there."""

    def moved(ref: str) -> str:
        for definitions in _DEFINITIONS:
            if ref.startswith(f"#/{definitions}/"):
                return f"#/$defs/{key}-{definitions.lstrip('$')}-{ref[len(definitions) + 3 :]}"
        return f"#/$defs/{key}{ref[1:]}"

    body = _refs_rewritten({name: value for name, value in parameters.items() if name not in _DEFINITIONS}, moved)
    entries = {key: body}
    for definitions in _DEFINITIONS:
        held = parameters.get(definitions)
        for name, definition in held.items() if isinstance(held, dict) else ():
            entries[f"{key}-{definitions.lstrip('$')}-{name}"] = _refs_rewritten(definition, moved)
    return body, entries


def _refs_rewritten(node: Any, moved: Callable[[str], str], names: bool = False) -> Any:
    """A copy of a schema (`names`: a map of names to schemas) with its local `$ref`s as `moved` writes them."""
    if isinstance(node, list):
        return [_refs_rewritten(item, moved) for item in node]
    if not isinstance(node, dict):
        return node
    copied = {
        key: value
        if not names and key in _DATA_KEYWORDS
        else _refs_rewritten(value, moved, not names and key in _NAMED_SCHEMAS)
        for key, value in node.items()
    }
    ref = None if names else node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#"):
        copied["$ref"] = moved(ref)
    return copied


# Names a regex may hold as they are (OpenAI's own rule for function names)
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
# Families whose calls are inside tags: JSON (a call or a list of them, its keys as the family's `CallKeys` name
# them), XML where the template teaches it (_XML_CALLS), or the family's own markup (_MARKUP_CALLS)
_TAGGED: dict[str, tuple[str, str | None]] = {
    "hermes": ("<tool_call>", "</tool_call>"),
    "seed_oss": ("<seed:tool_call>", "</seed:tool_call>"),
    "glm": ("<tool_call>", "</tool_call>"),
    "ling3": ("<tool_call>", "</tool_call>"),
    "minimax_m2": ("<minimax:tool_call>", "</minimax:tool_call>"),
    "nemotron": ("<TOOLCALL>", "</TOOLCALL>"),
    "tool_calls_tags": ("<tool_calls>", "</tool_calls>"),
    "granite": ("<|tool_call|>", None),
    "kimi_k2": ("<|tool_calls_section_begin|>", "<|tool_calls_section_end|>"),
    "deepseek": (DEEPSEEK_CALLS_BEGIN, DEEPSEEK_CALLS_END),
    "dsml": (f"<{DSML}function_calls>", f"</{DSML}function_calls>"),
    "command_r": ("<|START_ACTION|>", "<|END_ACTION|>"),  # Command R7B's and Command A's: a list of calls
    "apertus": ("<|tools_prefix|>", "<|tools_suffix|>"),  # a list of `{"name": {…}}`
}
# DeepSeek V4's templates wrap DSML calls in `tool_calls` rather than V3.2's `function_calls`
_DSML_V4_TAGS = (f"<{DSML}tool_calls>", f"</{DSML}tool_calls>")
# Templates that teach calls as XML inside the family's tags (`<function=name>` and `<parameter=key>`: Qwen3-Coder,
# Qwen3.5, Nemotron 3 Nano, Step 3.5 in Hermes's tags, Seed-OSS in its own): what follows their tag is held to that
# XML, in the families whose readers read it so
_XML_CALLS = "<parameter="
_XML_FAMILIES = frozenset({"hermes", "seed_oss"})
# Families whose own calls are always markup of their own in their tags: GLM's and Ling 3's `name<arg_key>…`,
# MiniMax-M2's `<invoke name=…>`, DeepSeek V3.2's and V4's DSML (`invoke` too, each value marked text or JSON)
_MARKUP_CALLS = {"glm": GLM_CALLS, "ling3": GLM_CALLS, "minimax_m2": MINIMAX_M2_CALLS, "dsml": DSML_CALLS}
# Families whose calls are each the function's name between markers of their own, its arguments JSON (Kimi K2's
# `functions.name:0` between its call's tokens; DeepSeek V3.1's name, its tool-sep token and the arguments, or R1's
# `function`, tool-sep, the name and the arguments in a ```json fence, where the template writes them so)
KIMI_K2_CALLS = NamedCalls(
    "<|tool_call_argument_begin|>",
    each="<|tool_call_begin|>",
    prefix="functions.",
    call_id=":",
    id_characters="0-9",
    closing="<|tool_call_end|>",
)
DEEPSEEK_CALLS = NamedCalls(DEEPSEEK_TOOL_SEP, each=DEEPSEEK_CALL_BEGIN, closing=DEEPSEEK_CALL_END)
DEEPSEEK_R1_CALLS = NamedCalls(
    "\n```json\n",
    each=DEEPSEEK_CALL_BEGIN,
    prefix="function" + DEEPSEEK_TOOL_SEP,
    arguments_end="```",  # after the line break the arguments' JSON may end with, as R1 writes it or not
    closing=DEEPSEEK_CALL_END,
)
# GigaChat 3's call, a message of the role `function call` (as its template writes one), and 3.1's marker token:
# each followed by a JSON call
_GIGACHAT_CALL_MESSAGE = "<|message_sep|>\n\nfunction call<|role_sep|>\n"
_GIGACHAT_CALL_TOKEN = "<|function_call|>"
# Pythonic calls' tags: LFM2's, and Llama 4's
_PYTHON_TAGS = (("<|tool_call_start|>", "<|tool_call_end|>"), ("<|python_start|>", "<|python_end|>"))
# Mistral's templates write `[TOOL_CALLS]` then a JSON list of calls (Nemo, 7B v0.3) or `name[ARGS]{…}` (Small 3.2
# with `[CALL_ID]id` before `[ARGS]`, Ministral 3, Devstral, Magistral), one opening per call
_MISTRAL_JSON_LIST = re.compile(r"\[TOOL_CALLS\] ?\[")


def call_grammar(
    plan: ToolPlan,
    tool_format: str,
    thinking: tuple[str, str] | None,
    thinking_open: bool,
    *,
    noted: bool,
    template: str = "",
    thinking_ended_by: tuple[str, ...] = (),
) -> CallGrammar | None:
    """For a reply that may call functions (`tool_choice` auto): the grammar that holds a call from where it opens,
    for the families whose calls are JSON in tags (`<tool_call>`, Nemotron's, Granite's, GigaChat's, Command R's and
    Apertus's, each with its `CallKeys`; Mistral's `[TOOL_CALLS]` as the template writes it: a JSON list, or
    `name[ARGS]{…}`), whose calls are markup (XML where the `template` teaches it, GLM's, MiniMax-M2's and DSML's),
    Kimi K2's and DeepSeek's call tokens, harmony's messages addressed to a function (gpt-oss), Gemma 4's
    `call:name{…}` in its own syntax, LFM2's pythonic list (Llama 4's tags where the template writes them), or bare
    where the system note (`noted`: `tools_system_prompt`) asks for them so; and in every family that reads them
    (Llama 3's own, its arguments `parameters`), a call in a ```json fence and a bare call that opens the answer,
    once they name an offered function (not where the family's own calls are written otherwise: Command R's,
    Apertus's, LFM2's). None where calls are read as written (custom tools, the deprecated `functions`, a family that
    reads none of these and holds none of its own)."""
    if plan.forced or plan.legacy or plan.custom or not all(_PLAIN_NAME.fullmatch(name) for name in plan.names):
        return None
    tags: tuple[str, str | None] | None = None
    opening: str | None = None
    at_start = False
    keys = {"command_r": COMMAND_R_KEYS, "apertus": APERTUS_KEYS}.get(tool_format, CallKeys())
    named: NamedCalls | None = None
    harmony = tool_format == "harmony"
    gemma4 = tool_format == "gemma4"
    pythonic = tool_format == "pythonic"
    if tool_format == "kimi_k2":
        named = KIMI_K2_CALLS
    elif tool_format == "deepseek":
        # R1's templates write the arguments in a fence, V3.1's bare (a template of neither form gets V3.1's)
        named = DEEPSEEK_R1_CALLS if "```json" in template else DEEPSEEK_CALLS
    xml: XmlCalls | None = _MARKUP_CALLS.get(tool_format)
    if tool_format in _XML_FAMILIES and _XML_CALLS in template:
        xml = QWEN3_CODER_CALLS
    if tool_format in _TAGGED and (xml is not None or _XML_CALLS not in template):
        tags = _TAGGED[tool_format]
        if tool_format == "dsml" and "function_calls>" not in template and "tool_calls>" in template:
            tags = _DSML_V4_TAGS
        opening = re.escape(tags[0])
    elif tool_format == "mistral" and _MISTRAL_JSON_LIST.search(template):
        tags, keys = ("[TOOL_CALLS]", None), MISTRAL_LIST_KEYS
        opening = re.escape(tags[0])
    elif tool_format == "mistral" and "[ARGS]" in template:
        tags, named = ("[TOOL_CALLS]", None), MISTRAL_CALLS
        opening = re.escape(tags[0])
    elif harmony:
        # addressed messages, not tags: a call may be addressed from the analysis channel too, which is no
        # thinking block of tags
        opening, thinking = HARMONY_CALL_OPENING, None
    elif gemma4:
        tags = (GEMMA_CALL_OPENING, GEMMA_CALL_END)
        opening = re.escape(GEMMA_CALL_OPENING)
    elif tool_format == "gigachat":
        tags = (_GIGACHAT_CALL_TOKEN if _GIGACHAT_CALL_TOKEN in template else _GIGACHAT_CALL_MESSAGE, None)
        opening = re.escape(tags[0])
    elif pythonic:
        # LFM2's tags, or Llama 4's where the template writes them
        tags = _PYTHON_TAGS[1] if _PYTHON_TAGS[1][0] in template else _PYTHON_TAGS[0]
        opening = re.escape(tags[0])
    elif tool_format == "json" and noted:
        # The note asks for the call (or a list of them) as the answer, as the history shows earlier calls: an
        # answer that opens so is taken for a call, whatever name follows
        opening, at_start = BARE_CALL_OPENING, True
    elif tool_format == "llama3":
        # Llama 3's own calls are bare, their arguments `parameters`: held below as a bare call in any family is,
        # once it names an offered function whole (an answer that is other JSON stays text)
        keys = LLAMA_3_KEYS
    # (a fenced or a bare call opens at its `"name"`: where the family's own calls name theirs otherwise, the calls
    # held are the family's own only, the others read whole at the end)
    # (and pythonic calls' values, whose grammar reads Python's literals, which no JSON call holds)
    own_only = keys.name != "name" or keys.by_name or pythonic
    fenced = reads_fenced_calls(FORMATS[tool_format]) and not own_only
    bare = reads_bare_calls(FORMATS[tool_format]) and opening != BARE_CALL_OPENING and not own_only
    if opening is None and not fenced and not bare:
        return None
    return CallGrammar(
        call_schema(replace(plan, parallel=False), keys),
        opening,
        tags,
        fenced=fenced,
        bare=bare,
        named=named,
        xml=xml,
        harmony=harmony,
        gemma4=gemma4,
        pythonic=pythonic,
        keyed_by_name=keys.by_name,
        repeats=plan.parallel,
        at_start=at_start,
        thinking=thinking,
        thinking_open=thinking_open,
        thinking_ended_by=thinking_ended_by,
        names=tuple(plan.names),
    )


def fits(plan: ToolPlan, name: str, arguments: str) -> bool:
    """Whether a call's arguments are valid for its function's parameters, and a custom tool's input for its
    grammar, regex or lark, however the model wrote it (a schema that is itself broken cannot be checked, so
    anything fits it)."""
    function = next((f for f in plan.functions if f["name"] == name), None)
    if function is None:
        return False
    lark = _lark_definition(function) if name in plan.custom else None
    if lark is not None:
        return read_lark(lark).accepts(custom_input(arguments))
    validator = _validator(json.dumps(function.get("parameters") or {"type": "object"}, sort_keys=True))
    try:
        value = json.loads(arguments)
    except json.JSONDecodeError:
        if name not in plan.custom:
            return True  # a function's arguments that are not JSON cannot be checked: kept as written
        value = {"input": arguments}  # a custom tool's input written as bare text
    try:
        return validator is None or bool(validator.is_valid(value))
    except Exception:  # a `$ref` that leads nowhere (or off this machine): the schema cannot be checked
        return True


def _lark_definition(function: dict[str, Any]) -> str | None:
    """The lark grammar a custom tool's input is held to (JSON Schema validators pass over the keyword)."""
    definition = function["parameters"]["properties"]["input"].get(LARK_SCHEMA_KEY)
    return definition if isinstance(definition, str) else None


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
