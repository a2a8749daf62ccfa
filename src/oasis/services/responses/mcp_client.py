"""A small client of the Model Context Protocol's Streamable HTTP transport (JSON-RPC 2.0 posted to the server's
URL; each answer comes as JSON or as server-sent events): what the `mcp` tool of responses needs of a server,
its tools and calling one. (The older HTTP+SSE transport, a GET stream and a second URL, is not spoken.)"""

from __future__ import annotations

import itertools
import json
from types import TracebackType
from typing import Any

import httpx

PROTOCOL_VERSION = "2025-06-18"
TIMEOUT_SECONDS = 60.0
MAX_TOOL_PAGES = 20
# The most of a tool's output kept (and shown to the model).
MAX_OUTPUT_CHARS = 100_000


class McpError(Exception):
    """The server could not be reached, or answered with an error; the message says which."""


class McpSession:
    """One session with a server: initialized on entry, its session id (when it gives one) sent with each request."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self._url = url
        self._headers = {
            **headers,
            "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json",
        }
        self._numbers = itertools.count(1)
        self._client = httpx.AsyncClient(timeout=TIMEOUT_SECONDS, follow_redirects=True)

    async def __aenter__(self) -> McpSession:
        try:
            await self._request(
                "initialize",
                {
                    "protocolVersion": PROTOCOL_VERSION,
                    "capabilities": {},
                    "clientInfo": {"name": "oasis", "version": "1"},
                },
            )
            self._headers["MCP-Protocol-Version"] = PROTOCOL_VERSION
            await self._post({"jsonrpc": "2.0", "method": "notifications/initialized"})
        except BaseException:
            await self._client.aclose()
            raise
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self._client.aclose()

    async def list_tools(self) -> list[dict[str, Any]]:
        tools: list[dict[str, Any]] = []
        cursor = None
        for _ in range(MAX_TOOL_PAGES):
            result = await self._request("tools/list", {"cursor": cursor} if cursor else {})
            tools += [tool for tool in result.get("tools") or [] if isinstance(tool, dict) and tool.get("name")]
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
        response = await self._post({"jsonrpc": "2.0", "id": number, "method": method, "params": params})
        answer = _answer(response, number)
        if "error" in answer:
            error = answer["error"] if isinstance(answer["error"], dict) else {}
            raise McpError(f"{method} failed: {error.get('message') or answer['error']}")
        result = answer.get("result")
        return result if isinstance(result, dict) else {}

    async def _post(self, body: dict[str, Any]) -> httpx.Response:
        try:
            response = await self._client.post(self._url, json=body, headers=self._headers)
        except httpx.HTTPError as exc:
            raise McpError(f"the server could not be reached: {exc}") from None
        if response.status_code >= 400:
            raise McpError(f"HTTP status {response.status_code} ({response.reason_phrase})")
        session = response.headers.get("mcp-session-id")
        if session:
            self._headers["Mcp-Session-Id"] = session
        return response


def _answer(response: httpx.Response, number: int) -> dict[str, Any]:
    """The JSON-RPC answer to request `number`: the body, or the event of the stream that carries it."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        for event in response.text.split("\n\n"):
            data = "\n".join(line[5:].lstrip() for line in event.splitlines() if line.startswith("data:"))
            if not data:
                continue
            try:
                message = json.loads(data)
            except ValueError:
                continue
            if isinstance(message, dict) and message.get("id") == number:
                return message
        raise McpError("the server's event stream held no answer")
    try:
        message = response.json()
    except ValueError:
        raise McpError("the server's answer is not JSON") from None
    if isinstance(message, list):  # a batch answer
        message = next((item for item in message if isinstance(item, dict) and item.get("id") == number), {})
    if not isinstance(message, dict):
        raise McpError("the server's answer is not a JSON-RPC answer")
    return message
