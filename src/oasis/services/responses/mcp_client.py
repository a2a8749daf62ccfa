"""A small client of the Model Context Protocol over HTTP: what the `mcp` tool of responses needs of a server, its
tools and calling one. It speaks the Streamable HTTP transport (JSON-RPC 2.0 posted to the server's URL; each answer
comes as JSON or as server-sent events) and, for a server that refuses that, the older HTTP+SSE one (a GET stream
that names a second URL to post to, and carries the answers), as the spec's backwards compatibility section asks."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

PROTOCOL_VERSION = "2025-06-18"
# The longest one request (its whole answer) may take.
TIMEOUT_SECONDS = 60.0
# The longest an HTTP+SSE server's stream may take to name its endpoint (its first event, sent at once).
ENDPOINT_SECONDS = 10.0
MAX_TOOL_PAGES = 20
# The most of an answer read (a larger one is an error, not read whole into memory).
MAX_ANSWER_BYTES = 8 << 20
# What ends a line of an event stream.
_LINE_END = re.compile(rb"\r\n|\r|\n")
# The most of a tool's output kept on its item.
MAX_OUTPUT_CHARS = 100_000


class McpError(Exception):
    """The server could not be reached, or answered with an error; the message says which."""


class McpSession:
    """One session with a server: initialized on entry, its session id (when it gives one) sent with each request,
    and ended on exit. Redirects are not followed (the URL checked is the URL reached); `may_reach` checks the
    endpoint an HTTP+SSE server names, as the server's own URL was checked."""

    def __init__(self, url: str, headers: dict[str, str], may_reach: Callable[[str], bool]) -> None:
        self._url = url
        self._may_reach = may_reach
        self._headers = {
            **headers,
            "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json",
        }
        self._numbers = itertools.count(1)
        self._client = httpx.AsyncClient(timeout=TIMEOUT_SECONDS, follow_redirects=False)
        # The older transport's stream, once the server has refused Streamable HTTP.
        self._stream: _EventStream | None = None

    async def __aenter__(self) -> McpSession:
        initialize = {
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "oasis", "version": "1"},
        }
        try:
            try:
                started = await self._request("initialize", initialize)
            except _RefusedPost as refused:
                # A 4xx to the first POST: the server may speak only the older transport, whose stream is a GET.
                self._stream = await _EventStream.open(self._client, self._url, self._headers, refused, self._may_reach)
                started = await self._request("initialize", initialize)
            version = started.get("protocolVersion")
            self._headers["MCP-Protocol-Version"] = version if isinstance(version, str) else PROTOCOL_VERSION
            await self._send({"jsonrpc": "2.0", "method": "notifications/initialized"}, None)
        except BaseException:
            await self._close()
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
            await self._close()

    async def _close(self) -> None:
        try:
            if self._stream is not None:  # the older transport's session ends with its stream
                await self._stream.aclose()
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
                if self._stream is not None:
                    return await self._stream.send(body, number, self._headers)
                async with self._client.stream("POST", self._url, json=body, headers=self._headers) as response:
                    if response.status_code >= 300:  # a redirect too: the URL checked is the URL reached
                        refused = _status_error(response)
                        if 400 <= response.status_code < 500 and body.get("method") == "initialize":
                            raise _RefusedPost(str(refused))
                        raise refused
                    session = response.headers.get("mcp-session-id")
                    if session:
                        self._headers["Mcp-Session-Id"] = session
                    if number is None:
                        return None
                    if _is_event_stream(response):
                        return await _answer_in_stream(response, number)
                    return _answer_of(json.loads(await _read_capped(response)), number)
        except TimeoutError:
            raise McpError(f"no answer within {TIMEOUT_SECONDS:g} seconds") from None
        except (httpx.HTTPError, httpx.InvalidURL, UnicodeEncodeError) as exc:
            raise McpError(f"the server could not be reached: {exc}") from None
        except ValueError:
            raise McpError("the server's answer is not JSON") from None


class _RefusedPost(McpError):
    """The server answered the first POST with a 4xx status (its message says which)."""


def _too_large() -> McpError:
    return McpError(f"the server's answer is larger than {MAX_ANSWER_BYTES >> 20} MB")


def _status_error(response: httpx.Response) -> McpError:
    return McpError(f"HTTP status {response.status_code} ({response.reason_phrase})")


class _EventStream:
    """The older HTTP+SSE transport: a GET stream whose first event names the URL messages are posted to (on the
    server's own origin), and on which the answers come as `message` events, matched here to the requests waiting for
    them."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        response: httpx.Response,
        events: AsyncIterator[tuple[str, str]],
        endpoint: str,
    ) -> None:
        self._client = client
        self._response = response
        self._events = events
        self._endpoint = endpoint
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ended: McpError | None = None
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(
        cls,
        client: httpx.AsyncClient,
        url: str,
        headers: dict[str, str],
        refused: McpError,
        may_reach: Callable[[str], bool],
    ) -> _EventStream:
        """The stream at `url`, once its endpoint event has come. Where no such stream comes, the error says why the
        POST was refused too (the server may speak Streamable HTTP and have refused the request itself)."""
        get_headers = {**headers, "Accept": "text/event-stream"}
        get_headers.pop("Content-Type", None)
        # Idle time between events is not an error (each request has its own limit); connecting is bounded.
        request = client.build_request(
            "GET", url, headers=get_headers, timeout=httpx.Timeout(TIMEOUT_SECONDS, read=None)
        )
        try:
            async with asyncio.timeout(ENDPOINT_SECONDS):
                response = await client.send(request, stream=True)
                try:
                    if response.status_code != 200 or not _is_event_stream(response):
                        raise refused
                    events = _events(response, each_capped=True)
                    kind, data = await anext(events, ("", ""))
                    if kind != "endpoint" or not data.strip():
                        raise McpError(f"{refused}; its event stream did not begin with an endpoint")
                    endpoint = urljoin(url, data.strip())
                    if urlsplit(endpoint)[:2] != urlsplit(url)[:2]:  # the URL checked is the URL reached
                        raise McpError(f"the server's endpoint {endpoint} is not on its own origin")
                    if not may_reach(endpoint):
                        raise McpError(
                            f"the server's endpoint {endpoint} is outside the URLs oasis's operator allows "
                            "(`responses.mcp_server_urls`)"
                        )
                except BaseException:
                    await response.aclose()
                    raise
        except TimeoutError:
            raise McpError(f"{refused}; no endpoint event within {ENDPOINT_SECONDS:g} seconds") from None
        except (httpx.HTTPError, httpx.InvalidURL, UnicodeEncodeError, ValueError) as exc:
            # ValueError: an endpoint urllib cannot read (an unclosed IPv6 bracket, say)
            raise McpError(f"{refused}; no event stream either: {exc}") from None
        return cls(client, response, events, endpoint)

    async def send(self, body: dict[str, Any], number: int | None, headers: dict[str, str]) -> dict[str, Any] | None:
        if self._ended is not None:
            raise self._ended
        waiting: asyncio.Future[dict[str, Any]] | None = None
        if number is not None:  # waited for before posting: the answer may come before the POST's own
            waiting = self._waiting[number] = asyncio.get_running_loop().create_future()
        try:
            # the answer comes on the stream: the POST's own body (202's is empty) is not read
            async with self._client.stream("POST", self._endpoint, json=body, headers=headers) as posted:
                if posted.status_code >= 300:
                    raise _status_error(posted)
            return None if waiting is None else await waiting
        finally:
            if number is not None:
                self._waiting.pop(number, None)
            if waiting is not None and waiting.done() and not waiting.cancelled():
                waiting.exception()  # retrieved: a stream that ended while the POST failed is not logged as lost

    async def aclose(self) -> None:
        self._reader.cancel()
        await asyncio.wait([self._reader])  # not awaited itself: a cancellation of the caller's own goes on
        await self._response.aclose()

    async def _read(self) -> None:
        ended = McpError("the server's event stream ended")
        try:
            async for kind, data in self._events:
                if kind != "message":
                    continue
                try:
                    message = json.loads(data)
                except ValueError:
                    continue
                if isinstance(message, dict) and type(message.get("id")) is int:
                    waiting = self._waiting.get(message["id"])
                    if waiting is not None and not waiting.done() and _answers(message, message["id"]):
                        waiting.set_result(message)
        except McpError as exc:
            ended = exc
        except Exception as exc:  # the stream broke: every request still waiting fails now, not at its time limit
            ended = McpError(f"the server's event stream broke: {exc}")
        self._ended = ended
        for waiting in self._waiting.values():
            if not waiting.done():
                waiting.set_exception(ended)


def _is_event_stream(response: httpx.Response) -> bool:
    return response.headers.get("content-type", "").startswith("text/event-stream")


async def _events(response: httpx.Response, each_capped: bool = False) -> AsyncIterator[tuple[str, str]]:
    """The events of a server-sent event stream, each as its type (`message` unless named) and its data. The cap on
    what is read is for the whole stream (an answer's), or, `each_capped`, for each event (a session's stream)."""
    kind, read = "", 0
    data: list[str] = []
    async for line in _lines(response):
        read += len(line) + 1
        if read > MAX_ANSWER_BYTES:
            raise _too_large()
        field, _, value = line.removeprefix("\ufeff").partition(":")
        if not line:
            if data and (len(data) > 1 or data[0]):  # a lone `data:` is no event
                yield kind or "message", "\n".join(data)
            kind, data = "", []
            if each_capped:
                read = 0
        elif field == "data":
            data.append(value.removeprefix(" "))
        elif field == "event":
            kind = value.strip()
    if data and (len(data) > 1 or data[0]):  # a last event the stream ended without a blank line after
        yield kind or "message", "\n".join(data)


async def _lines(response: httpx.Response) -> AsyncIterator[str]:
    """The stream's lines (each ended by \r\n, \n or \r), as UTF-8. Unlike httpx's `aiter_lines`, a line is not
    held whole in memory however long it grows: one past the answer cap is an error as soon as it is."""
    pending = b""
    after_cr = False  # the last chunk ended with \r: a \n starting the next one ends no line of its own
    async for chunk in response.aiter_bytes():
        if not chunk:
            continue
        if after_cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        after_cr = False
        pending += chunk
        start = 0
        for end in _LINE_END.finditer(pending):
            yield pending[start : end.start()].decode("utf-8", errors="replace")
            start = end.end()
            after_cr = end.group() == b"\r" and start == len(pending)
        pending = pending[start:]
        if len(pending) > MAX_ANSWER_BYTES:
            raise _too_large()
    if pending:
        yield pending.decode("utf-8", errors="replace")


async def _read_capped(response: httpx.Response) -> bytes:
    read = bytearray()
    async for chunk in response.aiter_bytes():
        read += chunk
        if len(read) > MAX_ANSWER_BYTES:
            raise _too_large()
    return bytes(read)


async def _answer_in_stream(response: httpx.Response, number: int) -> dict[str, Any]:
    """The answer to request `number` in the server's event stream, read until it comes (the server's own
    requests and notifications on the stream are passed over)."""
    async for _, data in _events(response):
        found = _event_answer(data, number)
        if found is not None:
            return found
    raise McpError("the server's event stream ended without an answer")


def _event_answer(data: str, number: int) -> dict[str, Any] | None:
    try:
        parsed = json.loads(data)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) and _answers(parsed, number) else None


def _answers(message: Any, number: int) -> bool:
    """Whether a message is the answer to request `number` (not a request or notification of the server's)."""
    return (
        isinstance(message, dict)
        and type(message.get("id")) is int  # not `true`, which equals 1
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
