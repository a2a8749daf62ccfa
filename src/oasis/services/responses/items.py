"""The Responses API's items read as chat messages, and a chat answer written as output items.

Input items: messages (text, image and file parts), earlier `function_call` items and their
`function_call_output`s, earlier outputs sent back whole (messages of `output_text`, reasoning, which a model
here does not read back, file searches and code runs with the results and outputs they carry), and compaction items
(compaction.py). Tools: `function`
and `custom` tools, flat as this API writes them (the built-in tools are read in file_search.py and
code_interpreter.py).
"""

from __future__ import annotations

import json
from typing import Any

from oasis.errors import invalid_request
from oasis.services.responses import code_interpreter, compaction, file_search, image_generation, mcp
from oasis.storage.clock import new_id

_ROLES = ("user", "system", "developer", "assistant")
# The `include` value that gives an answer's text its tokens' logprobs.
INCLUDE_LOGPROBS = "message.output_text.logprobs"
# An image part naming a project's file (`input_image` by `file_id`) as chat reads it until a response reads the
# file (what is stored keeps the id, not the bytes).
FILE_IMAGE = "oasis-file:"
# The most characters of an earlier search's results, sent back as an input item, the model reads again.
SENT_BACK_RESULT_CHARS = 16_000


def _part(part: Any, param: str) -> dict[str, Any]:
    """An input content part as chat's."""
    if not isinstance(part, dict):
        raise invalid_request("A content part is an object with a `type`.", param=param)
    kind = part.get("type")
    if kind in ("input_text", "output_text", "text"):
        if not isinstance(part.get("text"), str):
            raise invalid_request("A text part needs `text`.", param=f"{param}.text")
        return {"type": "text", "text": part["text"]}
    if kind == "refusal":
        return {"type": "text", "text": str(part.get("refusal") or "")}
    if kind == "input_image":
        url = part.get("image_url")
        if url is None and isinstance(part.get("file_id"), str) and part["file_id"]:
            url = FILE_IMAGE + part["file_id"]  # read when the response is planned; stored by its id
        if not isinstance(url, str):
            raise invalid_request(
                "An input_image part needs `image_url` (a URL or a data URL) or `file_id`.", param=f"{param}.image_url"
            )
        return {"type": "image_url", "image_url": {"url": url, "detail": part.get("detail") or "auto"}}
    if kind == "input_file":
        file = {key: part[key] for key in ("file_id", "file_data", "filename") if part.get(key) is not None}
        if "file_id" not in file and "file_data" not in file:
            raise invalid_request("An input_file part needs `file_id` or `file_data`.", param=param)
        return {"type": "file", "file": file}
    raise invalid_request(f"Content parts of type {kind!r} are not supported.", param=f"{param}.type")


def _message(item: dict[str, Any], param: str) -> dict[str, Any]:
    role = item.get("role")
    if role not in _ROLES:
        raise invalid_request(f"A message's role is one of {list(_ROLES)}.", param=f"{param}.role")
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        raise invalid_request("A message's content is text or a list of parts.", param=f"{param}.content")
    parts = [_part(part, f"{param}.content[{index}]") for index, part in enumerate(content)]
    if role != "user" and any(part["type"] != "text" for part in parts):
        raise invalid_request(f"Only user messages hold images and files, not {role} ones.", param=f"{param}.content")
    return {"role": role, "content": parts}


def _output_text(output: Any, param: str) -> str:
    """A function call's output: text, or text parts (what LangChain and the Agents SDK send for rich outputs)."""
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        texts = []
        for index, part in enumerate(output):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind not in ("input_text", "output_text", "text") or not isinstance(part.get("text"), str):
                raise invalid_request(
                    f"A function call's output holds text parts here, not {kind!r}.", param=f"{param}[{index}]"
                )
            texts.append(part["text"])
        return "\n".join(texts)
    return json.dumps(output)


def chat_messages(items: list[dict[str, Any]], param: str = "input") -> list[dict[str, Any]]:
    """Items as chat messages: consecutive function calls become one assistant message with their tool calls."""
    messages: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        where = f"{param}[{index}]"
        if not isinstance(item, dict):
            raise invalid_request("An input item is an object.", param=where)
        kind = item.get("type", "message")
        if kind == "message":
            messages.append(_message(item, where))
        elif kind == "function_call":
            for key in ("call_id", "name", "arguments"):
                if not isinstance(item.get(key), str):
                    raise invalid_request(f"A function_call item needs `{key}`.", param=f"{where}.{key}")
            call = {
                "id": item["call_id"],
                "type": "function",
                "function": {"name": item["name"], "arguments": item["arguments"]},
            }
            _add_call(messages, call)
        elif kind == "custom_tool_call":
            for key in ("call_id", "name", "input"):
                if not isinstance(item.get(key), str):
                    raise invalid_request(f"A custom_tool_call item needs `{key}`.", param=f"{where}.{key}")
            custom = {"id": item["call_id"], "type": "custom", "custom": {"name": item["name"], "input": item["input"]}}
            _add_call(messages, custom)
        elif kind in ("function_call_output", "custom_tool_call_output"):
            if not isinstance(item.get("call_id"), str):
                raise invalid_request(f"A {kind} item needs `call_id`.", param=f"{where}.call_id")
            text = _output_text(item.get("output"), f"{where}.output")
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": text})
        elif kind == "reasoning":
            continue  # an earlier answer's thinking: chat templates drop it from the history too
        elif kind in ("mcp_list_tools", "mcp_approval_request", "mcp_approval_response"):
            continue  # an earlier listing, or a call not made (yet): nothing the model said or read
        elif kind == "mcp_call":
            if not isinstance(item.get("id"), str) or not isinstance(item.get("name"), str):
                raise invalid_request("An mcp_call item needs `id` and `name`.", param=where)
            _add_call(messages, mcp.tool_call(item))
            messages.append({"role": "tool", "tool_call_id": item["id"], "content": mcp.result_text(item)})
        elif kind == "file_search_call":
            # an earlier search sent back: what it found, when the item carries its results (`include`)
            if not isinstance(item.get("id"), str):
                raise invalid_request("A file_search_call item needs `id`.", param=f"{where}.id")
            results = item.get("results")
            if not isinstance(results, list) or not results:
                continue
            _add_call(messages, file_search.tool_call(item))
            text = file_search.results_for_model(
                [_result(result, f"{where}.results[{number}]") for number, result in enumerate(results)],
                SENT_BACK_RESULT_CHARS,
            )
            messages.append({"role": "tool", "tool_call_id": item["id"], "content": text})
        elif kind == "code_interpreter_call":
            # an earlier run of code sent back: its code, and what came out when the item carries its outputs
            if not isinstance(item.get("id"), str):
                raise invalid_request("A code_interpreter_call item needs `id`.", param=f"{where}.id")
            outputs = item.get("outputs")
            _add_call(messages, code_interpreter.tool_call(item))
            # without its outputs (OpenAI's default), the code is still what the model ran
            text = code_interpreter.sent_back_text(outputs) if isinstance(outputs, list) else "(output not sent back)"
            messages.append({"role": "tool", "tool_call_id": item["id"], "content": text})
        elif kind == "image_generation_call":
            # an earlier image sent back: the call the model made, and that it was shown (the image is not read)
            if not isinstance(item.get("id"), str):
                raise invalid_request("An image_generation_call item needs `id`.", param=f"{where}.id")
            _add_call(messages, image_generation.tool_call(item))
            messages.append(
                {"role": "tool", "tool_call_id": item["id"], "content": image_generation.sent_back_text(item)}
            )
        elif kind == compaction.TOOL_TYPE:
            messages.append(compaction.message(item, where))  # an earlier conversation, compacted: its summary
        else:
            raise invalid_request(f"Input items of type {kind!r} are not supported.", param=f"{where}.type")
    return messages


def _add_call(messages: list[dict[str, Any]], call: dict[str, Any]) -> None:
    """A tool call of the assistant's turn: the last message when it is the assistant's (what it said, then its
    calls), else a new one."""
    last = messages[-1] if messages else None
    if last is None or last["role"] != "assistant":
        last = {"role": "assistant", "content": None}
        messages.append(last)
    last.setdefault("tool_calls", []).append(call)


def _result(result: Any, param: str) -> dict[str, Any]:
    if not isinstance(result, dict) or not isinstance(result.get("text"), str):
        raise invalid_request("A file_search result needs `text`.", param=f"{param}.text")
    return {"filename": result.get("filename") or "file", "text": result["text"]}


def listed_items(request_input: str | list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """A response's input as `input_items.list` answers it: each item with an id; text input is one user message."""
    if request_input is None:
        return []
    if isinstance(request_input, str):
        request_input = [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": request_input}]}
        ]
    listed: list[dict[str, Any]] = []
    seen: set[str] = set()
    for item in request_input:
        kind = item.get("type", "message")
        if item.get("id") in seen or item.get("id") == "__fake_id__":  # ids page the list: each must be its own
            item = {key: value for key, value in item.items() if key != "id"}
        if kind == "message":
            content = item.get("content")
            if isinstance(content, str):
                text_type = "output_text" if item.get("role") == "assistant" else "input_text"
                content = [{"type": text_type, "text": content}]
            listed.append(
                {
                    "id": item.get("id") or new_id("msg_"),
                    "type": "message",
                    "role": item.get("role"),
                    "content": content,
                    "status": item.get("status") or "completed",
                }
            )
        else:
            prefix = {
                "function_call": "fc_",
                "function_call_output": "fco_",
                "custom_tool_call": "ctc_",
                "custom_tool_call_output": "ctco_",
                "reasoning": "rs_",
                "file_search_call": "fs_",
                "code_interpreter_call": "ci_",
                "image_generation_call": "ig_",
                "mcp_list_tools": "mcpl_",
                "mcp_call": "mcp_",
                "mcp_approval_request": "mcpr_",
                "mcp_approval_response": "mcpa_",
                compaction.TOOL_TYPE: "cmp_",
            }.get(kind, "item_")
            listed.append({"status": "completed", **item, "id": item.get("id") or new_id(prefix), "type": kind})
        seen.add(listed[-1]["id"])
    return listed


def user_message_items(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The user messages of a conversation (chat messages, as `chat_messages` reads them) as input message items
    again (what a compacted output keeps whole), but those that were an earlier compaction (the new one holds it)."""
    items = []
    for chat in messages:
        if chat.get("role") != "user" or compaction.is_summary(chat.get("content")):  # an earlier compaction's
            continue
        content = chat.get("content")
        parts = (
            [{"type": "input_text", "text": content}]
            if isinstance(content, str)
            else list(map(_input_part, content or []))
        )
        items.append({"id": new_id("msg_"), "type": "message", "status": "completed", "role": "user", "content": parts})
    return items


def _input_part(part: dict[str, Any]) -> dict[str, Any]:
    """A chat content part as the input part it was read from (`_part`'s inverse)."""
    if part.get("type") == "image_url":
        image = part.get("image_url") or {}
        url, detail = str(image.get("url") or ""), image.get("detail") or "auto"
        if url.startswith(FILE_IMAGE):
            return {"type": "input_image", "file_id": url[len(FILE_IMAGE) :], "detail": detail}
        return {"type": "input_image", "image_url": url, "detail": detail}
    if part.get("type") == "file":
        return {"type": "input_file", **(part.get("file") or {})}
    return {"type": "input_text", "text": str(part.get("text") or "")}


def chat_tools(tools: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    """`function` and `custom` tools as chat writes them; built-in tools are refused by name."""
    if not tools:
        return None  # chat refuses an empty list (OpenAI's too, for a model routed there)
    chat = []
    for index, tool in enumerate(tools):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind not in ("function", "custom"):
            raise invalid_request(
                f"Tools of type {kind!r} are not supported in responses here; function, custom, file_search, "
                "code_interpreter and image_generation tools are.",
                param=f"tools[{index}].type",
            )
        if not isinstance(tool.get("name"), str):
            raise invalid_request(f"A {kind} tool needs `name`.", param=f"tools[{index}].name")
        if kind == "custom":
            chat.append({"type": "custom", "custom": _custom_definition(tool)})
            continue
        function = {key: tool[key] for key in ("name", "description", "parameters", "strict") if key in tool}
        chat.append({"type": "function", "function": function})
    return chat


def _custom_definition(tool: dict[str, Any]) -> dict[str, Any]:
    """A custom tool as chat defines it: its grammar nested under `grammar` there, flat here."""
    definition: dict[str, Any] = {key: tool[key] for key in ("name", "description") if key in tool}
    given = tool.get("format")
    if isinstance(given, dict) and given.get("type") == "grammar":
        grammar = {key: given[key] for key in ("definition", "syntax") if key in given}
        definition["format"] = {"type": "grammar", "grammar": grammar}
    elif given is not None:
        definition["format"] = given
    return definition


def chat_tool_choice(choice: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
    if choice is None or isinstance(choice, str):
        return choice
    if choice.get("type") in ("function", "custom") and isinstance(choice.get("name"), str):
        return {"type": choice["type"], choice["type"]: {"name": choice["name"]}}
    if _built_in_function(choice) is not None:
        return {"type": "function", "function": {"name": _built_in_function(choice)}}
    if choice.get("type") == "allowed_tools":
        tools = [
            {"type": "function", "function": {"name": _built_in_function(tool) or tool.get("name")}}
            for tool in choice.get("tools") or []
            if isinstance(tool, dict)
        ]
        return {"type": "allowed_tools", "allowed_tools": {"mode": choice.get("mode", "auto"), "tools": tools}}
    raise invalid_request(
        '`tool_choice` names a function tool (`{"type": "function", "name": ...}`) or a built-in one (`{"type": '
        '"file_search"}`, `{"type": "code_interpreter"}`, `{"type": "image_generation"}`).',
        param="tool_choice",
    )


def _built_in_function(tool: Any) -> str | None:
    """The function a built-in tool is offered as, for a tool (or tool choice) of that type."""
    kind = tool.get("type") if isinstance(tool, dict) else None
    return {
        file_search.TOOL_NAME: file_search.TOOL_NAME,
        code_interpreter.TOOL_TYPE: code_interpreter.FUNCTION_NAME,
        image_generation.TOOL_TYPE: image_generation.FUNCTION_NAME,
    }.get(kind or "")


def output_items(
    message: dict[str, Any], finished: bool, logprobs: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """A chat answer's message as output items: its thinking, its text (with its tokens' `logprobs`, when asked
    for), its calls, in that order; an answer cut short leaves them incomplete."""
    status = "completed" if finished else "incomplete"
    items: list[dict[str, Any]] = []
    if message.get("reasoning_content"):
        items.append(reasoning_item(new_id("rs_"), message["reasoning_content"]))
    if message.get("content"):
        items.append(message_item(new_id("msg_"), message["content"], status, logprobs=logprobs))
    for call in message.get("tool_calls") or []:
        if call.get("type") == "custom":
            custom = call["custom"]
            items.append(custom_call_item(new_id("ctc_"), call["id"], custom["name"], custom["input"], status))
            continue
        function = call.get("function") or {}
        items.append(
            call_item(new_id("fc_"), call["id"], function.get("name", ""), function.get("arguments", ""), status)
        )
    return items


def reasoning_item(item_id: str, text: str) -> dict[str, Any]:
    return {"id": item_id, "type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": text}]}


def text_part(
    text: str, annotations: list[dict[str, Any]] | None = None, logprobs: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": annotations or [], "logprobs": logprobs or []}


def message_item(
    item_id: str,
    text: str | None,
    status: str,
    annotations: list[dict[str, Any]] | None = None,
    logprobs: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    content = [] if text is None else [text_part(text, annotations, logprobs)]
    return {"id": item_id, "type": "message", "role": "assistant", "status": status, "content": content}


def call_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def custom_call_item(item_id: str, call_id: str, name: str, text: str, status: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "custom_tool_call",
        "call_id": call_id,
        "name": name,
        "input": text,
        "status": status,
    }
