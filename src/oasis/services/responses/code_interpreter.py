"""The built-in code_interpreter tool of responses: the model calls it as the `python` function with code; the
response runs the code in the sandboxed Python session of its container (as runs do: see oasis/sandbox), shows the
model what came out, and asks it again. The run is an output item of its own (`code_interpreter_call`: the code,
the container's id, and its outputs, logs and figures, when `include` asks for them).

A container here is a sandbox session: `{"type": "auto"}` starts a new one (its `file_ids` placed in /mnt/data),
and a later response that names its id (`container: "cntr_..."`) runs in the same session while it lives (its
variables and files kept); one that has ended, or an id never made here, starts an empty one."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

from oasis.errors import invalid_request
from oasis.services.assistants import code_interpreter as sandbox_tool
from oasis.services.assistants.code_interpreter import CodeCall
from oasis.services.responses.file_search import refuse_function_named
from oasis.storage.clock import new_id

TOOL_TYPE = sandbox_tool.TOOL_TYPE
FUNCTION_NAME = sandbox_tool.FUNCTION_NAME  # `python`: the name the model calls it by
FUNCTION = sandbox_tool.FUNCTION  # as runs offer it
code_of = sandbox_tool.code_of
# The `include` value that puts a run's outputs on its output item.
INCLUDE_OUTPUTS = "code_interpreter_call.outputs"
# Code runs one response makes before it must answer (as a run's).
MAX_CODE_RUNS = 2
# What the model is told of a call past that most.
NOT_RUN = f"Not run: a response runs code at most {MAX_CODE_RUNS} times."


@dataclass(frozen=True)
class CodeTool:
    """A response's code_interpreter tool: the container (sandbox session) its code runs in, and the files placed
    there first (name in /mnt/data -> file id; filled in when the request is planned)."""

    container_id: str
    file_ids: list[str]
    param: str  # where the request has it: `tools[i]`
    inputs: dict[str, str] = field(default_factory=dict)


def code_tool(tools: list[dict[str, Any]] | None) -> CodeTool | None:
    """The request's code_interpreter tool, checked, or None."""
    code: CodeTool | None = None
    for index, tool in enumerate(tools or []):
        if isinstance(tool, dict) and tool.get("type") == TOOL_TYPE:
            if code is not None:
                raise invalid_request("Give at most one code_interpreter tool.", param=f"tools[{index}]")
            code = _checked(tool, f"tools[{index}]")
    if code is not None:
        refuse_function_named(tools or [], FUNCTION_NAME, TOOL_TYPE)
    return code


def _checked(tool: dict[str, Any], param: str) -> CodeTool:
    container = tool.get("container")
    if isinstance(container, str) and container:
        return CodeTool(container, [], param)
    if isinstance(container, dict) and container.get("type") == "auto":
        file_ids = container.get("file_ids") or []
        if not isinstance(file_ids, list) or not all(isinstance(file_id, str) for file_id in file_ids):
            raise invalid_request("`file_ids` is a list of file ids.", param=f"{param}.container.file_ids")
        return CodeTool(new_id("cntr_"), list(dict.fromkeys(file_ids)), param)
    raise invalid_request(
        'The code_interpreter tool needs `container`: `{"type": "auto"}` (with `file_ids` to place) or the id of '
        "an earlier response's container.",
        param=f"{param}.container",
    )


def session_key(project_id: str, container_id: str) -> str:
    """The sandbox session of a project's container (another project's container of the same id is another)."""
    return f"{project_id}/{container_id}"


def call_item(
    item_id: str, code: str, container_id: str, status: str, outputs: list[dict[str, Any]] | None
) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "code_interpreter_call",
        "status": status,
        "code": code,
        "container_id": container_id,
        "outputs": outputs,
    }


def outputs_of(call: CodeCall) -> list[dict[str, Any]]:
    """A run's outputs as the item carries them: its logs, and its figures as PNG data URLs."""
    outputs = [{"type": "logs", "logs": output["logs"]} for output in call.outputs if output["type"] == "logs"]
    for image in call.images:
        outputs.append({"type": "image", "url": "data:image/png;base64," + base64.b64encode(image).decode()})
    return outputs


def text_for_model(call: CodeCall) -> str:
    return sandbox_tool.output_for_model(call.stored())


def tool_call(item: dict[str, Any]) -> dict[str, Any]:
    """A code_interpreter_call item as the chat tool call the model made."""
    arguments = json.dumps({"code": item.get("code") or ""})
    return {"id": item["id"], "type": "function", "function": {"name": FUNCTION_NAME, "arguments": arguments}}


def sent_back_text(outputs: list[dict[str, Any]]) -> str:
    """What an earlier run, sent back as an input item with its outputs, shows the model."""
    parts = [
        output["logs"][-sandbox_tool.OUTPUT_CHARS_FOR_MODEL :]
        if output.get("type") == "logs"
        else "[an image was shown to the user]"
        for output in outputs
        if isinstance(output, dict) and (output.get("type") == "image" or isinstance(output.get("logs"), str))
    ]
    return "\n".join(part for part in parts if part) or "(no output)"
