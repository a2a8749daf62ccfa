"""Rows as the objects OpenAI's Assistants API answers with."""

from __future__ import annotations

import json
from typing import Any

from oasis.storage.tables import Assistant, Run, RunStep, Thread, ThreadMessage

# Statuses after which a run's usage is final and shown.
FINISHED_RUN_STATUSES = ("completed", "incomplete", "failed", "cancelled", "expired")


def _loads(text: str | None) -> Any:
    return json.loads(text) if text else None


def assistant_to_wire(row: Assistant) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "assistant",
        "created_at": row.created_at,
        "name": row.name,
        "description": row.description,
        "model": row.model,
        "instructions": row.instructions,
        "tools": json.loads(row.tools_json),
        "tool_resources": json.loads(row.tool_resources_json),
        "metadata": json.loads(row.metadata_json),
        "temperature": row.temperature,
        "top_p": row.top_p,
        "response_format": json.loads(row.response_format_json),
    }


def thread_to_wire(row: Thread) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "thread",
        "created_at": row.created_at,
        "tool_resources": json.loads(row.tool_resources_json),
        "metadata": json.loads(row.metadata_json),
    }


def message_to_wire(row: ThreadMessage) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "thread.message",
        "created_at": row.created_at,
        "thread_id": row.thread_id,
        "status": row.status,
        "incomplete_details": {"reason": row.incomplete_reason} if row.incomplete_reason else None,
        "completed_at": row.completed_at,
        "incomplete_at": row.incomplete_at,
        "role": row.role,
        "content": json.loads(row.content_json),
        "assistant_id": row.assistant_id,
        "run_id": row.run_id,
        "attachments": json.loads(row.attachments_json),
        "metadata": json.loads(row.metadata_json),
    }


def _usage(prompt: int | None, completion: int | None) -> dict[str, int] | None:
    if prompt is None or completion is None:
        return None
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def run_to_wire(row: Run) -> dict[str, Any]:
    finished = row.status in FINISHED_RUN_STATUSES
    return {
        "id": row.id,
        "object": "thread.run",
        "created_at": row.created_at,
        "thread_id": row.thread_id,
        "assistant_id": row.assistant_id,
        "status": row.status,
        "required_action": _loads(row.required_action_json) if row.status == "requires_action" else None,
        "last_error": _loads(row.last_error_json),
        # A finished run no longer expires.
        "expires_at": None if finished else row.expires_at,
        "started_at": row.started_at,
        "cancelled_at": row.cancelled_at,
        "failed_at": row.failed_at,
        "completed_at": row.completed_at,
        "incomplete_details": {"reason": row.incomplete_reason} if row.incomplete_reason else None,
        "model": row.model,
        "instructions": row.instructions,
        "tools": json.loads(row.tools_json),
        "metadata": json.loads(row.metadata_json),
        "usage": _usage(row.prompt_tokens, row.completion_tokens) if finished else None,
        "temperature": row.temperature,
        "top_p": row.top_p,
        "max_prompt_tokens": row.max_prompt_tokens,
        "max_completion_tokens": row.max_completion_tokens,
        "truncation_strategy": json.loads(row.truncation_json),
        "tool_choice": json.loads(row.tool_choice_json),
        "parallel_tool_calls": row.parallel_tool_calls,
        "response_format": json.loads(row.response_format_json),
    }


def _call_to_wire(call: dict[str, Any], include_contents: bool) -> dict[str, Any]:
    """A stored tool call as the API shows it: without the keys kept for the prompt (`_query`...), and
    file_search results without their contents unless asked for."""
    shown = {key: value for key, value in call.items() if not key.startswith("_")}
    if call["type"] == "file_search" and not include_contents:
        search = shown["file_search"]
        results = [{key: value for key, value in result.items() if key != "content"} for result in search["results"]]
        shown["file_search"] = {**search, "results": results}
    return shown


def step_to_wire(row: RunStep, include_contents: bool = False) -> dict[str, Any]:
    details = json.loads(row.step_details_json)
    if details["type"] == "tool_calls":
        details["tool_calls"] = [_call_to_wire(call, include_contents) for call in details["tool_calls"]]
    return {
        "id": row.id,
        "object": "thread.run.step",
        "created_at": row.created_at,
        "assistant_id": row.assistant_id,
        "thread_id": row.thread_id,
        "run_id": row.run_id,
        "type": row.type,
        "status": row.status,
        "step_details": details,
        "last_error": _loads(row.last_error_json),
        "expired_at": row.expired_at,
        "cancelled_at": row.cancelled_at,
        "failed_at": row.failed_at,
        "completed_at": row.completed_at,
        "metadata": None,
        # null while the step is in progress (a tool call waiting for its output), as OpenAI shows it
        "usage": None if row.status == "in_progress" else _usage(row.prompt_tokens, row.completion_tokens),
    }
