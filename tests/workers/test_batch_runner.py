"""How one batch request's outcome is recorded: a full engine queue waits, a fault fails only that request."""

from __future__ import annotations

from typing import Any

from oasis.errors import OasisError
from oasis.workers.batches import BatchRunner


async def test_a_full_engine_queue_is_waited_out_not_recorded_as_a_failure() -> None:
    calls = 0

    async def busy_once(body: dict[str, Any]) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OasisError(429, "queue full", type="server_error", headers={"retry-after": "0.01"})
        return {"echo": body["x"]}

    assert await BatchRunner._call(busy_once, {"x": 1}) == (200, {"echo": 1})
    assert calls == 2


async def test_an_unexpected_fault_fails_that_request_with_a_500_envelope() -> None:
    async def broken(body: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("decoder exploded")

    status, body = await BatchRunner._call(broken, {})
    assert status == 500
    assert body["error"]["type"] == "server_error" and "decoder" not in body["error"]["message"]


async def test_streaming_and_client_errors_keep_their_status() -> None:
    async def unknown_model(body: dict[str, Any]) -> dict[str, Any]:
        raise OasisError(404, "no such model", param="model", code="model_not_found")

    assert (await BatchRunner._call(unknown_model, {"stream": True}))[0] == 400
    status, body = await BatchRunner._call(unknown_model, {})
    assert status == 404 and body["error"]["code"] == "model_not_found"
