"""Chat fine-tuning examples (OpenAI's JSONL format) -> token ids and labels, rendered with the model's chat template.

Each line is `{"messages": [...], "tools": [...]?, "parallel_tool_calls": ...?}`. The loss covers every assistant
message (its rendered content and its end-of-turn token) except those marked `"weight": 0`. Which tokens those are
comes from the template itself: for an assistant message at index i, the conversation rendered up to i with the
generation prompt is a prefix of the conversation rendered through i, and the difference is the message. A template
for which that does not hold (one that rewrites earlier turns, say) cannot be trained on this way: such an example
is refused with a clear error rather than trained on the wrong tokens.

Reading and checking the JSONL needs no tokenizer, so a malformed file is reported before any model loads.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oasis.protocol.lone_surrogates import path_in

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

# The label that torch's cross-entropy skips: tokens outside every trained assistant message.
IGNORE_INDEX = -100

_ROLES = {"system", "user", "assistant", "tool"}


class InvalidExamplesError(ValueError):
    """A line of an examples file that cannot be trained on; the message names the line."""


@dataclass(frozen=True)
class ChatExample:
    line: int  # 1-based line number in its file, for error messages
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None


@dataclass(frozen=True)
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]  # the token id where the loss applies, IGNORE_INDEX elsewhere

    @property
    def trained_tokens(self) -> int:
        return sum(label != IGNORE_INDEX for label in self.labels)


def read_examples(path: Path) -> list[ChatExample]:
    """Parse and check a JSONL file of chat examples; blank lines are skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidExamplesError(f"cannot read {path.name}: {error}") from error
    examples = []
    # Only "\n" ends a JSONL line: str.splitlines() would also break inside a string holding U+2028 or U+0085.
    for number, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            examples.append(_parse_line(line, number))
    if not examples:
        raise InvalidExamplesError(f"{path.name} holds no examples")
    return examples


def _parse_line(line: str, number: int) -> ChatExample:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise InvalidExamplesError(f"line {number}: not valid JSON ({error.msg})") from error
    if not isinstance(record, dict):
        raise InvalidExamplesError(f"line {number}: expected a JSON object with `messages`")
    where = path_in(record)
    if where is not None:  # the tokenizer would raise a TypeError on it (files stored before the upload check)
        raise InvalidExamplesError(f"line {number}: {where or 'a key'} holds a lone surrogate")
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidExamplesError(f"line {number}: `messages` must be a non-empty list")
    for index, message in enumerate(messages):
        _check_message(message, f"line {number}, messages[{index}]")
    if not any(message["role"] == "assistant" and message.get("weight", 1) == 1 for message in messages):
        raise InvalidExamplesError(f"line {number}: no assistant message to train on (none, or all have weight 0)")
    tools = record.get("tools")
    if tools is not None and not (isinstance(tools, list) and all(isinstance(tool, dict) for tool in tools)):
        raise InvalidExamplesError(f"line {number}: `tools` must be a list of objects")
    return ChatExample(line=number, messages=messages, tools=tools)


def _check_message(message: Any, where: str) -> None:
    if not isinstance(message, dict):
        raise InvalidExamplesError(f"{where}: expected an object")
    role = message.get("role")
    if role not in _ROLES:
        raise InvalidExamplesError(f"{where}: role must be one of {sorted(_ROLES)}, got {role!r}")
    content = message.get("content")
    if content is None:
        if not (role == "assistant" and message.get("tool_calls")):
            raise InvalidExamplesError(
                f"{where}: `content` is required (only an assistant message with tool_calls may omit it)"
            )
    elif not isinstance(content, str):
        _text_of_parts(content, where)  # raises for anything but a list of text parts
    if "weight" in message:
        if role != "assistant":
            raise InvalidExamplesError(f"{where}: `weight` is only allowed on assistant messages")
        if message["weight"] not in (0, 1) or isinstance(message["weight"], bool):
            raise InvalidExamplesError(f"{where}: `weight` must be 0 or 1")
    tool_calls = message.get("tool_calls")
    if tool_calls is not None and not (isinstance(tool_calls, list) and all(isinstance(c, dict) for c in tool_calls)):
        raise InvalidExamplesError(f"{where}: `tool_calls` must be a list of objects")


def _text_of_parts(content: Any, where: str) -> str:
    if not isinstance(content, list):
        raise InvalidExamplesError(f"{where}: `content` must be a string or a list of text parts")
    texts = []
    for part in content:
        if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
            raise InvalidExamplesError(f"{where}: only text content parts can be trained on")
        texts.append(part["text"])
    return "".join(texts)


def tokenize_examples(
    tokenizer: PreTrainedTokenizerBase, examples: list[ChatExample], max_length: int
) -> list[TokenizedExample]:
    """Tokenize every example; one longer than `max_length` tokens is cut there, with a warning on the log."""
    tokenized = []
    for example in examples:
        full = tokenize_example(tokenizer, example)
        if len(full.input_ids) > max_length:
            logger.warning(
                "the example on line %d has %d tokens; truncated to max_length %d",
                example.line,
                len(full.input_ids),
                max_length,
            )
            full = TokenizedExample(full.input_ids[:max_length], full.labels[:max_length])
        tokenized.append(full)
    return tokenized


def tokenize_example(tokenizer: PreTrainedTokenizerBase, example: ChatExample) -> TokenizedExample:
    messages = [_for_template(message, example.line) for message in example.messages]
    full_text = _render(tokenizer, example, messages, add_generation_prompt=False)
    input_ids = _encode(tokenizer, full_text)
    labels = [IGNORE_INDEX] * len(input_ids)
    special_ids = set(tokenizer.all_special_ids)
    for index, message in enumerate(example.messages):
        if message["role"] != "assistant" or message.get("weight", 1) == 0:
            continue
        prompt_text = _render(tokenizer, example, messages[:index], add_generation_prompt=True)
        through_text = _render(tokenizer, example, messages[: index + 1], add_generation_prompt=False)
        if not (through_text.startswith(prompt_text) and full_text.startswith(through_text)):
            raise InvalidExamplesError(
                f"line {example.line}: the chat template is not prefix-consistent at messages[{index}] (rendering the "
                "conversation up to this assistant message does not give a prefix of the rendering through it), so "
                "its tokens cannot be told apart"
            )
        start = _token_prefix_length(tokenizer, prompt_text, input_ids, example.line, index)
        end = _token_prefix_length(tokenizer, through_text, input_ids, example.line, index)
        end = _without_trailing_format(tokenizer, input_ids, start, end, special_ids)
        labels[start:end] = input_ids[start:end]
    return TokenizedExample(input_ids, labels)


def _for_template(message: dict[str, Any], line: int) -> dict[str, Any]:
    """The message as chat templates expect it: text content as one string, tool call arguments as objects."""
    rendered = {key: value for key, value in message.items() if key != "weight"}
    content = message.get("content")
    if content is None:
        rendered["content"] = ""  # templates concatenate content; an assistant turn of only tool calls has none
    elif not isinstance(content, str):
        rendered["content"] = _text_of_parts(content, f"line {line}")
    if message.get("tool_calls"):
        rendered["tool_calls"] = [_with_parsed_arguments(call) for call in message["tool_calls"]]
    return rendered


def _with_parsed_arguments(call: dict[str, Any]) -> dict[str, Any]:
    # OpenAI sends arguments as a JSON string; transformers' templates expect a mapping (they `tojson` it themselves).
    function = call.get("function")
    if not isinstance(function, dict) or not isinstance(function.get("arguments"), str):
        return call
    try:
        arguments = json.loads(function["arguments"])
    except json.JSONDecodeError:
        return call
    if not isinstance(arguments, dict):
        return call
    return {**call, "function": {**function, "arguments": arguments}}


def _render(
    tokenizer: PreTrainedTokenizerBase,
    example: ChatExample,
    messages: list[dict[str, Any]],
    *,
    add_generation_prompt: bool,
) -> str:
    tools: list[Any] | None = example.tools
    try:
        text = tokenizer.apply_chat_template(
            messages, tools=tools, add_generation_prompt=add_generation_prompt, tokenize=False
        )
    except Exception as error:  # jinja's own errors and a template's raise_exception() alike
        raise InvalidExamplesError(
            f"line {example.line}: the model's chat template cannot render it: {error}"
        ) from error
    if not isinstance(text, str):
        raise TypeError(f"apply_chat_template returned {type(text).__name__}, expected str")
    return text


def _encode(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    # The template writes any BOS itself; the tokenizer must not add a second one.
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _token_prefix_length(
    tokenizer: PreTrainedTokenizerBase, prefix_text: str, input_ids: list[int], line: int, index: int
) -> int:
    prefix_ids = _encode(tokenizer, prefix_text)
    if input_ids[: len(prefix_ids)] != prefix_ids:
        raise InvalidExamplesError(
            f"line {line}: at messages[{index}] the tokens of the rendered prefix differ from those of the whole "
            "conversation (a token spans the boundary), so this message's tokens cannot be told apart"
        )
    return len(prefix_ids)


def _without_trailing_format(
    tokenizer: PreTrainedTokenizerBase, input_ids: list[int], start: int, end: int, special_ids: set[int]
) -> int:
    """End of the trained span: whitespace the template writes after the end-of-turn token is not learned (the model
    stops at that token), so `...<|im_end|>\\n` trains up to and including `<|im_end|>`."""
    cut = end
    while cut > start and _is_whitespace(tokenizer.decode(input_ids[cut - 1 : cut])):
        cut -= 1
    return cut if cut > start and input_ids[cut - 1] in special_ids else end


def _is_whitespace(decoded: str | list[str]) -> bool:
    return isinstance(decoded, str) and decoded.isspace()
