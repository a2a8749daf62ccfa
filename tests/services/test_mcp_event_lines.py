"""An MCP server's event stream split into lines as the SSE spec ends them (\r\n, \n or \r), whatever the chunks the
bytes come in, and into events (comments, named events, data over several lines)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from oasis.services.responses import mcp_client


class _Chunks:
    """A response whose body comes in the given chunks."""

    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = chunks

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            yield chunk


@pytest.mark.parametrize(
    ("chunks", "lines"),
    [
        ([b"a\r\nb\nc\rd"], ["a", "b", "c", "d"]),
        ([b"a\r", b"\nb\r", b"c\n"], ["a", "b", "c"]),  # a \r\n split between chunks ends one line
        ([b"a\r", b"\r\n", b"x"], ["a", "", "x"]),
        ([b"a", b"b\r", b"", b"\nc"], ["ab", "c"]),
        ([b"\xc3", b"\xa9t\xc3\xa9\n"], ["\u00e9t\u00e9"]),  # a character split between chunks
        ([b"\r\n\r\n"], ["", ""]),
    ],
)
async def test_lines_end_as_the_sse_spec_ends_them(chunks: list[bytes], lines: list[str]) -> None:
    assert [line async for line in mcp_client._lines(_Chunks(chunks))] == lines  # type: ignore[arg-type]


async def test_events_are_read_whatever_their_framing() -> None:
    body = b"\xef\xbb\xbf: a comment\r\nevent: endpoint\r\ndata: /messages\r\n\r\ndata: {\ndata: }\n\ndata:\n\n"
    events = [event async for event in mcp_client._events(_Chunks([body]))]  # type: ignore[arg-type]
    assert events == [("endpoint", "/messages"), ("message", "{\n}")]  # a lone `data:` is no event
