"""Moderated chat completions (the request's `moderation`, added after the 2.0.0 spec): the input's messages and
each generated answer scored by a moderation model (the one `POST /v1/moderations` would use under that name), the
results in the answer's `moderation`. Under a `block` policy a flagged input is not answered, and a flagged answer
is withheld: each such choice ends with `finish_reason: content_filter` and no content."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from oasis.errors import OasisError
from oasis.protocol.extensions import ChatCompletionRequest
from oasis.services.moderations.service import MAX_INPUTS


class Moderator(Protocol):
    """What moderated chat needs of the moderation service."""

    async def create(self, body: dict[str, Any]) -> dict[str, Any]: ...

    def served_model(self, model: str) -> str: ...


@dataclass(frozen=True)
class ModerationPlan:
    model: str
    block_input: bool
    block_output: bool


def moderation_plan(request: ChatCompletionRequest) -> ModerationPlan | None:
    """The request's moderation, or None when it asks for none. A side the policy leaves out is scored."""
    asked = request.moderation
    if asked is None:
        return None
    policy = asked.policy
    block_input = policy is not None and policy.input is not None and policy.input.mode == "block"
    block_output = policy is not None and policy.output is not None and policy.output.mode == "block"
    return ModerationPlan(asked.model, block_input, block_output)


def input_texts(request: ChatCompletionRequest) -> list[str]:
    """What the input's moderation scores: each message's text (its text parts joined), in order."""
    texts = []
    for message in request.messages:
        content = message.content
        if isinstance(content, list):
            parts = [getattr(part, "root", part) for part in content]
            content = "\n".join(text for part in parts if isinstance(text := getattr(part, "text", None), str))
        if isinstance(content, str) and content.strip():
            texts.append(content)
    return texts


async def moderation_results(
    moderate: Moderator, plan: ModerationPlan, texts: list[str], source: str = "messages"
) -> dict[str, Any]:
    """The moderation of `texts` as a chat answer carries it: one result a text, asked for MAX_INPUTS at a time
    (the most one moderation takes). A bad moderation model is the request's error, naming `moderation.model`;
    texts the moderation cannot take name `source`, where they came from."""
    results: list[dict[str, Any]] = []
    try:
        # with nothing to score, the model is still checked and named as every other side names it
        model = moderate.served_model(plan.model) if not texts else plan.model
        for start in range(0, len(texts), MAX_INPUTS):
            reply = await moderate.create({"model": plan.model, "input": texts[start : start + MAX_INPUTS]})
            model = reply["model"]
            results += [{"type": "moderation_result", "model": model, **result} for result in reply["results"]]
    except OasisError as exc:
        if exc.param == "model":
            exc.param = "moderation.model"
        elif exc.param is not None and exc.param.startswith("input"):
            exc.param = source
        raise
    return {"type": "moderation_results", "model": model, "results": results}


def no_results(model: str) -> dict[str, Any]:
    """The answers' side of a moderation when no answer was made (a blocked input)."""
    return {"type": "moderation_results", "model": model, "results": []}


def flagged(moderation: dict[str, Any]) -> bool:
    return any(result["flagged"] for result in moderation["results"])


async def output_moderation(
    moderate: Moderator, plan: ModerationPlan, answers: list[str]
) -> tuple[dict[str, Any], list[bool]]:
    """The answers' moderation (one result an answer with text), and which answers it flags."""
    scored = [index for index, answer in enumerate(answers) if answer.strip()]
    moderation = await moderation_results(moderate, plan, [answers[index] for index in scored], "moderation")
    marks = [False] * len(answers)
    for index, result in zip(scored, moderation["results"], strict=True):
        marks[index] = bool(result["flagged"])
    return moderation, marks
