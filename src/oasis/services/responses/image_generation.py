"""The built-in image_generation tool of responses: the model calls it as the `image_generation` function with a
prompt; the response draws the image with the images service (the tool's `model`, `gpt-image-1` unless set, and
its settings: `size`, `quality`, `background`, `output_format`, `output_compression`, `moderation`), and the image
is an output item of its own (`image_generation_call`, its `result` the image in base64), streamed after the images
part way that `partial_images` asks for. The model is told the image was shown, and answers.

The tool's `action` says whether a call draws a new image or edits the conversation's newest one (an input image
or an earlier call's image), as the images API's edits do (`input_image_mask`: where to redraw, the rest kept;
`input_fidelity`): `generate`, `edit`, or `auto` (the default), where the model chooses per call when the
conversation has an image to edit."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from oasis.errors import OasisError, invalid_request
from oasis.services.images.pictures import MAX_GPT_IMAGE_UPLOAD_BYTES, data_url_bytes
from oasis.services.responses.file_search import refuse_function_named

TOOL_TYPE = "image_generation"
FUNCTION_NAME = "image_generation"  # what the model calls it by
_PROMPT = {"type": "string", "description": "What the image shows, in detail."}
FUNCTION = {
    "type": "function",
    "function": {
        "name": FUNCTION_NAME,
        "description": "Draw an image and show it to the user. Describe everything the image should show in "
        "`prompt`: the user sees the image, not the prompt.",
        "parameters": {
            "type": "object",
            "properties": {"prompt": _PROMPT},
            "required": ["prompt"],
        },
    },
}
# As offered when the model chooses: the conversation has an image, and the tool's action is `auto`.
CHOOSING_FUNCTION = {
    "type": "function",
    "function": {
        "name": FUNCTION_NAME,
        "description": "Draw an image and show it to the user, or change the newest image in the conversation. "
        "Describe everything the image should show in `prompt`: the user sees the image, not the prompt.",
        "parameters": {
            "type": "object",
            "properties": {
                "prompt": _PROMPT,
                "action": {
                    "type": "string",
                    "enum": ["generate", "edit"],
                    "description": "`edit` changes the newest image in the conversation; `generate` draws a new one.",
                },
            },
            "required": ["prompt", "action"],
        },
    },
}
ACTIONS = ("auto", "generate", "edit")
DEFAULT_MODEL = "gpt-image-1"
# Images one response draws before it must answer.
MAX_IMAGES = 1
# What the model is told once the image is drawn, or when a call past the most is not.
SHOWN = "The image was generated and shown to the user."
NOT_DRAWN = f"Not drawn: a response draws at most {MAX_IMAGES} image."
# What a call's partial images say they are drawn with (its item says as much, with its image).
SHOWN_SETTINGS = ("background", "output_format", "quality", "size")
# The tool's settings that are the images API's own parameters.
_SETTINGS = ("size", "quality", "background", "output_format", "output_compression", "moderation")


@dataclass(frozen=True)
class ImageTool:
    """A response's image_generation tool: the images request its calls make (all but the prompt)."""

    param: str  # where the request has it: `tools[i]`
    settings: dict[str, Any] = field(default_factory=dict)
    partial_images: int = 0  # images part way that a streamed call sends before its image
    action: str = "auto"
    mask: dict[str, str] | None = None  # `input_image_mask` as given: its `image_url` or `file_id`
    input_fidelity: str | None = None
    # Read when the response is planned: the conversation's newest image (what an edit changes) and the mask's bytes.
    source: bytes | None = None
    mask_data: bytes | None = None

    def request(self, prompt: str) -> dict[str, Any]:
        return {**self.settings, "prompt": prompt, "n": 1}

    def edit_request(self, prompt: str) -> dict[str, Any]:
        fidelity = {"input_fidelity": self.input_fidelity} if self.input_fidelity else {}
        return {**self.request(prompt), **fidelity}

    @property
    def function(self) -> dict[str, Any]:
        """The function the model is offered: with a choice of action where it has one."""
        return CHOOSING_FUNCTION if self.action == "auto" and self.source is not None else FUNCTION

    def edits(self, arguments: str) -> bool:
        """Whether the call the model made with `arguments` edits the newest image rather than drawing anew."""
        if self.source is None or self.action == "generate":
            return False
        if self.action == "edit":
            return True
        try:
            parsed = json.loads(arguments)
        except ValueError:
            return False
        return isinstance(parsed, dict) and parsed.get("action") == "edit"


def image_tool(tools: list[dict[str, Any]] | None) -> ImageTool | None:
    """The request's image_generation tool, read (its settings are checked when the request is planned), or None."""
    found: ImageTool | None = None
    for index, tool in enumerate(tools or []):
        if not (isinstance(tool, dict) and tool.get("type") == TOOL_TYPE):
            continue
        param = f"tools[{index}]"
        if found is not None:
            raise invalid_request("Give at most one image_generation tool.", param=param)
        action = tool.get("action") or "auto"
        if action not in ACTIONS:
            raise invalid_request(f"'{action}' is not one of {list(ACTIONS)} - 'action'", param=f"{param}.action")
        mask = tool.get("input_image_mask")
        if mask is not None and not (
            isinstance(mask, dict)
            and any(mask.get(key) for key in ("image_url", "file_id"))
            and all(isinstance(mask.get(key), str | None) for key in ("image_url", "file_id"))
        ):
            raise invalid_request(
                "`input_image_mask` needs `image_url` (a data URL) or `file_id`.", param=f"{param}.input_image_mask"
            )
        if mask is not None and action == "generate":
            raise invalid_request(
                "`input_image_mask` is for edits: the action `generate` draws new images.",
                param=f"{param}.input_image_mask",
            )
        fidelity = tool.get("input_fidelity")
        if fidelity is not None and fidelity not in ("low", "high"):
            raise invalid_request(
                f"'{fidelity}' is not one of ['low', 'high'] - 'input_fidelity'", param=f"{param}.input_fidelity"
            )
        partial = tool.get("partial_images")
        if partial is not None and (not isinstance(partial, int) or isinstance(partial, bool) or not 0 <= partial <= 3):
            raise invalid_request("`partial_images` is a whole number from 0 to 3.", param=f"{param}.partial_images")
        settings = {key: tool[key] for key in _SETTINGS if tool.get(key) is not None}
        settings["model"] = tool.get("model") or DEFAULT_MODEL
        found = ImageTool(param, settings, partial or 0, action, mask, fidelity)
    if found is not None:
        refuse_function_named(tools or [], FUNCTION_NAME, TOOL_TYPE)
    return found


def in_tool(error: OasisError, tool: ImageTool) -> OasisError:
    """An images request's error as the tool's: its `param` named inside the tool."""
    param = f"{tool.param}.{error.param}" if error.param and error.param != "prompt" else tool.param
    return OasisError(error.status, error.message, type=error.type, param=param, code=error.code)


def in_edit(error: OasisError, tool: ImageTool) -> OasisError:
    """An edit's error as the tool's: the image edited is the input's, the mask the tool's `input_image_mask`."""
    where = {"image": "input", "mask": f"{tool.param}.input_image_mask"}.get(error.param or "")
    if where is None:
        return in_tool(error, tool)
    return OasisError(error.status, error.message, type=error.type, param=where, code=error.code)


def prompt_of(arguments: str) -> str:
    """The prompt in the model's call arguments (`{"prompt": ...}`); arguments that are not JSON are the prompt."""
    try:
        parsed = json.loads(arguments)
    except ValueError:
        return arguments.strip()
    if isinstance(parsed, dict):
        prompt = parsed.get("prompt")
        return prompt.strip() if isinstance(prompt, str) else ""
    return parsed.strip() if isinstance(parsed, str) else ""


def image_bytes(url: str, param: str, named: str) -> bytes:
    """An image (to edit, or a mask: what `named` says) given as a data URL, decoded; any other URL is a 400."""
    return data_url_bytes(url, param, named, MAX_GPT_IMAGE_UPLOAD_BYTES)


def drawn_images(item_lists: Iterator[Iterable[Any]]) -> Callable[[str], str | None]:
    """An earlier image_generation call's image (base64) by its id, looked for in the lists of input or output
    items, read only as far as needed (the newest first: a long chain's stored images are not all parsed)."""
    found: dict[str, str] = {}

    def drawn(call_id: str) -> str | None:
        while call_id not in found:
            items = next(item_lists, None)
            if items is None:
                return None
            for item in items:
                kind = item.get("type") if isinstance(item, dict) else None
                if kind == "image_generation_call" and isinstance(item.get("id"), str) and item.get("result"):
                    found[item["id"]] = str(item["result"])
        return found[call_id]

    return drawn


def newest_image(messages: list[dict[str, Any]], drawn: Callable[[str], str | None]) -> tuple[str, str] | None:
    """The newest image in the chat messages the model reads, as `("url", data URL or URL)` (a user's image) or
    `("drawn", base64)` (an earlier call's; `drawn`: a call's image by its id, None where it drew none)."""
    for message in reversed(messages):
        for call in reversed(message.get("tool_calls") or ()):
            if (call.get("function") or {}).get("name") == FUNCTION_NAME and (result := drawn(call.get("id"))):
                return ("drawn", result)
        content = message.get("content")
        for part in reversed(content) if isinstance(content, list) else ():
            url = (part.get("image_url") or {}).get("url") if isinstance(part, dict) else None
            if isinstance(url, str) and part.get("type") == "image_url":
                return ("url", url)
    return None


def call_item(item_id: str, status: str, result: str | None = None, **details: Any) -> dict[str, Any]:
    """An image_generation_call item; `details`: the drawn image's settings and the prompt it was drawn from."""
    return {"id": item_id, "type": "image_generation_call", "status": status, "result": result, **details}


def tool_call(item: dict[str, Any]) -> dict[str, Any]:
    """An image_generation_call item as the chat tool call the model made."""
    made = {"action": item["action"]} if item.get("action") in ("generate", "edit") else {}
    arguments = json.dumps({"prompt": item.get("revised_prompt") or "", **made})
    return {"id": item["id"], "type": "function", "function": {"name": FUNCTION_NAME, "arguments": arguments}}


def sent_back_text(item: dict[str, Any]) -> str:
    """What an earlier image call, read again, shows the model."""
    return SHOWN if item.get("result") else "No image was drawn."
