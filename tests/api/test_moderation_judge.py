"""Moderation by a configured chat model (engine kind `llm-judge`, issue 16), through the SDK.

The judge here is the shipped SmolLM2-135M: far too small to judge well, so these tests check what does not depend
on its judgement (the request reaches it, its constrained answer becomes OpenAI's reply, errors name the cause).
How Llama Guard's answers are read is checked on the answers' own text below."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import openai
import pytest

from oasis.engines.llm_judge import (
    TAXONOMIES,
    read_categories,
    read_llama_guard,
    unsafe_probability,
)
from oasis.engines.moderation import CATEGORIES
from tests.api.test_moderations import as_dict
from tests.conftest import E5, Harness, smollm

JUDGE = {"id": "judge", "engine": "llm-judge", "options": {"judge_model": "smollm2-135m-instruct"}}
GUARD = {
    "id": "guard",
    "engine": "llm-judge",
    "options": {"judge_model": "smollm2-135m-instruct", "style": "llama-guard", "max_tokens": 8},
}


@pytest.fixture
async def judge_oasis(start_oasis: Callable[..., Any]) -> Harness:
    harness: Harness = await start_oasis(
        engine_factories=None,
        models=[
            smollm(),
            E5,
            JUDGE,
            GUARD,
            # A served name is checked at start; a fine-tune's only once a project asks for it (here: none has it).
            {"id": "judge-of-nothing", "engine": "llm-judge", "options": {"judge_model": "ft:gone:org::abc"}},
            {"id": "judge-of-vectors", "engine": "llm-judge", "options": {"judge_model": "multilingual-e5-small"}},
            {**JUDGE, "id": "short-judge", "options": {**JUDGE["options"], "window_words": 16, "max_windows": 2}},
        ],
    )
    return harness


async def test_the_judges_answer_is_openais_reply(judge_oasis: Harness) -> None:
    texts = ["I will find you and break every bone in your body.", "Thanks for the lovely dinner!"]
    reply = await judge_oasis.sdk().moderations.create(model="judge", input=texts)
    assert reply.id.startswith("modr-") and reply.model == "judge" and len(reply.results) == 2
    for result in reply.results:
        scores, categories = as_dict(result.category_scores), as_dict(result.categories)
        assert set(scores) == set(categories) == set(CATEGORIES)
        assert all(score in (0.0, 1.0) for score in scores.values())  # a verdict, not a probability
        assert categories == {name: score >= 0.5 for name, score in scores.items()}
        assert result.flagged == any(categories.values())
        # newer clients' field (openai 1.30.5 keeps it as the plain dict it received)
        applied = result.model_dump(by_alias=True)["category_applied_input_types"]
        assert {name: kinds for name, kinds in applied.items() if kinds is not None} == {
            name: ["text"] for name in CATEGORIES
        }


def completion_tokens(metrics: str, model: str) -> float:
    for line in metrics.splitlines():
        if line.startswith("oasis_tokens_total{") and f'model="{model}"' in line and 'kind="completion"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_the_judge_is_the_chat_model_it_names(judge_oasis: Harness) -> None:
    """Each window is one constrained chat completion of the named model: its tokens are counted under it."""
    http = judge_oasis.http()
    before = completion_tokens((await http.get("/metrics")).text, "smollm2-135m-instruct")
    words = " ".join(["You are a worthless idiot and everyone at school laughs at you."] * 30)  # 2 windows of 300
    response = await http.post("/v1/moderations", json={"model": "judge", "input": words})
    assert response.status_code == 200, response.text
    after = completion_tokens((await http.get("/metrics")).text, "smollm2-135m-instruct")
    assert after - before >= 2 * len('{"categories":[]}') // 4  # two answers of at least a few tokens each


async def test_a_long_text_is_judged_window_by_window(judge_oasis: Harness) -> None:
    http = judge_oasis.http()
    words = " ".join(["calm"] * 40)  # three windows of 16 words (a quarter read twice): over short-judge's 2
    response = await http.post("/v1/moderations", json={"model": "short-judge", "input": words})
    assert response.status_code == 400 and response.json()["error"]["param"] == "input"
    response = await http.post("/v1/moderations", json={"model": "short-judge", "input": " ".join(["calm"] * 20)})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("model", "status", "judge"),
    [
        ("judge-of-nothing", 500, "ft:gone:org::abc"),
        ("judge-of-vectors", 500, "multilingual-e5-small"),
        ("guard", 502, "smollm2-135m-instruct"),  # SmolLM2 does not answer `safe` / `unsafe`
    ],
)
async def test_a_judge_that_cannot_judge_says_why(judge_oasis: Harness, model: str, status: int, judge: str) -> None:
    response = await judge_oasis.http().post("/v1/moderations", json={"model": model, "input": "hello there"})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == "model_failed" and error["type"] == "server_error"
    assert f"'{judge}'" in error["message"]  # names the judge behind the moderation model


async def test_a_judge_reads_text_only(judge_oasis: Harness) -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    with pytest.raises(openai.BadRequestError) as caught:
        await judge_oasis.sdk().moderations.create(model="judge", input=[{"type": "text", "text": "hi"}, image])
    assert caught.value.body and caught.value.body["param"] == "input[1]"  # type: ignore[index]


def scores_of(array: np.ndarray) -> dict[str, float]:
    return {name: round(float(value), 3) for name, value in zip(CATEGORIES, array, strict=True) if value}


def test_llama_guard_answers_map_to_openais_categories() -> None:
    guard3 = TAXONOMIES["llama-guard-3"]
    assert scores_of(read_llama_guard("safe", None, guard3)) == {}
    assert scores_of(read_llama_guard("\n\nunsafe\nS1,S10", None, guard3)) == {"hate": 1.0, "violence": 1.0}
    assert scores_of(read_llama_guard("unsafe\nS4", None, guard3)) == {"sexual": 1.0, "sexual/minors": 1.0}
    assert scores_of(read_llama_guard("unsafe\nS13", None, guard3)) == {}  # elections: no OpenAI category
    assert scores_of(read_llama_guard("unsafe\nS10", None, TAXONOMIES["llama-guard-2"])) == {"self-harm": 1.0}
    assert scores_of(read_llama_guard("unsafe\nharassment", None, guard3)) == {"harassment": 1.0}
    with pytest.raises(ValueError, match="safe"):
        read_llama_guard("I think this is fine.", None, guard3)


def test_llama_guards_first_token_is_its_score() -> None:
    first = {
        "token": "unsafe",
        "logprob": math.log(0.7),
        "top_logprobs": [{"token": "unsafe", "logprob": math.log(0.7)}, {"token": "safe", "logprob": math.log(0.28)}],
    }
    logprobs = {"content": [{"token": "\n\n", "logprob": 0.0, "top_logprobs": []}, first]}
    assert unsafe_probability(logprobs) == pytest.approx(0.7 / 0.98)
    assert scores_of(read_llama_guard("unsafe\nS11", logprobs, TAXONOMIES["llama-guard-3"])) == {
        "self-harm": round(0.7 / 0.98, 3)
    }
    assert unsafe_probability(None) == 1.0  # a judge without logprobs: its word
    assert unsafe_probability({"content": [{"token": "uns", "logprob": -0.1, "top_logprobs": []}]}) == 1.0


def test_the_categories_answer_is_read_inside_other_text() -> None:
    assert scores_of(read_categories('{"categories": ["violence", "hate"]}')) == {"hate": 1.0, "violence": 1.0}
    assert scores_of(read_categories('Sure! {"categories": ["Harassment"]} Hope this helps.')) == {"harassment": 1.0}
    two = '{"reasoning": "a threat"} then {"categories": ["violence"]} and {"x": 1}'
    assert scores_of(read_categories(two)) == {"violence": 1.0}
    assert scores_of(read_categories('{"categories": ["spam"]}')) == {}
    cut_off = '{ "categories": [ "hate", "violence", "viol'  # max_tokens ran out: what it had named stands
    assert scores_of(read_categories(cut_off)) == {"hate": 1.0, "violence": 1.0}
    with pytest.raises(ValueError):
        read_categories("none of them")
