"""Tokenizer extensions served at the server root, in vLLM's shapes (documented in the README)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from oasis.api.deps import ContainerDep, PrincipalDep

router = APIRouter(tags=["Extensions"])


class TokenizeBody(BaseModel):
    prompt: str
    model: str | None = None
    add_special_tokens: bool = True


class DetokenizeBody(BaseModel):
    tokens: list[int]
    model: str | None = None


@router.get("/tokenizer_info")
async def tokenizer_info(container: ContainerDep, _principal: PrincipalDep, model: str | None = None) -> dict[str, Any]:
    return container.tokenizer.info(model)


@router.post("/tokenize")
async def tokenize(body: TokenizeBody, container: ContainerDep, _principal: PrincipalDep) -> dict[str, Any]:
    return container.tokenizer.tokenize(body.model, body.prompt, body.add_special_tokens)


@router.post("/detokenize")
async def detokenize(body: DetokenizeBody, container: ContainerDep, _principal: PrincipalDep) -> dict[str, Any]:
    return container.tokenizer.detokenize(body.model, body.tokens)
