"""The `mcp` tool of responses: a remote Model Context Protocol server's tools offered to the model as functions.
The server's tools are listed when the request is planned (an `mcp_list_tools` item); a call the model makes runs
on the server (an `mcp_call` item, its output shown to the model), unless the tool needs the client's approval: then
the response ends with an `mcp_approval_request`, and a later response given an `mcp_approval_response` for it
runs the call (approved) before the model goes on."""

from __future__ import annotations

import contextlib
import ipaddress
import json
from dataclasses import dataclass, field
from typing import Any

import httpx

from oasis.errors import OasisError, invalid_request

TOOL_TYPE = "mcp"
# Calls of MCP tools one response runs before the model must answer.
MAX_CALLS = 8
NOT_RUN = f"Not run: a response runs at most {MAX_CALLS} MCP tool calls."


@dataclass(frozen=True)
class McpServer:
    """An `mcp` tool of the request: the server, which of its tools are offered, and which need approval."""

    label: str
    url: str
    headers: dict[str, str]
    param: str  # where the request has it: `tools[i]`
    allowed: Any = None  # `allowed_tools` as given
    approval: Any = "always"  # `require_approval` as given
    description: str | None = None
    reachable: list[str] | None = None  # the operator's allowed URL prefixes (None: any)

    def may_reach(self, url: str) -> bool:
        """Whether oasis may post to `url` for this server (an HTTP+SSE server's endpoint), as its URL was checked."""
        return _unreachable(url, self.reachable) is None

    def offers(self, tool: dict[str, Any]) -> bool:
        return self.allowed is None or _matches(self.allowed, tool)

    def needs_approval(self, tool: dict[str, Any]) -> bool:
        if self.approval == "never":
            return False
        # "always", a filter's `always`, and a tool no filter names all need it
        never = self.approval.get("never") if isinstance(self.approval, dict) else None
        return not (isinstance(never, dict) and _matches(never, tool))


@dataclass
class McpTools:
    """The request's MCP servers' offered tools, by the function name the model calls (the tool's own name)."""

    servers: list[McpServer]
    listed: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # each server's offered tools, by label
    by_name: dict[str, tuple[McpServer, dict[str, Any]]] = field(default_factory=dict)

    def functions(self) -> list[dict[str, Any]]:
        return [function_of(tool) for _, tool in self.by_name.values()]


def _matches(selector: Any, tool: dict[str, Any]) -> bool:
    """Whether a tool is one an `allowed_tools` list or a tool filter (`tool_names`, `read_only`) names."""
    if isinstance(selector, list):
        return tool["name"] in selector
    names = selector.get("tool_names")
    if names is not None and tool["name"] not in names:
        return False
    if selector.get("read_only") is not None:
        read_only = bool((tool.get("annotations") or {}).get("readOnlyHint"))
        if read_only != bool(selector["read_only"]):
            return False
    return names is not None or selector.get("read_only") is not None


def mcp_servers(tools: list[dict[str, Any]] | None, reachable: list[str] | None = None) -> list[McpServer]:
    """The request's `mcp` tools, checked; `reachable`: the URL prefixes a server may have (None: any)."""
    servers: list[McpServer] = []
    for index, tool in enumerate(tools or []):
        if not (isinstance(tool, dict) and tool.get("type") == TOOL_TYPE):
            continue
        param = f"tools[{index}]"
        label = tool.get("server_label")
        if not isinstance(label, str) or not label:
            raise invalid_request("An mcp tool needs `server_label`.", param=f"{param}.server_label")
        if any(server.label == label for server in servers):
            raise invalid_request(f"Two mcp tools are labelled '{label}'.", param=f"{param}.server_label")
        if tool.get("connector_id") is not None:
            raise invalid_request(
                "OpenAI's connectors are not reachable from here: give the MCP server's `server_url`.",
                param=f"{param}.connector_id",
            )
        url = tool.get("server_url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise invalid_request("An mcp tool needs `server_url`, an http(s) URL.", param=f"{param}.server_url")
        _check_reachable(url, reachable, f"{param}.server_url")
        headers = tool.get("headers") or {}
        if not isinstance(headers, dict) or not all(
            isinstance(name, str) and isinstance(value, str) and (name + value).isascii()
            for name, value in headers.items()
        ):
            raise invalid_request(
                "`headers` maps names to strings (ASCII, as HTTP sends them).", param=f"{param}.headers"
            )
        if isinstance(tool.get("authorization"), str):
            headers = {**headers, "Authorization": f"Bearer {tool['authorization']}"}
        allowed = tool.get("allowed_tools")
        if allowed is not None and not isinstance(allowed, (list, dict)):
            raise invalid_request("`allowed_tools` is a list of names or a filter.", param=f"{param}.allowed_tools")
        approval = tool.get("require_approval", "always")
        if approval is None:
            approval = "always"
        if approval not in ("always", "never") and not isinstance(approval, dict):
            raise invalid_request(
                '`require_approval` is "always", "never" or a filter.', param=f"{param}.require_approval"
            )
        description = tool.get("server_description")
        servers.append(
            McpServer(
                label, url, dict(headers), param, allowed, approval, description if description else None, reachable
            )
        )
    return servers


def _check_reachable(url: str, reachable: list[str] | None, param: str) -> None:
    """A 400 for a URL oasis may not connect to (see `_unreachable`)."""
    why = _unreachable(url, reachable)
    if why is not None:
        raise invalid_request(why, param=param)


def _unreachable(url: str, reachable: list[str] | None) -> str | None:
    """Why oasis may not connect to a URL: it is not one, it is outside the operator's allowed prefixes
    (`responses.mcp_server_urls`: the same scheme, host and port, and a path under the prefix's), or, with no list,
    it is a link-local address (cloud metadata services). None where it may."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return f"`server_url` is not a URL: {url}"
    if not parsed.host:
        return f"`server_url` has no host: {url}"
    if reachable is None:
        with contextlib.suppress(ValueError):
            if ipaddress.ip_address(parsed.host).is_link_local:
                return "`server_url` is a link-local address, which oasis does not connect to."
        return None
    for allowed in reachable:
        try:
            prefix = httpx.URL(allowed)
        except httpx.InvalidURL:
            continue
        folder = prefix.path if prefix.path.endswith("/") else prefix.path + "/"
        same_server = (parsed.scheme, parsed.host, parsed.port) == (prefix.scheme, prefix.host, prefix.port)
        if same_server and (parsed.path == prefix.path or parsed.path.startswith(folder)):
            return None
    return (
        f"oasis does not connect to MCP server {url}: its operator allows "
        + (", ".join(reachable) or "none")
        + " (`responses.mcp_server_urls`)."
    )


def redacted(tool: Any) -> Any:
    """An mcp tool as a response shows it: no `authorization`, and header values hidden (they hold keys)."""
    if not (isinstance(tool, dict) and tool.get("type") == TOOL_TYPE):
        return tool
    shown = {key: value for key, value in tool.items() if key != "authorization"}
    if isinstance(shown.get("headers"), dict):
        shown["headers"] = {name: "***" for name in shown["headers"]}
    return shown


def listing_failed(server: McpServer, error: Exception) -> OasisError:
    """OpenAI's answer when a server's tools cannot be listed: a 424 naming the server."""
    return OasisError(
        424,
        f"Error retrieving tool list from MCP server '{server.label}': {error}",
        type="external_connector_error",
        param=server.param,
        code="mcp_list_tools_failed",
    )


def function_of(tool: dict[str, Any]) -> dict[str, Any]:
    schema = tool.get("inputSchema") if isinstance(tool.get("inputSchema"), dict) else None
    function: dict[str, Any] = {
        "name": tool["name"],
        "parameters": schema or {"type": "object", "properties": {}},
    }
    if tool.get("description"):
        function["description"] = str(tool["description"])
    return {"type": "function", "function": function}


def list_item(item_id: str, server: McpServer, tools: list[dict[str, Any]]) -> dict[str, Any]:
    listed = []
    for tool in tools:
        entry: dict[str, Any] = {"name": tool["name"], "input_schema": tool.get("inputSchema") or {}}
        if tool.get("description"):
            entry["description"] = tool["description"]
        if tool.get("annotations") is not None:
            entry["annotations"] = tool["annotations"]
        listed.append(entry)
    return {"id": item_id, "type": "mcp_list_tools", "server_label": server.label, "tools": listed, "error": None}


def call_item(
    item_id: str,
    server_label: str,
    name: str,
    arguments: str,
    status: str,
    output: str | None = None,
    error: str | None = None,
    approval_request_id: str | None = None,
) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "mcp_call",
        "status": status,
        "server_label": server_label,
        "name": name,
        "arguments": arguments,
        "output": output,
        "error": error,
        "approval_request_id": approval_request_id,
    }


def approval_item(item_id: str, server_label: str, name: str, arguments: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "mcp_approval_request",
        "server_label": server_label,
        "name": name,
        "arguments": arguments,
    }


def arguments_of(arguments: str) -> dict[str, Any] | None:
    """The model's call arguments as the object a tool takes; None when they are not one."""
    try:
        parsed = json.loads(arguments or "{}")
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def denied_messages(request: dict[str, Any]) -> list[dict[str, Any]]:
    """What the model reads of a call the client refused: the call it asked for, and that it was denied."""
    call = {
        "id": request["id"],
        "type": "function",
        "function": {"name": request["name"], "arguments": request["arguments"]},
    }
    return [
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": request["id"], "content": "The user denied this call: it was not made."},
    ]


def tool_call(item: dict[str, Any]) -> dict[str, Any]:
    """An mcp_call item as the chat tool call the model made."""
    call = {"name": item.get("name") or "", "arguments": item.get("arguments") or "{}"}
    return {"id": item["id"], "type": "function", "function": call}


def result_text(item: dict[str, Any]) -> str:
    """What the model reads of a call: its output, or its error."""
    if item.get("error"):
        return f"Error: {item['error']}"
    return str(item.get("output") or "(no output)")
