"""Line-by-line checks of JSONL uploads for the `batch` and `fine-tune` purposes.

The first bad line is named in a 400, and the file is not stored: a bad training or batch file is cheaper to
reject at upload than to fail an hour later.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from oasis.errors import OasisError
from oasis.protocol.lone_surrogates import is_lone, path_in

BATCH_ENDPOINTS = (
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/completions",
    "/v1/moderations",
    "/v1/images/generations",
)
# OpenAI's limits on one batch's input file.
MAX_BATCH_REQUESTS = 50_000
MAX_BATCH_FILE_BYTES = 200 * 1024 * 1024
CHAT_ROLES = ("system", "user", "assistant", "tool", "function")


def _bad_line(number: int, why: str) -> OasisError:
    return OasisError(400, f"Invalid file format: line {number}: {why}", param="file", code="invalid_file_format")


def _json_objects(lines: Iterable[bytes]) -> Iterable[tuple[int, dict[str, Any]]]:
    count = 0
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue  # blank lines (a trailing newline, say) carry nothing
        try:
            value = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise _bad_line(number, "is not UTF-8 text.") from None
        except json.JSONDecodeError as exc:
            raise _bad_line(number, f"is not valid JSON ({exc.msg}).") from None
        except RecursionError:
            raise _bad_line(number, "is nested too deeply.") from None
        except ValueError as exc:  # a number of more than 4300 digits
            raise _bad_line(number, f"is not usable JSON ({exc}).") from None
        if not isinstance(value, dict):
            raise _bad_line(number, "must be a JSON object.")
        count += 1
        yield number, value
    if count == 0:
        raise OasisError(400, "Invalid file format: the file has no lines.", param="file", code="invalid_file_format")


def storable_custom_id(custom_id: str) -> bool:
    """Results are stored by custom_id: no database takes NUL (PostgreSQL) or a lone surrogate (either)."""
    return "\x00" not in custom_id and not is_lone(custom_id)


def check_batch_lines(lines: Iterable[bytes]) -> None:
    seen: dict[str, int] = {}
    for number, request in _json_objects(lines):
        if len(seen) == MAX_BATCH_REQUESTS:
            raise _bad_line(number, f"a batch takes at most {MAX_BATCH_REQUESTS:,} requests; split the file.")
        custom_id = request.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id:
            raise _bad_line(number, "`custom_id` must be a non-empty string.")
        if not storable_custom_id(custom_id):
            raise _bad_line(number, "`custom_id` must be text without NUL characters or lone surrogates.")
        if custom_id in seen:
            raise _bad_line(number, f"`custom_id` {custom_id!r} is already used on line {seen[custom_id]}.")
        seen[custom_id] = number
        if request.get("method") != "POST":
            raise _bad_line(number, '`method` must be "POST".')
        if request.get("url") not in BATCH_ENDPOINTS:
            raise _bad_line(number, f"`url` must be one of {', '.join(BATCH_ENDPOINTS)}.")
        if not isinstance(request.get("body"), dict):
            raise _bad_line(number, "`body` must be a JSON object.")


def check_fine_tune_lines(lines: Iterable[bytes]) -> None:
    for number, example in _json_objects(lines):
        messages = example.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _bad_line(number, "`messages` must be a non-empty list.")
        has_assistant = False
        for index, message in enumerate(messages):
            if not isinstance(message, dict):
                raise _bad_line(number, f"messages[{index}] must be an object.")
            role = message.get("role")
            if role not in CHAT_ROLES:
                raise _bad_line(number, f"messages[{index}].role must be one of {', '.join(CHAT_ROLES)}.")
            has_assistant = has_assistant or role == "assistant"
        if not has_assistant:
            raise _bad_line(number, "the example has no assistant message to learn from.")
        where = path_in(example)
        if where is not None:  # no tokenizer takes it: the trainer would fail on it
            raise _bad_line(number, f"{where or 'a key'} holds a lone surrogate (a \\uD800-\\uDFFF escape).")


LINE_CHECKS = {"batch": check_batch_lines, "fine-tune": check_fine_tune_lines}
