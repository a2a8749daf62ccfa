"""Reusable prompts (`prompt: {"id", "version", "variables"}` on a response), kept in the configuration
(`responses.prompts`) where OpenAI keeps them in its dashboard: instructions and messages whose `{{name}}`
placeholders a response fills with its variables (text, or an input image or file, which takes the
placeholder's place in its message). The model reads them before the conversation, as it reads instructions: a
later response in the chain does not read them again unless it names the prompt too."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from oasis.errors import invalid_request, not_found
from oasis.settings import PromptSpec

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][\w.-]*)\s*\}\}")
# Variables that are parts of their own (the rest is text).
_PART_TYPES = ("input_image", "input_file")


@dataclass(frozen=True)
class RenderedPrompt:
    reference: dict[str, Any]  # the response's `prompt`: id, version and variables
    items: list[dict[str, Any]]  # the prompt's messages, as input items, variables in place
    model: str | None  # the prompt's model, for a response that names none
    file_places: dict[str, str]  # the files its image variables name, by file id: where the request has them

    @property
    def leading(self) -> int:
        """How many of its items are instructions (developer and system messages) before the first other one."""
        count = 0
        for item in self.items:
            if item["role"] not in ("developer", "system"):
                break
            count += 1
        return count


def _version_order(version: str) -> tuple[bool, int, str]:
    return (version.isdecimal(), int(version) if version.isdecimal() else 0, version)


def _variable(name: str, value: Any) -> str | dict[str, Any]:
    """A variable as text, or as the content part it stands for."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        kind = value.get("type")
        if kind == "input_text" and isinstance(value.get("text"), str):
            return str(value["text"])
        # what each kind needs, as an input item's parts are read (items.py)
        needs = ("image_url", "file_id") if kind == "input_image" else ("file_id", "file_data")
        named = [key for key in needs if value.get(key) is not None]
        if kind in _PART_TYPES and named and all(isinstance(value[key], str) for key in named):
            return {**value, "detail": value.get("detail") or "auto"} if kind == "input_image" else value
    raise invalid_request(
        f"Prompt variable '{name}' must be a string, an input_text, or an input_image (`image_url` or `file_id`) or "
        "input_file (`file_id` or `file_data`) object.",
        param=f"prompt.variables.{name}",
    )


class Prompts:
    """The configured prompts by id and version."""

    def __init__(self, specs: Sequence[PromptSpec]) -> None:
        self._versions: dict[str, dict[str, PromptSpec]] = {}
        for spec in specs:
            self._versions.setdefault(spec.id, {})[spec.version] = spec

    def rendered(self, given: Any) -> RenderedPrompt:
        """The prompt a response names, its variables in place: a 400 for a malformed reference or a variable the
        prompt uses and the response does not give, a 404 for a prompt or version not configured here."""
        if not isinstance(given, dict) or not isinstance(given.get("id"), str) or not given["id"]:
            raise invalid_request("`prompt` needs `id`, the prompt's id.", param="prompt.id")
        versions = self._versions.get(given["id"])
        if versions is None:
            raise not_found(
                f"Prompt with id '{given['id']}' not found (prompts are configured under responses.prompts).",
                param="prompt.id",
            )
        version = given.get("version")
        if version is not None and (isinstance(version, bool) or not isinstance(version, (str, int))):
            raise invalid_request("`prompt.version` is a string.", param="prompt.version")
        if version is None:
            spec = versions[max(versions, key=_version_order)]
        elif (spec := versions.get(str(version))) is None:  # type: ignore[assignment]
            raise not_found(f"Prompt '{given['id']}' has no version '{version}'.", param="prompt.version")
        variables = given.get("variables") or {}
        if not isinstance(variables, dict):
            raise invalid_request("`prompt.variables` maps names to values.", param="prompt.variables")
        values = {name: _variable(name, value) for name, value in variables.items()}
        messages = [("developer", spec.instructions)] if spec.instructions else []
        messages += [(message.role, message.content) for message in spec.messages]
        missing = sorted({name for _, text in messages for name in _PLACEHOLDER.findall(text) if name not in values})
        if missing:
            raise invalid_request(f"Missing prompt variables: {', '.join(missing)}.", param="prompt.variables")
        for role, text in messages:
            for name in _PLACEHOLDER.findall(text):
                if role != "user" and not isinstance(values[name], str):  # as input items, only users send them
                    raise invalid_request(
                        f"Prompt variable '{name}' is an image or a file, which only the prompt's user messages "
                        f"hold: it stands in a {role} message.",
                        param=f"prompt.variables.{name}",
                    )
        items = [{"type": "message", "role": role, "content": _content(role, text, values)} for role, text in messages]
        reference = {"id": spec.id, "version": spec.version, "variables": variables or None}
        places = {
            value["file_id"]: f"prompt.variables.{name}"
            for name, value in values.items()
            if isinstance(value, dict) and isinstance(value.get("file_id"), str)
        }
        return RenderedPrompt(reference, items, spec.model, places)


def _content(role: str, text: str, values: dict[str, str | dict[str, Any]]) -> str | list[dict[str, Any]]:
    """A message's text as content parts, each placeholder replaced by its variable: text joined to the text
    around it, an image or file a part of its own where the placeholder was. An assistant's (text only) is a
    string, as an input item's assistant message is written without an id."""
    if role == "assistant":
        return _PLACEHOLDER.sub(lambda found: str(values[found[1]]), text)
    text_type = "input_text"
    parts: list[dict[str, Any]] = []
    written: list[str] = []
    end = 0
    for found in _PLACEHOLDER.finditer(text):
        written.append(text[end : found.start()])
        end = found.end()
        value = values[found[1]]
        if isinstance(value, str):
            written.append(value)
            continue
        if "".join(written):
            parts.append({"type": text_type, "text": "".join(written)})
        written = []
        parts.append(value)
    written.append(text[end:])
    if "".join(written) or not parts:
        parts.append({"type": text_type, "text": "".join(written)})
    return parts
