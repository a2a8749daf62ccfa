"""The built-in image_generation tool of responses: the model calls it as the `image_generation` function with a
prompt; the response draws the image with the images service (the tool's `model`, `gpt-image-1` unless set, and
its settings: `size`, `quality`, `background`, `output_format`, `output_compression`, `moderation`), and the image
is an output item of its own (`image_generation_call`, its `result` the image in base64), streamed after the images
part way that `partial_images` asks for. The model is told the image was shown, and answers."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from oasis.errors import OasisError, invalid_request
from oasis.services.responses.file_search import refuse_function_named

TOOL_TYPE = "image_generation"
FUNCTION_NAME = "image_generation"  # what the model calls it by
FUNCTION = {
    "type": "function",
    "function": {
        "name": FUNCTION_NAME,
        "description": "Draw an image and show it to the user. Describe everything the image should show in "
        "`prompt`: the user sees the image, not the prompt.",
        "parameters": {
            "type": "object",
            "properties": {"prompt": {"type": "string", "description": "What the image shows, in detail."}},
            "required": ["prompt"],
        },
    },
}
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

    def request(self, prompt: str) -> dict[str, Any]:
        return {**self.settings, "prompt": prompt, "n": 1}


def image_tool(tools: list[dict[str, Any]] | None) -> ImageTool | None:
    """The request's image_generation tool, read (its settings are checked when the request is planned), or None."""
    found: ImageTool | None = None
    for index, tool in enumerate(tools or []):
        if not (isinstance(tool, dict) and tool.get("type") == TOOL_TYPE):
            continue
        param = f"tools[{index}]"
        if found is not None:
            raise invalid_request("Give at most one image_generation tool.", param=param)
        if tool.get("action") == "edit" or tool.get("input_image_mask") is not None:
            raise invalid_request(
                "The image_generation tool draws new images here: editing an input image is not supported.",
                param=f"{param}.action" if tool.get("action") == "edit" else f"{param}.input_image_mask",
            )
        partial = tool.get("partial_images")
        if partial is not None and (not isinstance(partial, int) or isinstance(partial, bool) or not 0 <= partial <= 3):
            raise invalid_request("`partial_images` is a whole number from 0 to 3.", param=f"{param}.partial_images")
        settings = {key: tool[key] for key in _SETTINGS if tool.get(key) is not None}
        settings["model"] = tool.get("model") or DEFAULT_MODEL
        found = ImageTool(param, settings, partial or 0)
    if found is not None:
        refuse_function_named(tools or [], FUNCTION_NAME, TOOL_TYPE)
    return found


def in_tool(error: OasisError, tool: ImageTool) -> OasisError:
    """An images request's error as the tool's: its `param` named inside the tool."""
    param = f"{tool.param}.{error.param}" if error.param and error.param != "prompt" else tool.param
    return OasisError(error.status, error.message, type=error.type, param=param, code=error.code)


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


def call_item(item_id: str, status: str, result: str | None = None, **details: Any) -> dict[str, Any]:
    """An image_generation_call item; `details`: the drawn image's settings and the prompt it was drawn from."""
    return {"id": item_id, "type": "image_generation_call", "status": status, "result": result, **details}


def tool_call(item: dict[str, Any]) -> dict[str, Any]:
    """An image_generation_call item as the chat tool call the model made."""
    arguments = json.dumps({"prompt": item.get("revised_prompt") or ""})
    return {"id": item["id"], "type": "function", "function": {"name": FUNCTION_NAME, "arguments": arguments}}


def sent_back_text(item: dict[str, Any]) -> str:
    """What an earlier image call, read again, shows the model."""
    return SHOWN if item.get("result") else "No image was drawn."
