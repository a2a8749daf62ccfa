"""The built-in code_interpreter tool of responses: the model calls it as the `python` function with code; the
response runs the code in the sandboxed Python session of its container (as runs do: see oasis/sandbox), shows the
model what came out, and asks it again. The run is an output item of its own (`code_interpreter_call`: the code,
the container's id, and its outputs, logs and figures, when `include` asks for them).

A container is one of the Containers API's (services/containers.py): `{"type": "auto"}` makes a new one on the
first run (its `file_ids` copied in), and a later response that names its id (`container: "cntr_..."`) runs in its
session (variables kept while the session lives; its files always, placed again in a new session). Files the code
writes become the container's files, cited where the answer names them (`container_file_citation`)."""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
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
    """A response's code_interpreter tool: the container its code runs in, and for a new (`auto`) one the files
    copied into it when it is made."""

    container_id: str
    file_ids: list[str]
    param: str  # where the request has it: `tools[i]`
    auto: bool = False  # a new container, made on the first run
    memory_limit: str | None = None  # a new container's (checked by the containers service)


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
        memory_limit = container.get("memory_limit")
        return CodeTool(new_id("cntr_"), list(dict.fromkeys(file_ids)), param, auto=True, memory_limit=memory_limit)
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


def file_citations(text: str, files: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """`container_file_citation` annotations for each mention in `text` of a file the code wrote (its full path,
    `sandbox:` before it or not; `files`: the container files by their path)."""
    found = []
    for path, file in files.items():
        # the path ends where no name character follows: a full stop ending the sentence is not part of it
        for match in re.finditer(r"(?:sandbox:)?" + re.escape(path) + r"(?![\w-]|\.[\w-])", text):
            found.append(
                {
                    "type": "container_file_citation",
                    "container_id": file["container_id"],
                    "file_id": file["id"],
                    "filename": path.rsplit("/", 1)[-1],
                    "start_index": match.start(),
                    "end_index": match.end(),
                }
            )
    return sorted(found, key=lambda annotation: annotation["start_index"])


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
