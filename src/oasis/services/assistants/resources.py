"""Checks and stored forms shared by assistants, threads, messages and runs: tools, tool resources, response
formats, message content. Each failure is a 400 (or 404 for a missing object) naming the field."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import PurePath
from typing import Any

from oasis.errors import invalid_request, not_found
from oasis.protocol.assistants import (
    Attachment,
    ContentPart,
    CreateMessageRequest,
    FormatChoice,
    ImageFilePart,
    NamedToolChoice,
    TextPart,
    Tool,
    ToolResources,
)
from oasis.services.vector_stores.service import VectorStoreService, is_expired
from oasis.services.vector_stores.text_extraction import UnsupportedFile, check_supported
from oasis.storage import files as file_rows
from oasis.storage import vector_stores as store_rows
from oasis.storage.db import Session
from oasis.storage.tables import Thread

# Stores made by thread helpers (`vector_stores`, message attachments) expire a week after they were last
# used, OpenAI's default for them; an assistant's helper store does not expire.
HELPER_STORE_EXPIRY_DAYS = 7


def tools_to_store(tools: Sequence[Tool], param: str = "tools") -> list[dict[str, Any]]:
    names: set[str] = set()
    stored: list[dict[str, Any]] = []
    for position, tool in enumerate(tools):
        if tool.type == "function":
            name = tool.function.name
            if name in names:
                raise invalid_request(f"Duplicate function name '{name}' in tools.", param=f"{param}[{position}]")
            names.add(name)
        stored.append(tool.model_dump(exclude_none=True))
    for tool_entry in stored:
        if tool_entry["type"] == "function":
            tool_entry["function"].setdefault("parameters", {"type": "object", "properties": {}})
            tool_entry["function"].setdefault("strict", False)
        elif tool_entry["type"] == "file_search":
            settings = tool_entry.setdefault("file_search", {})
            settings.setdefault("max_num_results", 20)
            settings.setdefault("ranking_options", {"ranker": "auto", "score_threshold": 0.0})
    return stored


def response_format_to_store(value: Any) -> Any:
    if value is None or value == "auto":
        return "auto"
    assert isinstance(value, FormatChoice)
    if value.type == "json_schema" and value.json_schema is None:
        raise invalid_request(
            "'response_format.json_schema' is required when type is json_schema.", param="response_format.json_schema"
        )
    return value.model_dump(exclude_none=True, by_alias=True)


def tool_choice_to_store(value: Any, tools: list[dict[str, Any]]) -> Any:
    if value is None:
        return "auto"
    if isinstance(value, str):
        if value == "required" and not tools:
            raise invalid_request("'tool_choice' is required, but the run has no tools to choose.", param="tool_choice")
        return value
    assert isinstance(value, NamedToolChoice)
    if value.type == "function":
        if value.function is None:
            raise invalid_request("'tool_choice.function' names the function to call.", param="tool_choice.function")
        offered = {tool["function"]["name"] for tool in tools if tool["type"] == "function"}
        if value.function.name not in offered:
            raise invalid_request(
                f"Tool choice names function '{value.function.name}', which is not among the run's tools.",
                param="tool_choice.function.name",
            )
    elif not any(tool["type"] == value.type for tool in tools):
        raise invalid_request(f"Tool choice '{value.type}' is not among the run's tools.", param="tool_choice")
    return value.model_dump(exclude_none=True)


async def _check_files(session: Session, project_id: str, file_ids: list[str], param: str) -> None:
    found = await file_rows.existing_file_ids(session, project_id, file_ids)
    for file_id in file_ids:
        if file_id not in found:
            raise not_found(f"No file found with id '{file_id}'.", param=param)


async def tool_resources_to_store(
    session: Session,
    project_id: str,
    resources: ToolResources | None,
    vector_stores: VectorStoreService,
    param: str = "tool_resources",
    helper_expiry_days: int | None = HELPER_STORE_EXPIRY_DAYS,
) -> dict[str, Any]:
    """The resources as stored: file ids checked, vector stores checked, and a store made for the
    `vector_stores` helper (its files are indexed in the background, as OpenAI does, once the caller commits and
    wakes the workers), expiring `helper_expiry_days` after it was last used (None: never)."""
    stored: dict[str, Any] = {}
    if resources is None:
        return stored
    if resources.code_interpreter is not None:
        file_ids = list(dict.fromkeys(resources.code_interpreter.file_ids))
        await _check_files(session, project_id, file_ids, f"{param}.code_interpreter.file_ids")
        stored["code_interpreter"] = {"file_ids": file_ids}
    search = resources.file_search
    if search is not None:
        if search.vector_store_ids and search.vector_stores:
            raise invalid_request(
                "Give either 'vector_store_ids' or 'vector_stores' for file_search, not both.",
                param=f"{param}.file_search",
            )
        store_ids = list(search.vector_store_ids or [])
        for store_id in store_ids:
            if await store_rows.get_store(session, project_id, store_id) is None:
                raise not_found(
                    f"No vector store found with id '{store_id}'.", param=f"{param}.file_search.vector_store_ids"
                )
        for position, helper in enumerate(search.vector_stores or []):
            helper_param = f"{param}.file_search.vector_stores[{position}]"
            await _check_files(session, project_id, helper.file_ids, f"{helper_param}.file_ids")
            made = await vector_stores.create_in(
                session,
                project_id,
                name=None,
                file_ids=helper.file_ids,
                expires_after_days=helper_expiry_days,
                metadata=helper.metadata,
                chunking=helper.chunking_strategy,
                param_prefix=f"{helper_param}.",
            )
            store_ids.append(made.id)
        stored["file_search"] = {"vector_store_ids": store_ids}
    return stored


def content_to_store(content: str | list[ContentPart]) -> list[dict[str, Any]]:
    """Message content as the API shows it: text parts carry `value` and `annotations`."""
    if isinstance(content, str):
        return [{"type": "text", "text": {"value": content, "annotations": []}}]
    stored: list[dict[str, Any]] = []
    for part in content:
        if isinstance(part, TextPart):
            stored.append({"type": "text", "text": {"value": part.text, "annotations": []}})
        elif isinstance(part, ImageFilePart):
            stored.append({"type": "image_file", "image_file": part.image_file.model_dump(exclude_none=True)})
        else:
            stored.append({"type": "image_url", "image_url": part.image_url.model_dump(exclude_none=True)})
    return stored


async def message_parts(
    session: Session, project_id: str, request: CreateMessageRequest, prefix: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(content, attachments) of a new message, with every file it names checked; errors name the fields after
    `prefix` ("messages[0]." or "")."""
    content = content_to_store(request.content)
    image_files = [part["image_file"]["file_id"] for part in content if part["type"] == "image_file"]
    await _check_files(session, project_id, image_files, f"{prefix}content")
    attachments: list[Attachment] = request.attachments or []
    await _check_files(session, project_id, [item.file_id for item in attachments], f"{prefix}attachments")
    await _check_searchable(session, project_id, attachments, f"{prefix}attachments")
    return content, [item.model_dump() for item in attachments]


async def _check_searchable(session: Session, project_id: str, attachments: list[Attachment], param: str) -> None:
    """A file attached for file_search must be of a type that can be searched: OpenAI refuses the message (400,
    `unsupported_file`) rather than leave a store with a file that fails."""
    searched = [item.file_id for item in attachments if any(tool.type == "file_search" for tool in item.tools)]
    names = await file_rows.filenames(session, project_id, searched)
    unsupported = []
    for file_id in searched:
        if file_id not in names:  # deleted since it was checked: the caller's not_found stands
            continue
        try:
            check_supported(names[file_id])
        except UnsupportedFile:
            unsupported.append(PurePath(names[file_id]).suffix.lower() or "none")
    if unsupported:
        raise invalid_request(
            f"Files with extensions [{', '.join(dict.fromkeys(unsupported))}] are not supported for retrieval: "
            "file_search reads text, Markdown, HTML, JSON, PDF, DOCX, PPTX and source code files.",
            param=param,
            code="unsupported_file",
        )


async def index_attachments(
    session: Session, project_id: str, thread: Thread, file_ids: list[str], vector_stores: VectorStoreService
) -> None:
    """Files attached to a message for file_search go into the thread's vector store: its first store, or one
    made for it when it has none (or that one was deleted or has expired), as OpenAI does."""
    resources = json.loads(thread.tool_resources_json)
    store_ids = resources.get("file_search", {}).get("vector_store_ids", [])
    current = await store_rows.get_store(session, project_id, store_ids[0]) if store_ids else None
    if current is not None and not is_expired(current):
        await vector_stores.add_files_in(session, project_id, current.id, file_ids)
        return
    made = await vector_stores.create_in(
        session,
        project_id,
        name=None,
        file_ids=file_ids,
        expires_after_days=HELPER_STORE_EXPIRY_DAYS,
        metadata=None,
        chunking=None,
    )
    resources["file_search"] = {"vector_store_ids": [made.id, *store_ids[1:]]}
    thread.tool_resources_json = json.dumps(resources)
