"""A small client of the Model Context Protocol's Streamable HTTP transport (JSON-RPC 2.0 posted to the server's
URL; each answer comes as JSON or as server-sent events): what the `mcp` tool of responses needs of a server,
its tools and calling one. (The older HTTP+SSE transport, a GET stream and a second URL, is not spoken.)"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from types import TracebackType
from typing import Any

import httpx

PROTOCOL_VERSION = "2025-06-18"
# The longest one request (its whole answer) may take.
TIMEOUT_SECONDS = 60.0
MAX_TOOL_PAGES = 20
# The most of an answer read (a larger one is an error, not read whole into memory).
MAX_ANSWER_BYTES = 8 << 20
# The most of a tool's output kept on its item.
MAX_OUTPUT_CHARS = 100_000


class McpError(Exception):
    """The server could not be reached, or answered with an error; the message says which."""


class McpSession:
    """One session with a server: initialized on entry, its session id (when it gives one) sent with each request,
    and ended on exit. Redirects are not followed (the URL checked is the URL reached)."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self._url = url
        self._headers = {
            **headers,
            "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json",
        }
        self._numbers = itertools.count(1)
        self._client = httpx.AsyncClient(timeout=TIMEOUT_SECONDS, follow_redirects=False)

    async def __aenter__(self) -> McpSession:
        try:
            started = await self._request(
                "initialize",
                {
                    "protocolVersion": PROTOCOL_VERSION,
                    "capabilities": {},
                    "clientInfo": {"name": "oasis", "version": "1"},
                },
            )
            version = started.get("protocolVersion")
            self._headers["MCP-Protocol-Version"] = version if isinstance(version, str) else PROTOCOL_VERSION
            await self._send({"jsonrpc": "2.0", "method": "notifications/initialized"}, None)
        except BaseException:
            await self._client.aclose()
            raise
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        try:
            if "Mcp-Session-Id" in self._headers:  # the spec asks clients to end the sessions they leave
                with contextlib.suppress(httpx.HTTPError):
                    await self._client.delete(self._url, headers=self._headers, timeout=5.0)
        finally:
            await self._client.aclose()

    async def list_tools(self) -> list[dict[str, Any]]:
        tools: list[dict[str, Any]] = []
        cursor = None
        for _ in range(MAX_TOOL_PAGES):
            result = await self._request("tools/list", {"cursor": cursor} if cursor else {})
            tools += [
                tool
                for tool in result.get("tools") or []
                if isinstance(tool, dict) and isinstance(tool.get("name"), str)
            ]
            cursor = result.get("nextCursor")
            if not cursor:
                break
        return tools

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> tuple[str, bool]:
        """The tool's output as text (its text parts; other parts as JSON), and whether it is an error."""
        result = await self._request("tools/call", {"name": name, "arguments": arguments})
        parts = []
        for part in result.get("content") or []:
            if isinstance(part, dict) and part.get("type") == "text":
                parts.append(str(part.get("text") or ""))
            else:
                parts.append(json.dumps(part))
        if not parts and result.get("structuredContent") is not None:
            parts.append(json.dumps(result["structuredContent"]))
        return "\n".join(parts)[:MAX_OUTPUT_CHARS], bool(result.get("isError"))

    async def _request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        number = next(self._numbers)
        answer = await self._send({"jsonrpc": "2.0", "id": number, "method": method, "params": params}, number)
        assert answer is not None
        if "error" in answer:
            error = answer["error"] if isinstance(answer["error"], dict) else {}
            raise McpError(f"{method} failed: {error.get('message') or answer['error']}")
        result = answer.get("result")
        return result if isinstance(result, dict) else {}

    async def _send(self, body: dict[str, Any], number: int | None) -> dict[str, Any] | None:
        """Posts a message; the answer to request `number` (None: a notification, no answer read)."""
        try:
            async with asyncio.timeout(TIMEOUT_SECONDS):
                async with self._client.stream("POST", self._url, json=body, headers=self._headers) as response:
                    if response.status_code >= 300:  # a redirect too: the URL checked is the URL reached
                        raise McpError(f"HTTP status {response.status_code} ({response.reason_phrase})")
                    session = response.headers.get("mcp-session-id")
                    if session:
                        self._headers["Mcp-Session-Id"] = session
                    if number is None:
                        return None
                    if response.headers.get("content-type", "").startswith("text/event-stream"):
                        return await _answer_in_stream(response, number)
                    return _answer_of(json.loads(await _read_capped(response)), number)
        except TimeoutError:
            raise McpError(f"no answer within {TIMEOUT_SECONDS:g} seconds") from None
        except (httpx.HTTPError, httpx.InvalidURL, UnicodeEncodeError) as exc:
            raise McpError(f"the server could not be reached: {exc}") from None
        except ValueError:
            raise McpError("the server's answer is not JSON") from None


async def _read_capped(response: httpx.Response) -> bytes:
    read = bytearray()
    async for chunk in response.aiter_bytes():
        read += chunk
        if len(read) > MAX_ANSWER_BYTES:
            raise McpError(f"the server's answer is larger than {MAX_ANSWER_BYTES >> 20} MB")
    return bytes(read)


async def _answer_in_stream(response: httpx.Response, number: int) -> dict[str, Any]:
    """The answer to request `number` in the server's event stream, read until it comes (the server's own
    requests and notifications on the stream are passed over)."""
    data: list[str] = []
    read = 0
    async for line in response.aiter_lines():  # \r\n, \n and \r all end a line
        read += len(line) + 1
        if read > MAX_ANSWER_BYTES:
            raise McpError(f"the server's answer is larger than {MAX_ANSWER_BYTES >> 20} MB")
        if line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
            continue
        if line or not data:
            continue
        found, data = _event_answer(data, number), []
        if found is not None:
            return found
    found = _event_answer(data, number)  # a last event the stream ended without a blank line after
    if found is not None:
        return found
    raise McpError("the server's event stream ended without an answer")


def _event_answer(data: list[str], number: int) -> dict[str, Any] | None:
    try:
        parsed = json.loads("\n".join(data)) if data else None
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) and _answers(parsed, number) else None


def _answers(message: Any, number: int) -> bool:
    """Whether a message is the answer to request `number` (not a request or notification of the server's)."""
    return (
        isinstance(message, dict)
        and message.get("id") == number
        and "method" not in message
        and ("result" in message or "error" in message)
    )


def _answer_of(message: Any, number: int) -> dict[str, Any]:
    if isinstance(message, list):  # a batch answer
        message = next((item for item in message if _answers(item, number)), None)
    if not isinstance(message, dict) or not _answers(message, number):
        raise McpError("the server's answer is not a JSON-RPC answer to the request")
    return message
