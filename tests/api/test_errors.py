"""Every error is OpenAI's envelope with the right status; every response carries the request headers.

No JSON-body endpoint exists in the foundation yet, so the body tests mount a small route on the real app:
the validation, parsing and size limits under test are the app's own, shared by every future endpoint.
"""

from __future__ import annotations

import re
from typing import Literal

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel

from tests.conftest import Harness


class _Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class _Body(BaseModel):
    model: str
    messages: list[_Message]
    temperature: float = 1.0


@pytest.fixture
def app(oasis: Harness) -> FastAPI:
    application = oasis.transport.app
    assert isinstance(application, FastAPI)

    @application.post("/v1/test/echo")
    async def echo(body: _Body) -> _Body:
        return body

    @application.get("/v1/test/crash")
    async def crash() -> None:
        raise RuntimeError("secret internal detail")

    return application


def _assert_envelope(response: httpx.Response, status: int, kind: str = "invalid_request_error") -> dict:
    assert response.status_code == status
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == kind
    assert body["error"]["message"]
    return body["error"]


async def test_validation_failures_are_400_with_param(oasis: Harness, app: FastAPI) -> None:
    async with oasis.http() as http:
        wrong_role = await http.post(
            "/v1/test/echo", json={"model": "m", "messages": [{"role": "robot", "content": "x"}]}
        )
        missing = await http.post("/v1/test/echo", json={"messages": []})
        wrong_type = await http.post("/v1/test/echo", json={"model": "m", "messages": [], "temperature": "hot"})
    assert _assert_envelope(wrong_role, 400)["param"] == "messages[0].role"
    missing_error = _assert_envelope(missing, 400)
    assert missing_error["param"] == "model" and "Missing required parameter" in missing_error["message"]
    assert _assert_envelope(wrong_type, 400)["param"] == "temperature"


async def test_malformed_json_is_400(oasis: Harness, app: FastAPI) -> None:
    async with oasis.http() as http:
        response = await http.post(
            "/v1/test/echo",
            content=b'{"model": "m", "messages": [',
            headers={"content-type": "application/json"},
        )
    assert "could not parse the JSON body" in _assert_envelope(response, 400)["message"]


async def test_unknown_routes_are_404_envelopes(oasis: Harness) -> None:
    async with oasis.http() as http:
        response = await http.get("/v1/no/such/thing")
        wrong_method = await http.put("/v1/files")
    error = _assert_envelope(response, 404)
    assert error["code"] == "unknown_url" and "/v1/no/such/thing" in error["message"]
    _assert_envelope(wrong_method, 405)


async def test_oversize_body_is_413(start_oasis) -> None:  # type: ignore[no-untyped-def]
    # JSON bodies are parsed whole, so they have their own limit, far below the upload limit.
    harness: Harness = await start_oasis(server={"max_json_body_bytes": 1_000_000})
    application = harness.transport.app
    assert isinstance(application, FastAPI)

    @application.post("/v1/test/echo")
    async def echo(body: _Body) -> _Body:
        return body

    big = b'{"model": "' + b"m" * 3_000_000 + b'", "messages": []}'

    async def chunked():  # no content-length: the limit must hold while the body streams in
        for start in range(0, len(big), 65536):
            yield big[start : start + 65536]

    async with harness.http() as http:
        declared = await http.post("/v1/test/echo", content=big, headers={"content-type": "application/json"})
        streamed = await http.post("/v1/test/echo", content=chunked(), headers={"content-type": "application/json"})
    assert _assert_envelope(declared, 413)["code"] == "request_too_large"
    assert _assert_envelope(streamed, 413)["code"] == "request_too_large"
    assert streamed.headers["x-request-id"].startswith("req_")
    assert "JSON body (1000000 bytes)" in declared.json()["error"]["message"]


async def test_uploads_may_be_larger_than_the_json_limit(start_oasis) -> None:  # type: ignore[no-untyped-def]
    harness: Harness = await start_oasis(server={"max_json_body_bytes": 1_000_000})
    payload = b"x" * 3_000_000
    uploaded = await harness.sdk().files.create(file=("big.txt", payload), purpose="assistants")
    assert uploaded.bytes == len(payload)


async def test_internal_faults_are_500_with_request_id_and_no_trace(oasis: Harness, app: FastAPI) -> None:
    async with oasis.http() as http:
        response = await http.get("/v1/test/crash")
    error = _assert_envelope(response, 500, kind="server_error")
    request_id = response.headers["x-request-id"]
    assert request_id in error["message"]
    assert "secret internal detail" not in response.text and "Traceback" not in response.text


async def test_every_response_carries_request_id_and_processing_time(oasis: Harness, app: FastAPI) -> None:
    async with oasis.http() as http:
        responses = [
            await http.get("/v1/models"),
            await http.get("/v1/files/file-missing"),
            await http.get("/v1/nowhere"),
            await http.post("/v1/test/echo", content=b"{", headers={"content-type": "application/json"}),
            await http.get("/health"),
        ]
    ids = {r.headers["x-request-id"] for r in responses}
    assert len(ids) == len(responses) and all(i.startswith("req_") for i in ids)
    assert all(int(r.headers["openai-processing-ms"]) >= 0 for r in responses)


async def test_nul_characters_are_a_400_not_a_database_error(oasis: Harness) -> None:
    # PostgreSQL cannot store NUL in text; every database must answer the same clear 400.
    async with oasis.http() as http:
        in_body = await http.post("/v1/vector_stores", json={"name": "a\u0000b"})
        in_query = await http.get("/v1/vector_stores", params={"before": "vs_\u0000"})
        escaped_backslash = await http.post("/v1/vector_stores", json={"name": "C:\\u0000dir"})
    for reply in (in_body, in_query):
        assert reply.status_code == 400
        assert "NUL" in reply.json()["error"]["message"] and reply.json()["error"]["type"] == "invalid_request_error"
    assert escaped_backslash.status_code == 200 and escaped_backslash.json()["name"] == "C:\\u0000dir"


async def test_a_lone_surrogate_anywhere_in_a_body_is_a_400_naming_its_field(oasis: Harness) -> None:
    json_body = {"content-type": "application/json"}
    async with oasis.http() as http:
        lone_high = await http.post("/v1/vector_stores", content=b'{"name": "a \\ud800 b"}', headers=json_body)
        lone_low = await http.post("/v1/vector_stores", content=b'{"metadata": {"k": "\\udc00"}}', headers=json_body)
        reversed_pair = await http.post("/v1/vector_stores", content=b'{"name": "\\udc00\\ud800"}', headers=json_body)
        paired = await http.post("/v1/vector_stores", content=b'{"name": "\\ud83d\\ude00"}', headers=json_body)
        escaped_backslash = await http.post("/v1/vector_stores", content=b'{"name": "C:\\\\ud800"}', headers=json_body)
        stored = (await http.get("/v1/vector_stores")).json()["data"]
    for reply, param in ((lone_high, "name"), (lone_low, "metadata.k"), (reversed_pair, "name")):
        assert reply.status_code == 400, reply.text
        error = reply.json()["error"]
        assert error["type"] == "invalid_request_error" and error["param"] == param
        assert "surrogate" in error["message"]
    assert paired.status_code == 200 and paired.json()["name"] == "\U0001f600"
    assert escaped_backslash.status_code == 200 and escaped_backslash.json()["name"] == "C:\\ud800"
    assert sorted(store["name"] for store in stored) == sorted(["\U0001f600", "C:\\ud800"])


async def test_text_no_database_takes_is_a_400_however_the_body_spells_it(oasis: Harness) -> None:
    """json.loads also reads surrogates written as UTF-8 bytes (ED A0 80), and UTF-16 or UTF-32 bodies; Starlette
    decodes form fields in whatever charset the content-type names (utf-7 can spell a lone surrogate)."""
    json_body = {"content-type": "application/json"}
    form = "multipart/form-data; boundary=B"
    field = b'--B\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n+2AA-\r\n--B--\r\n'
    upload = (
        b'--B\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nassistants\r\n'
        b'--B\r\nContent-Disposition: form-data; name="file"; filename="raw.txt"\r\n\r\n'
        b"a \\u0000 and a \\ud800 as text\r\n--B--\r\n"
    )
    async with oasis.http() as http:
        utf8_surrogate = await http.post("/v1/vector_stores", content=b'{"name": "a\xed\xa0\x80b"}', headers=json_body)
        utf16 = await http.post(
            "/v1/vector_stores", content='{"name": "a\u0000b"}'.encode("utf-16-le"), headers=json_body
        )
        utf7_form = await http.post("/v1/files", content=field, headers={"content-type": form + "; charset=utf-7"})
        json_boundary = await http.post(
            "/v1/files",
            content=upload.replace(b"--B", b"--json"),
            headers={"content-type": "multipart/form-data; boundary=json"},
        )
        infinite = {
            number: await http.post(
                "/v1/assistants", content=b'{"model": "m", "temperature": ' + number + b"}", headers=json_body
            )
            for number in (b"1e400", b"-1E+999", b"1" + b"0" * 400 + b".0")
        }
        tiny = await http.post("/v1/assistants", content=b'{"model": "m", "temperature": 1e-400}', headers=json_body)
        huge_integer = await http.post(
            "/v1/vector_stores",
            content=b'{"name": "n", "expires_after": {"anchor": "last_active_at", "days": 1' + b"0" * 400 + b"}}",
            headers=json_body,
        )
        stored = (await http.get("/v1/vector_stores")).json()["data"]
    assert utf8_surrogate.status_code == 400 and utf8_surrogate.json()["error"]["param"] == "name"
    for number in (b"1e400", b"-1E+999", b"1" + b"0" * 400 + b".0"):  # json.loads reads each as an infinity
        assert infinite[number].status_code == 400, number
        assert "range" in infinite[number].json()["error"]["message"]
    # 1e-400 reads as 0.0, past the middleware (to the route, whose model is unknown); a huge integer is no float
    assert tiny.status_code == 400 and tiny.json()["error"]["code"] == "model_not_found"
    assert huge_integer.status_code == 400
    assert utf16.status_code == 400 and "UTF-8" in utf16.json()["error"]["message"]
    assert utf7_form.status_code == 400 and "UTF-8" in utf7_form.json()["error"]["message"]
    # an upload is no JSON body, whatever its boundary says: its bytes are stored as they are
    assert json_boundary.status_code == 200, json_boundary.text
    assert stored == []


async def test_nan_infinity_and_nesting_past_the_bound_are_400s_before_anything_is_stored(oasis: Harness) -> None:
    from oasis.protocol.json_depth import MAX_DEPTH

    json_body = {"content-type": "application/json"}

    def assistant(parameters: bytes) -> bytes:
        function = b'{"name": "f", "parameters": ' + parameters + b"}"
        return b'{"model": "m", "tools": [{"type": "function", "function": ' + function + b"}]}"

    def nested(levels: int) -> bytes:
        return b'{"a": ' * levels + b"1" + b"}" * levels

    async with oasis.http() as http:
        # json.loads takes the words NaN and Infinity, which JSON has not; stored in a tool's parameters they
        # made every answer about the assistant, its runs and their lists a 500.
        words = {
            word: await http.post("/v1/assistants", content=assistant(b'{"x": ' + word + b"}"), headers=json_body)
            for word in (b"NaN", b"Infinity", b"-Infinity")
        }
        in_strings = await http.post(
            "/v1/assistants", content=assistant(b'{"description": "NaN or Infinity [[["}'), headers=json_body
        )
        deep = await http.post("/v1/assistants", content=assistant(nested(300)), headers=json_body)
        deep_list = await http.post("/v1/embeddings", content=b"[" * 5000 + b"]" * 5000, headers=json_body)
        bearable = await http.post("/v1/assistants", content=assistant(nested(MAX_DEPTH - 10)), headers=json_body)
        stored = (await http.get("/v1/assistants")).json()["data"]
    for word, response in words.items():
        assert _assert_envelope(response, 400)["message"].startswith("A number in the request is NaN"), word
    deep_error = _assert_envelope(deep, 400)
    assert f"more than {MAX_DEPTH} levels" in deep_error["message"]
    assert _assert_envelope(deep_list, 400)["message"] == deep_error["message"]
    # The same words inside strings, and nesting within the bound, pass on to the route (whose model is unknown).
    assert in_strings.json()["error"]["code"] == bearable.json()["error"]["code"] == "model_not_found"
    assert stored == []


async def test_a_second_content_type_does_not_lift_the_json_limit(start_oasis) -> None:  # type: ignore[no-untyped-def]
    harness: Harness = await start_oasis(server={"max_json_body_bytes": 1_000_000})
    big = b'{"model": "' + b"m" * 2_000_000 + b'", "messages": []}'
    headers = [("content-type", "application/json"), ("content-type", "multipart/form-data; boundary=x")]
    async with harness.http() as http:
        disguised = await http.post("/v1/chat/completions", content=big, headers=headers)
        multipart_to_json_route = await http.post(
            "/v1/chat/completions", content=big, headers={"content-type": "multipart/form-data; boundary=x"}
        )
    assert _assert_envelope(disguised, 413)["code"] == "request_too_large"
    assert _assert_envelope(multipart_to_json_route, 413)["code"] == "request_too_large"


async def test_docs_work_offline_and_declare_the_bearer_scheme(oasis: Harness) -> None:
    async with oasis.http(api_key=None) as http:
        page = await http.get("/docs")
        assert page.status_code == 200
        # Every script and style comes from this server: nothing to fetch from a CDN.
        sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert sources and all(source.startswith("/") for source in sources), sources
        for source in sources:
            asset = await http.get(source)
            assert asset.status_code == 200 and len(asset.content) > 100, source
        schema = (await http.get("/openapi.json")).json()
    assert schema["components"]["securitySchemes"]["ApiKeyAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "An oasis API key (sk-oasis-…).",
    }
    assert schema["security"] == [{"ApiKeyAuth": []}]
