"""The built-in file_search tool of responses: the model calls it as a function with a query; the response searches
the tool's vector stores with the stores' own hybrid search (as runs do), shows the results to the model, and the
answer that follows is annotated with `file_citation`s where its sentences draw on a result. The search is an
output item of its own (`file_search_call`), which carries its results when `include` asks for them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from oasis.errors import invalid_request, not_found
from oasis.services.assistants.citations import Source
from oasis.services.assistants.file_search import TOOL_NAME, shown_within
from oasis.services.vector_stores.search import Hit
from oasis.storage import vector_stores as store_rows
from oasis.storage.db import Database

# The `include` value that puts a search's results on its output item.
INCLUDE_RESULTS = "file_search_call.results"
# Searches one response makes before it must answer (as a run's).
MAX_SEARCHES = 1
# The most results the tool's `max_num_results` may ask for.
MAX_RESULTS_LIMIT = 50
# Of the model's context, the characters of results it is shown per token (as a run's).
RESULT_CHARS_PER_CONTEXT_TOKEN = 2


@dataclass(frozen=True)
class SearchTool:
    """A response's file_search tool: the stores it searches and its settings (`max_num_results`,
    `ranking_options`, `filters`), as the stores' search takes them."""

    store_ids: list[str]
    settings: dict[str, Any]
    param: str  # where the request has it: `tools[i]`


def search_tool(tools: list[dict[str, Any]] | None) -> SearchTool | None:
    """The request's file_search tool, checked, or None."""
    search: SearchTool | None = None
    for index, tool in enumerate(tools or []):
        if isinstance(tool, dict) and tool.get("type") == TOOL_NAME:
            if search is not None:
                raise invalid_request("Give at most one file_search tool.", param=f"tools[{index}]")
            search = _checked(tool, f"tools[{index}]")
    if search is not None:
        refuse_function_named(tools or [], TOOL_NAME, "file_search")
    return search


def refuse_function_named(tools: list[dict[str, Any]], name: str, built_in: str) -> None:
    """A 400 for a function of the name a built-in tool is offered as (the model's calls could not be told apart)."""
    for index, tool in enumerate(tools):
        if isinstance(tool, dict) and tool.get("type") == "function" and tool.get("name") == name:
            raise invalid_request(
                f"A function may not be named '{name}' beside the {built_in} tool.", param=f"tools[{index}].name"
            )


def _checked(tool: dict[str, Any], param: str) -> SearchTool:
    store_ids = tool.get("vector_store_ids")
    if not isinstance(store_ids, list) or not store_ids or not all(isinstance(id_, str) for id_ in store_ids):
        raise invalid_request(
            "The file_search tool needs `vector_store_ids`: the ids of the vector stores it searches.",
            param=f"{param}.vector_store_ids",
        )
    settings: dict[str, Any] = {}
    limit = tool.get("max_num_results")
    if limit is not None:
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_RESULTS_LIMIT:
            raise invalid_request(
                f"`max_num_results` is an integer from 1 to {MAX_RESULTS_LIMIT}.", param=f"{param}.max_num_results"
            )
        settings["max_num_results"] = limit
    ranking = tool.get("ranking_options")
    if ranking is not None:
        threshold = ranking.get("score_threshold", 0.0) if isinstance(ranking, dict) else None
        if not isinstance(threshold, int | float) or isinstance(threshold, bool) or not 0 <= threshold <= 1:
            raise invalid_request(
                "`ranking_options.score_threshold` is a number from 0 to 1.",
                param=f"{param}.ranking_options.score_threshold",
            )
        settings["ranking_options"] = {"ranker": ranking.get("ranker") or "auto", "score_threshold": threshold}
    filters = tool.get("filters")
    if filters is not None:
        if not isinstance(filters, dict):
            raise invalid_request("`filters` is a comparison or compound filter.", param=f"{param}.filters")
        settings["filters"] = filters
    return SearchTool(list(dict.fromkeys(store_ids)), settings, param)


async def check_stores(db: Database, project_id: str, tool: SearchTool) -> None:
    """A 404 for a store the project does not have, before anything is generated."""
    async with db.session() as session:
        for store_id in tool.store_ids:
            if await store_rows.get_store(session, project_id, store_id) is None:
                raise not_found(f"No vector store found with id '{store_id}'.", param=f"{tool.param}.vector_store_ids")


def call_item(item_id: str, queries: list[str], status: str, results: list[dict[str, Any]] | None) -> dict[str, Any]:
    return {"id": item_id, "type": "file_search_call", "status": status, "queries": queries, "results": results}


def result_entries(hits: list[Hit]) -> list[dict[str, Any]]:
    """Hits as a file_search_call item's `results`."""
    return [
        {
            "file_id": hit.file_id,
            "filename": hit.filename,
            "score": hit.score,
            "text": hit.text,
            "attributes": hit.attributes,
        }
        for hit in hits
    ]


def results_for_model(results: list[dict[str, Any]], max_chars: int) -> str:
    """The tool output the model reads: each result under its file's name, best first, within `max_chars`."""
    return shown_within([f"[{result['filename']}]\n{result['text']}" for result in results], max_chars)


def sources(results: list[dict[str, Any]]) -> list[Source]:
    """The results as passages an answer may cite (their numbers unused: responses' citations carry no marker)."""
    return [Source(0, index, result["file_id"], result["text"]) for index, result in enumerate(results)]


def tool_call(item: dict[str, Any]) -> dict[str, Any]:
    """A file_search_call item as the chat tool call the model made."""
    return {
        "id": item["id"],
        "type": "function",
        "function": {"name": TOOL_NAME, "arguments": json.dumps({"query": "; ".join(item.get("queries") or [])})},
    }
