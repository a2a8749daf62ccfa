"""The Batch API: create, retrieve, list, cancel. The batch row is the job; workers/batches.py runs it."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from oasis.errors import OasisError, invalid_request, not_found
from oasis.services.files.checks import BATCH_ENDPOINTS
from oasis.services.metadata import check_metadata
from oasis.storage import batches as batch_rows
from oasis.storage import files as file_rows
from oasis.storage.clock import new_id, now
from oasis.storage.db import Database
from oasis.storage.pagination import Page, PageRequest
from oasis.storage.tables import BatchJob

COMPLETION_WINDOWS = {"24h": 24 * 3600}


def batch_to_wire(row: BatchJob) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "batch",
        "endpoint": row.endpoint,
        "errors": json.loads(row.errors_json) if row.errors_json else None,
        "input_file_id": row.input_file_id,
        "completion_window": row.completion_window,
        "status": row.status,
        "output_file_id": row.output_file_id,
        "error_file_id": row.error_file_id,
        "created_at": row.created_at,
        "in_progress_at": row.in_progress_at,
        "expires_at": row.expires_at,
        "finalizing_at": row.finalizing_at,
        "completed_at": row.completed_at,
        "failed_at": row.failed_at,
        "expired_at": row.expired_at,
        "cancelling_at": row.cancelling_at,
        "cancelled_at": row.cancelled_at,
        "request_counts": {"total": row.total, "completed": row.completed, "failed": row.failed},
        "metadata": json.loads(row.metadata_json) if row.metadata_json else None,
        "model": row.model,
        "usage": {
            "input_tokens": row.input_tokens,
            "input_tokens_details": {"cached_tokens": row.cached_tokens},
            "output_tokens": row.output_tokens,
            "output_tokens_details": {"reasoning_tokens": row.reasoning_tokens},
            "total_tokens": row.input_tokens + row.output_tokens,
        },
    }


class BatchService:
    def __init__(self, db: Database, wake_workers: Callable[[], None]) -> None:
        self._db = db
        self._wake_workers = wake_workers

    async def create(
        self,
        project_id: str,
        *,
        input_file_id: str,
        endpoint: str,
        completion_window: str,
        metadata: dict[str, Any] | None,
        output_expires_after: int | None = None,
        base_url: str | None = None,
    ) -> dict[str, Any]:
        """`output_expires_after`: seconds after their creation that the output and error files expire;
        `base_url`: the address the client reached oasis at, where the links in the answers point."""
        if endpoint not in BATCH_ENDPOINTS:
            supported = ", ".join(f"'{name}'" for name in BATCH_ENDPOINTS)
            raise invalid_request(
                f"Invalid value: '{endpoint}'. Supported values are: {supported}.",
                param="endpoint",
                code="invalid_value",
            )
        if completion_window not in COMPLETION_WINDOWS:
            raise invalid_request("'completion_window' must be '24h'.", param="completion_window")
        clean_metadata = check_metadata(metadata) if metadata is not None else None
        stamp = now()
        async with self._db.session() as session:
            source = await file_rows.get_file(session, project_id, input_file_id)
            if source is None:
                raise not_found(f"No such File object: {input_file_id}", param="input_file_id")
            if source.purpose != "batch":
                raise invalid_request(
                    f"File {input_file_id} has purpose '{source.purpose}'; a batch needs a file of purpose 'batch'.",
                    param="input_file_id",
                )
            row = BatchJob(
                id=new_id("batch_"),
                project_id=project_id,
                endpoint=endpoint,
                input_file_id=input_file_id,
                completion_window=completion_window,
                status="validating",
                metadata_json=json.dumps(clean_metadata) if clean_metadata is not None else None,
                output_expires_after=output_expires_after,
                base_url=base_url,
                created_at=stamp,
                expires_at=stamp + COMPLETION_WINDOWS[completion_window],
                total=0,
                completed=0,
                failed=0,
                attempts=0,
            )
            session.add(row)
            await session.flush()
            # Read again, locked, after the batch is written: a delete of the file that got in since the first
            # read answers 404 here; one that comes later waits, then sees the batch and keeps the bytes.
            if not await file_rows.existing_file_ids(session, project_id, [input_file_id], for_update=True):
                raise not_found(f"No such File object: {input_file_id}", param="input_file_id")
            await session.commit()
        self._wake_workers()
        return batch_to_wire(row)

    async def retrieve(self, project_id: str, batch_id: str) -> dict[str, Any]:
        async with self._db.session() as session:
            return batch_to_wire(await self._row(session, project_id, batch_id))

    async def list_batches(self, project_id: str, page: PageRequest) -> Page[dict[str, Any]]:
        async with self._db.session() as session:
            found = await batch_rows.list_batches(session, project_id, page)
        return Page(items=[batch_to_wire(row) for row in found.items], has_more=found.has_more)

    async def cancel(self, project_id: str, batch_id: str) -> dict[str, Any]:
        async with self._db.session() as session:
            row = await self._row(session, project_id, batch_id)
            if row.status in ("validating", "in_progress"):
                # The worker sees this at its next commit, lets the requests in flight finish, and writes out
                # the results so far. Conditional: the worker may have moved the batch on since the read.
                moved = await batch_rows.request_cancel(session, row.seq, now())
                await session.commit()
                if moved:
                    self._wake_workers()
                await session.refresh(row)
            if row.status not in ("cancelling", "cancelled"):
                # a conflict with the batch's state, as OpenAI answers it (409, no param or code)
                raise OasisError(409, f"Cannot cancel a batch with status '{row.status}'.")
            return batch_to_wire(row)

    @staticmethod
    async def _row(session: Any, project_id: str, batch_id: str) -> BatchJob:
        row = await batch_rows.get_batch(session, project_id, batch_id)
        if row is None:
            raise not_found(f"No batch found with id '{batch_id}'.", param="batch_id")
        return row
