"""A streamed run's event queue: a stream never ends as if its run had when its execution stopped early."""

from __future__ import annotations

from oasis.services.assistants.events import EventQueue


async def _read(queue: EventQueue) -> list[tuple[str, dict[str, object]]]:
    return [event async for event in queue]


async def test_a_stream_cut_off_before_the_runs_last_event_ends_with_an_error() -> None:
    queue = EventQueue()
    queue.emit("thread.run.in_progress", {"id": "run_1", "status": "in_progress"})
    queue.close()  # the execution stopped (its process shutting down) without ending the run
    events = await _read(queue)
    assert [name for name, _ in events] == ["thread.run.in_progress", "error"]
    error = events[-1][1]["error"]
    assert isinstance(error, dict) and error["type"] == "server_error" and "retrieve the run" in error["message"]


async def test_a_stream_that_said_its_runs_last_event_ends_there() -> None:
    for last in ("thread.run.completed", "thread.run.requires_action", "thread.run.cancelled", "error"):
        queue = EventQueue()
        queue.emit("thread.run.in_progress", {})
        queue.emit(last, {})
        queue.close()
        assert [name for name, _ in await _read(queue)] == ["thread.run.in_progress", last]
