"""The file_search tool of runs: the model calls it as a function with a query; oasis searches the vector stores
of the run's assistant and thread with the stores' own hybrid search, records the results on a run step, and
shows them to the model marked so that its answer can be cited (`【n:m†source】`, as OpenAI writes them)."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

from oasis.errors import invalid_request
from oasis.services.vector_stores.search import Hit, VectorSearch
from oasis.storage import assistants as assistant_rows
from oasis.storage import threads as thread_rows
from oasis.storage import vector_stores as store_rows
from oasis.storage.db import Database
from oasis.storage.tables import Run

# The function the model is offered in place of the built-in tool.
TOOL_NAME = "file_search"
FUNCTION = {
    "type": "function",
    "function": {
        "name": TOOL_NAME,
        "description": "Search the user's files for passages that answer a question. Call it before answering "
        "questions about the files.",
        "parameters": {
            "type": "object",
            # No description: a small model copies it into the call instead of writing a query. A bound on the
            # length keeps a forced call from running on in a string that never closes.
            "properties": {"query": {"type": "string", "maxLength": 100}},
            "required": ["query"],
        },
    },
}
# OpenAI's defaults for the tool's settings.
DEFAULT_MAX_RESULTS = 20
DEFAULT_RANKING = {"ranker": "auto", "score_threshold": 0.0}
# The most queries one call searches for (each is embedded and searched).
MAX_QUERIES = 5
# The `include[]` value that shows results' contents on run steps.
INCLUDE_RESULT_CONTENT = "step_details.tool_calls[*].file_search.results[*].content"
# How long a search waits for files still being ingested into the stores it searches (attachments just added).
INGESTION_WAIT_SECONDS = 300.0
INGESTION_POLL_SECONDS = 0.2


def marker(search: int, result: int) -> str:
    return f"【{search}:{result}†source】"


@dataclass(frozen=True)
class SearchCall:
    """One file_search call as a run step records it: the call's wire form, plus the query and the marker number
    kept under `_` keys (left out of the wire form) so the prompt can show the call again."""

    call_id: str
    queries: list[str]
    number: int  # `n` in the markers: the thread's count of searches before this one
    ranking: dict[str, Any]
    results: list[dict[str, Any]]

    def stored(self) -> dict[str, Any]:
        return {
            "id": self.call_id,
            "type": TOOL_NAME,
            "file_search": {"ranking_options": self.ranking, "results": self.results},
            "_queries": self.queries,
            "_number": self.number,
        }


def queries_of(arguments: str, question: str) -> list[str]:
    """What a call searches for: the model's query (`query`, or OpenAI's `queries`) and the user's question
    itself, since a small model's query is often worse than the question it was asked."""
    written: list[str] = []
    try:
        parsed = json.loads(arguments)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        found = parsed.get("queries", parsed.get("query"))
        candidates = found if isinstance(found, list) else [found]
        written = [item.strip() for item in candidates if isinstance(item, str) and item.strip()]
    queries = list(dict.fromkeys([*written, question.strip()] if question.strip() else written))
    return queries[:MAX_QUERIES]


def results_for_model(call: dict[str, Any], max_chars: int) -> str:
    """The tool output the model reads: each result under its marker, best first, within `max_chars`."""
    number = call.get("_number", 0)
    entries = [
        f"{marker(number, index)} {result['file_name']}\n"
        + "\n".join(part["text"] for part in result.get("content", []))
        for index, result in enumerate(call["file_search"]["results"])
    ]
    return shown_within(entries, max_chars)


def shown_within(entries: list[str], max_chars: int) -> str:
    """Results, best first, as many as fit in `max_chars` (the best one cut to fit rather than none)."""
    parts: list[str] = []
    used = 0
    for entry in entries:
        if used + len(entry) > max_chars:
            if parts:
                break
            entry = entry[:max_chars]
        parts.append(entry)
        used += len(entry)
    return "\n\n".join(parts) if parts else "No results found in the files."


def wants_contents(include: list[str]) -> bool:
    """Whether `include[]` asks for results' contents; any other value is a 400."""
    for value in include:
        if value != INCLUDE_RESULT_CONTENT:
            raise invalid_request(
                f"Invalid value '{value}' for include; supported: '{INCLUDE_RESULT_CONTENT}'.", param="include"
            )
    return bool(include)


def tool_settings(tools: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The run's file_search settings, or None when it does not have the tool."""
    for tool in tools:
        if tool["type"] == TOOL_NAME:
            return dict(tool.get(TOOL_NAME) or {})
    return None


class FileSearch:
    def __init__(self, db: Database, search: VectorSearch) -> None:
        self._db = db
        self._search = search

    async def run(
        self, run: Run, queries: list[str], settings: dict[str, Any]
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """(ranking options, results) of a search of the run's stores for any of the queries: best first, with
        their contents."""
        store_ids = await self._store_ids(run) if queries else []
        # The Assistants tool has no filters: a stored setting of that name is not one
        settings = {key: value for key, value in settings.items() if key != "filters"}
        ranking, hits = await self.search(run.project_id, store_ids, queries, settings)
        results = [
            {
                "file_id": hit.file_id,
                "file_name": hit.filename,
                "score": hit.score,
                "content": [{"type": "text", "text": hit.text}],
            }
            for hit in hits
        ]
        return ranking, results

    async def search(
        self, project_id: str, store_ids: list[str], queries: list[str], settings: dict[str, Any]
    ) -> tuple[dict[str, Any], list[Hit]]:
        """(ranking options, hits) of a search of the given stores for any of the queries, best first, as the
        tool's settings (`max_num_results`, `ranking_options`, `filters`) bound them."""
        ranking = {**DEFAULT_RANKING, **(settings.get("ranking_options") or {})}
        limit = int(settings.get("max_num_results") or DEFAULT_MAX_RESULTS)
        if not queries:
            return ranking, []
        await self._wait_for_ingestion(store_ids)
        hits: list[Hit] = []
        for store_id in store_ids:
            try:
                hits.extend(
                    await self._search.search(
                        project_id,
                        store_id,
                        queries,
                        max_results=limit,
                        filters=settings.get("filters"),
                        score_threshold=float(ranking["score_threshold"]),
                    )
                )
            except Exception as exc:  # a store deleted or expired since the request began is not searched
                if getattr(exc, "status", None) not in (400, 404):
                    raise
        # Scores compare across stores (see vector_stores/relevance.py), so the best of all stores come first.
        hits.sort(key=lambda hit: -hit.score)
        return ranking, hits[:limit]

    async def _store_ids(self, run: Run) -> list[str]:
        """The vector stores of the run's assistant and of its thread (as they are now: attachments may have
        made the thread's store since the run began)."""
        async with self._db.session() as session:
            thread = await thread_rows.get_thread(session, run.project_id, run.thread_id)
            assistant = await assistant_rows.get_assistant(session, run.project_id, run.assistant_id)
        ids: list[str] = []
        for owner in (assistant, thread):
            if owner is not None:
                ids.extend(json.loads(owner.tool_resources_json).get(TOOL_NAME, {}).get("vector_store_ids", []))
        return list(dict.fromkeys(ids))

    async def _wait_for_ingestion(self, store_ids: list[str]) -> None:
        deadline = time.monotonic() + INGESTION_WAIT_SECONDS
        while store_ids and time.monotonic() < deadline:
            async with self._db.session() as session:
                stats = await store_rows.file_stats(session, store_ids)
            if not any(counts["in_progress"] for counts, _ in stats.values()):
                return
            await asyncio.sleep(INGESTION_POLL_SECONDS)
