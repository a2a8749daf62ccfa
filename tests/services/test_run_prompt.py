"""What a run's model is shown of a thread longer than its prompt may be (services/assistants/prompt.py): with
`auto` truncation OpenAI drops messages in the middle of the thread; `last_messages` keeps the newest ones."""

from __future__ import annotations

import json

import pytest

from oasis.services.assistants.prompt import DoesNotFit, ThreadItem, fitted
from oasis.storage.tables import Run


def _run(truncation: dict[str, object]) -> Run:
    return Run(instructions="Be brief.", additional_instructions=None, truncation_json=json.dumps(truncation))


def _thread(*texts: str) -> list[ThreadItem]:
    return [ThreadItem([{"role": "user", "content": text}], True) for text in texts]


def _characters(messages: list[dict[str, object]]) -> int:
    return sum(len(str(message["content"])) for message in messages)


def _shown(messages: list[dict[str, object]]) -> list[object]:
    return [message["content"] for message in messages]


def test_auto_keeps_the_first_message_and_drops_from_the_middle() -> None:
    thread = _thread("Task: " + "a" * 14, "b" * 20, "c" * 20, "d" * 20, "e" * 20)  # 100 characters
    messages, size = fitted(_run({"type": "auto"}), thread, _characters, 9 + 60)
    assert _shown(messages) == ["Be brief.", "Task: " + "a" * 14, "d" * 20, "e" * 20]
    assert size == 9 + 60


def test_auto_drops_the_first_message_too_when_it_cannot_stay_beside_the_newest() -> None:
    thread = _thread("a" * 50, "b" * 20, "c" * 20)
    messages, _ = fitted(_run({"type": "auto"}), thread, _characters, 9 + 40)
    assert _shown(messages) == ["Be brief.", "b" * 20, "c" * 20]


def test_a_thread_that_fits_is_shown_whole() -> None:
    thread = _thread("a", "b", "c")
    messages, size = fitted(_run({"type": "auto"}), thread, _characters, 100)
    assert _shown(messages) == ["Be brief.", "a", "b", "c"] and size == 12


def test_last_messages_then_fitting_drops_the_oldest_of_those_kept() -> None:
    thread = _thread("a" * 20, "b" * 20, "c" * 20, "d" * 20)
    messages, _ = fitted(_run({"type": "last_messages", "last_messages": 3}), thread, _characters, 9 + 40)
    assert _shown(messages) == ["Be brief.", "c" * 20, "d" * 20]


def test_a_newest_message_over_the_limit_alone_does_not_fit() -> None:
    with pytest.raises(DoesNotFit):
        fitted(_run({"type": "auto"}), _thread("a" * 5, "b" * 5, "c" * 80), _characters, 50)
