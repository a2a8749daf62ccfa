"""The `mcp` tool of the Responses API, through the official SDK: a Model Context Protocol server on loopback (JSON-
RPC over Streamable HTTP, some answers as server-sent events) lists its tools and runs the calls a scripted
OpenAI-compatible model makes; calls that need approval end the response with a request, and the next response,
given the approval, runs the call. Bad tools and unreachable servers are refused by name."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import openai
import pytest

from tests.api.test_responses import _newer_sdk, hosted_tool_agent
from tests.conftest import Harness
from tests.scripted_upstream import ScriptedChat, upstream_oasis

TOOLS = [
    {
        "name": "add",
        "description": "Add two numbers.",
        "inputSchema": {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}},
        "annotations": {"readOnlyHint": True},
    },
    {"name": "delete_everything", "description": "Deletes everything.", "inputSchema": {"type": "object"}},
]


class _McpServer(http.server.BaseHTTPRequestHandler):
    """A Streamable HTTP MCP server: initialize (giving a session id), tools/list, and tools/call answered as an
    event stream; every request is recorded."""

    requests: list[dict[str, Any]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.requests.append({**body, "session": self.headers.get("mcp-session-id")})
        if "id" not in body:  # a notification
            self.send_response(202)
            self.end_headers()
            return
        method, number = body["method"], body["id"]
        if method == "initialize":
            result: dict[str, Any] = {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}}, "serverInfo": {}}
            self._json({"jsonrpc": "2.0", "id": number, "result": result}, session="s-1")
        elif method == "tools/list":
            self._json({"jsonrpc": "2.0", "id": number, "result": {"tools": TOOLS}})
        elif method == "tools/call":
            self.calling()
            arguments = body["params"]["arguments"]
            text = str(arguments["a"] + arguments["b"])
            answer = {"jsonrpc": "2.0", "id": number, "result": {"content": [{"type": "text", "text": text}]}}
            # as the MCP SDK's servers frame events (CRLF), after a notification and a request of the server's own
            # that happens to carry the same id
            progress = {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1}}
            ping = {"jsonrpc": "2.0", "id": number, "method": "ping"}
            data = "".join(
                f"event: message\r\ndata: {json.dumps(message)}\r\n\r\n" for message in (progress, ping, answer)
            ).encode()
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        else:
            self._json({"jsonrpc": "2.0", "id": number, "error": {"code": -32601, "message": "no such method"}})

    def calling(self) -> None:
        """Called as a tool call (recorded) is about to be answered."""

    def _json(self, message: dict[str, Any], session: str | None = None) -> None:
        data = json.dumps(message).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        if session:
            self.send_header("mcp-session-id", session)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _Adder(ScriptedChat):
    """A model upstream that calls `add` once, then says what it gave."""

    received: list[dict[str, Any]] | None = []

    def script(self, body: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
        if body["messages"][-1]["role"] == "tool":
            return [{"role": "assistant", "content": f"The sum is {body['messages'][-1]['content']}."}], "stop"
        call = {"index": 0, "id": "call_0", "type": "function", "function": {"name": "add", "arguments": ""}}
        return [
            {"role": "assistant", "tool_calls": [call]},
            {"tool_calls": [{"index": 0, "function": {"arguments": '{"a": 2, '}}]},
            {"tool_calls": [{"index": 0, "function": {"arguments": '"b": 3}'}}]},
        ], "tool_calls"


@pytest.fixture
def mcp_url() -> Iterator[str]:
    _McpServer.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _McpServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/mcp"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
async def adder_oasis(start_oasis: Callable[..., Any]) -> AsyncIterator[Harness]:
    _Adder.received = []
    async with upstream_oasis(start_oasis, _Adder) as harness:
        yield harness


def _calls() -> list[dict[str, Any]]:
    return [request for request in _McpServer.requests if request.get("method") == "tools/call"]


async def test_a_tool_without_approval_runs_on_the_server(adder_oasis: Harness, mcp_url: str) -> None:
    client = adder_oasis.sdk()
    _newer_sdk(client)
    tool: Any = {
        "type": "mcp",
        "server_label": "calc",
        "server_url": mcp_url,
        "allowed_tools": ["add"],
        "require_approval": "never",
        "headers": {"X-Api-Key": "secret-key"},
        "authorization": "secret-token",
    }
    async with client.responses.stream(model="remote", input="What is 2 + 3?", tools=[tool]) as stream:
        events = [event async for event in stream]
        final = await stream.get_final_response()
    listing, call, message = final.output
    assert listing.type == "mcp_list_tools" and listing.server_label == "calc"
    (listed,) = listing.tools  # only the allowed tool
    assert listed.name == "add"
    assert listed.input_schema == TOOLS[0]["inputSchema"] and listed.description == "Add two numbers."
    assert call.type == "mcp_call" and call.name == "add" and json.loads(call.arguments) == {"a": 2, "b": 3}
    assert call.output == "5" and call.error is None and call.server_label == "calc"
    assert message.type == "message" and final.output_text == "The sum is 5."
    kinds = [event.type for event in events]
    assert kinds[2:6] == [
        "response.output_item.added",
        "response.mcp_list_tools.in_progress",
        "response.mcp_list_tools.completed",
        "response.output_item.done",
    ], kinds
    assert "response.mcp_call.in_progress" in kinds and "response.mcp_call.completed" in kinds
    # the keys the tool carried are sent to the server, and never shown in the response
    (shown,) = (await client.responses.retrieve(final.id)).tools
    assert shown.headers == {"X-Api-Key": "***"} and shown.authorization is None  # type: ignore[union-attr]
    assert "secret" not in (await client.responses.retrieve(final.id)).model_dump_json()

    # the model was offered the tool as a function, and read its output; the server kept one session
    asked, answered = _Adder.received or []
    assert [offered["function"]["name"] for offered in asked["tools"]] == ["add"]
    assert answered["messages"][-1] == {"role": "tool", "tool_call_id": call.id, "content": "5"}
    (made,) = _calls()
    assert made["params"] == {"name": "add", "arguments": {"a": 2, "b": 3}} and made["session"] == "s-1"


async def test_a_call_that_needs_approval_runs_once_approved(adder_oasis: Harness, mcp_url: str) -> None:
    client = adder_oasis.sdk()
    _newer_sdk(client)
    tool: Any = {"type": "mcp", "server_label": "calc", "server_url": mcp_url}  # approval: always, by default
    first = await client.responses.create(model="remote", input="What is 2 + 3?", tools=[tool])
    listing, request = first.output
    assert listing.type == "mcp_list_tools" and [listed.name for listed in listing.tools] == [
        "add",
        "delete_everything",
    ]
    assert request.type == "mcp_approval_request" and request.name == "add" and request.server_label == "calc"
    assert _calls() == []  # nothing ran yet

    approved = await client.responses.create(
        model="remote",
        previous_response_id=first.id,
        input=[{"type": "mcp_approval_response", "approval_request_id": request.id, "approve": True}],
        tools=[tool],
    )
    call, _ = approved.output[1:]
    assert call.type == "mcp_call" and call.approval_request_id == request.id and call.output == "5"
    assert approved.output_text == "The sum is 5."
    assert len(_calls()) == 1
    # what the model read: the question, the call it asked for, its output (no empty turn between)
    roles = [message["role"] for message in (_Adder.received or [])[-1]["messages"]]
    assert roles == ["user", "assistant", "tool"], roles
    # the same approval sent again, as a client keeping its history does: the call is not made twice
    await client.responses.create(
        model="remote",
        previous_response_id=approved.id,
        input=[
            {"type": "mcp_approval_response", "approval_request_id": request.id, "approve": True},
            {"role": "user", "content": "Thanks."},
        ],
        tools=[{**tool, "require_approval": "always"}],
    )
    assert len(_calls()) == 1
    (item,) = (await client.responses.input_items.list(approved.id)).data
    assert item.type == "mcp_approval_response"

    again = await client.responses.create(model="remote", input="And 2 + 3 again?", tools=[tool])
    refused = again.output[-1]
    assert refused.type == "mcp_approval_request"
    denied = await client.responses.create(
        model="remote",
        previous_response_id=again.id,
        input=[{"type": "mcp_approval_response", "approval_request_id": refused.id, "approve": False}],
        tools=[{**tool, "require_approval": {"never": {"tool_names": ["add"]}}}],
    )
    assert not any(made.type == "mcp_call" for made in denied.output)
    told = (_Adder.received or [])[-1]["messages"][-1]  # the generation after the refusal read it
    assert told["role"] == "tool" and "denied" in told["content"]
    assert len(_calls()) == 1  # not made

    with pytest.raises(openai.NotFoundError) as unknown:
        await client.responses.create(
            model="remote",
            input=[
                {"type": "mcp_approval_response", "approval_request_id": "mcpr_missing", "approve": True},
                {"role": "user", "content": "Go on."},
            ],
            tools=[tool],
        )
    assert unknown.value.body["param"] == "input[0].approval_request_id"  # type: ignore[index]


async def test_bad_mcp_tools_and_unreachable_servers_are_refused(adder_oasis: Harness, mcp_url: str) -> None:
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"type": "mcp", "server_url": mcp_url}, 400, "tools[0].server_label"),
        ({"type": "mcp", "server_label": "x"}, 400, "tools[0].server_url"),
        ({"type": "mcp", "server_label": "x", "connector_id": "connector_gmail"}, 400, "tools[0].connector_id"),
        ({"type": "mcp", "server_label": "x", "server_url": "http://127.0.0.1:9/mcp"}, 424, "tools[0]"),
        ({"type": "mcp", "server_label": "x", "server_url": "http://169.254.169.254/mcp"}, 400, "tools[0].server_url"),
        (
            {"type": "mcp", "server_label": "x", "server_url": mcp_url, "headers": {"k": "\u00e9"}},
            400,
            "tools[0].headers",
        ),
    ]
    async with adder_oasis.http() as http:
        for tool, status, param in cases:
            reply = await http.post("/v1/responses", json={"model": "remote", "input": "hi", "tools": [tool]})
            assert reply.status_code == status, (tool, reply.text)
            assert reply.json()["error"]["param"] == param, tool
    assert _Adder.received == []


async def test_the_operator_limits_what_servers_it_reaches(start_oasis: Callable[..., Any], mcp_url: str) -> None:
    harness: Harness = await start_oasis(responses={"mcp_server_urls": ["https://mcp.example.com/"]})
    tool = {"type": "mcp", "server_label": "calc", "server_url": mcp_url, "require_approval": "never"}
    async with harness.http() as http:
        reply = await http.post("/v1/responses", json={"model": "remote", "input": "hi", "tools": [tool]})
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "tools[0].server_url"
    assert "https://mcp.example.com/" in reply.json()["error"]["message"]
    assert _McpServer.requests == []  # never contacted


@pytest.fixture(params=["streamable-http", "sse"])
def sdk_mcp_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A server made with the official MCP Python SDK (`mcp`, which the Agents SDK brings), with an `add` tool, over
    its Streamable HTTP transport, and over the older HTTP+SSE one (a POST to its URL is a 405)."""
    mcpserver = pytest.importorskip("mcp.server.mcpserver")
    import uvicorn

    from tests.server_process import free_port

    server = mcpserver.MCPServer("calc")

    @server.tool(description="Add two numbers.")
    def add(a: int, b: int) -> int:
        return a + b

    port = free_port()
    app, path = (
        (server.streamable_http_app(), "mcp") if request.param == "streamable-http" else (server.sse_app(), "sse")
    )
    running = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not running.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the MCP server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/{path}"
    finally:
        running.should_exit = True
        thread.join(timeout=10)


async def test_a_server_made_with_the_mcp_sdk_lists_and_runs_its_tools(adder_oasis: Harness, sdk_mcp_url: str) -> None:
    client = adder_oasis.sdk()
    _newer_sdk(client)
    tool: Any = {"type": "mcp", "server_label": "calc", "server_url": sdk_mcp_url, "require_approval": "never"}
    response = await client.responses.create(model="remote", input="What is 2 + 3?", tools=[tool])
    listing, call, message = response.output
    assert listing.type == "mcp_list_tools"
    (listed,) = listing.tools
    assert listed.name == "add" and listed.description == "Add two numbers."
    assert set(listed.input_schema["properties"]) == {"a", "b"}  # type: ignore[index]
    assert call.type == "mcp_call" and call.error is None and call.output == "5"
    assert message.type == "message" and response.output_text == "The sum is 5."


class _SseOnlyServer(http.server.BaseHTTPRequestHandler):
    """A server that refuses POSTs to its URL (with `refusal`); its GET stream names `endpoint` (none: a 404)."""

    refusal = 405
    endpoint: str | None = None
    posted: list[str] = []

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.posted.append(self.path)
        self.send_response(self.refusal)
        self.send_header("content-length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        if self.endpoint is None:
            self.send_response(404)
            self.send_header("content-length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.end_headers()
        self.wfile.write(f": a comment\r\nevent: endpoint\r\ndata: {self.endpoint}\r\n\r\n".encode())


async def test_an_sse_server_posts_only_where_its_url_may(start_oasis: Callable[..., Any], mcp_url: str) -> None:
    """The URL checked is the URL posted to: an HTTP+SSE server's endpoint on another origin (here the other server
    on loopback), or outside the operator's allowed prefixes, ends the listing as a 424, and nothing is posted there.
    A server that refuses the POST and has no stream either is named by the POST's status."""
    _Adder.received = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SseOnlyServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    origin = f"http://127.0.0.1:{server.server_address[1]}"
    other = mcp_url.removesuffix("/mcp")
    cases = [  # the operator's list, the endpoint, the POST's refusal, and what the 424 says
        (None, f"{other}/messages", 405, "not on its own origin"),
        ([f"{origin}/mcp/"], "/admin/messages", 405, "outside the URLs"),
        ([f"{origin}/mcp/"], "/mcp/messages?session_id=1", 401, "HTTP status 401"),  # allowed; the POST's refusal
        (None, None, 401, "HTTP status 401 (Unauthorized)"),
    ]
    try:
        for allowed, endpoint, refusal, said in cases:
            _SseOnlyServer.posted, _SseOnlyServer.endpoint, _SseOnlyServer.refusal = [], endpoint, refusal
            url = f"{origin}/mcp/sse"
            tool = {"type": "mcp", "server_label": "calc", "server_url": url, "require_approval": "never"}
            async with (
                upstream_oasis(start_oasis, _Adder, responses={"mcp_server_urls": allowed}) as harness,
                harness.http() as http_client,
            ):
                reply = await http_client.post(
                    "/v1/responses", json={"model": "remote", "input": "hi", "tools": [tool]}
                )
            assert reply.status_code == 424, reply.text
            assert said in reply.json()["error"]["message"], (endpoint, reply.text)
            posted = ["/mcp/sse"] + (["/mcp/messages?session_id=1"] if endpoint and "session" in endpoint else [])
            assert _SseOnlyServer.posted == posted
    finally:
        server.shutdown()
        server.server_close()
    assert _McpServer.requests == [] and _Adder.received == []


async def test_the_agents_sdks_hosted_mcp_tool_runs_calls_and_asks_for_approval(
    adder_oasis: Harness, mcp_url: str
) -> None:
    """OpenAI's Agents SDK with its HostedMCPTool: oasis lists the server's tools and runs the call; where approval is
    needed, the SDK's callback approves it and the SDK sends the whole conversation back (no previous_response_id),
    the approval request among it, and the call runs once."""
    asked: list[str] = []

    def approve(request: Any) -> Any:
        asked.append(request.data.name)
        return {"approve": True}

    for approval, callback in (("never", None), ("always", approve)):
        _McpServer.requests = []
        tool: Any = {"type": "mcp", "server_label": "calc", "server_url": mcp_url, "require_approval": approval}
        agents, agent = hosted_tool_agent(
            adder_oasis.sdk(), "HostedMCPTool", tool_config=tool, on_approval_request=callback
        )
        result = await agents.Runner.run(agent, "What is 2 + 3?", max_turns=3)
        assert result.final_output == "The sum is 5.", approval
        (made,) = _calls()  # once
        assert made["params"] == {"name": "add", "arguments": {"a": 2, "b": 3}}
    assert asked == ["add"]


class _EndlessLine(http.server.BaseHTTPRequestHandler):
    """A server whose answer is an event stream with one line that does not end (it holds the connection)."""

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.end_headers()
        self.wfile.write(b"data: " + b"x" * (9 << 20))
        self.wfile.flush()
        time.sleep(90)  # past the minute a request may take


async def test_an_answer_line_past_the_cap_is_refused_as_it_grows(adder_oasis: Harness) -> None:
    """A line longer than the 8 MB an answer may take is an error once it is that long, not held until it ends (it
    never does here: the error is not the minute's time limit)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EndlessLine)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/mcp"
        tool = {"type": "mcp", "server_label": "calc", "server_url": url, "require_approval": "never"}
        async with adder_oasis.http() as http_client:
            reply = await http_client.post("/v1/responses", json={"model": "remote", "input": "hi", "tools": [tool]})
    finally:
        server.shutdown()
        server.server_close()
    assert reply.status_code == 424, reply.text
    assert "larger than 8 MB" in reply.json()["error"]["message"]
