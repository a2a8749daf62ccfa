"""Documented extensions of the generated wire types.

The vendored spec (2.0.0, May 2024) predates values that OpenAI's API accepts today and that current SDKs
send or expect. Each class here subclasses the generated type and widens exactly one thing, saying why.
"""

from __future__ import annotations

from typing import Literal

from oasis.protocol import openapi_types as spec

FilePurpose = Literal[
    "assistants",
    "assistants_output",
    "batch",
    "batch_output",
    "fine-tune",
    "fine-tune-results",
    "vision",
]
UPLOAD_PURPOSES: tuple[FilePurpose, ...] = ("assistants", "batch", "fine-tune", "vision")


class FileObject(spec.OpenAIFile):
    """`OpenAIFile` with the batch and vision purposes that the Batch API and vision uploads added."""

    purpose: FilePurpose  # type: ignore[assignment]


class FileList(spec.ListFilesResponse):
    """`ListFilesResponse` with the cursor fields that current SDKs page with."""

    data: list[FileObject]  # type: ignore[assignment]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class ModelList(spec.ListModelsResponse):
    """`ListModelsResponse`; OpenAI's list is not paged, but carrying has_more keeps generic pagers happy."""

    has_more: bool = False
