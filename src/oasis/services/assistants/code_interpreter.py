"""The code_interpreter tool of runs: the model calls a `python` function with code; oasis runs it in the thread's
sandboxed Python session (see oasis/sandbox), with the run's files in /mnt/data, and records what came out: the
logs (or the error), figures as images, and files the code wrote, which become files of purpose
`assistants_output`."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from oasis.errors import invalid_request
from oasis.sandbox.sessions import Execution, SandboxPool, SandboxUnavailable
from oasis.services.containers import PlacedFile
from oasis.services.files.service import FileService
from oasis.storage import assistants as assistant_rows
from oasis.storage import files as file_rows
from oasis.storage import threads as thread_rows
from oasis.storage.db import Database
from oasis.storage.tables import Run

TOOL_TYPE = "code_interpreter"
# The function the model is offered in place of the built-in tool (the name OpenAI's models know it by).
FUNCTION_NAME = "python"
FUNCTION = {
    "type": "function",
    "function": {
        "name": FUNCTION_NAME,
        "description": "Run Python code in a sandbox without network access; variables persist between calls. "
        "Files are in /mnt/data; print what you need to see, and save files you make to /mnt/data.",
        "parameters": {"type": "object", "properties": {"code": {"type": "string"}}, "required": ["code"]},
    },
}
# The most a call's logs show the model when it is given the output.
OUTPUT_CHARS_FOR_MODEL = 4000


def code_of(arguments: str) -> str:
    """The code in the model's call arguments (`{"code": ...}`); arguments that are not JSON are taken as code."""
    try:
        parsed = json.loads(arguments)
    except ValueError:
        return arguments
    if isinstance(parsed, dict):
        code = parsed.get("code", parsed.get("input"))
        return code if isinstance(code, str) else ""
    return parsed if isinstance(parsed, str) else ""


def partial_code(arguments: str) -> str:
    """The code written so far in arguments still being generated (`{"code": "print(1` → `print(1`)."""
    start = arguments.find('"code"')
    if start < 0:
        return ""
    quote = arguments.find('"', arguments.find(":", start + 6) + 1)
    if quote < 0:
        return ""
    text = arguments[quote + 1 :]
    # Decode what is complete: cut at the closing quote, or before a half-written escape at the end.
    end = 0
    while end < len(text):
        if text[end] == "\\":
            if end + 1 >= len(text) or (text[end + 1] == "u" and end + 6 > len(text)):
                break
            end += 6 if text[end + 1] == "u" else 2
            continue
        if text[end] == '"':
            break
        end += 1
    try:
        return str(json.loads('"' + text[:end] + '"'))
    except ValueError:
        return ""


def output_for_model(call: dict[str, Any]) -> str:
    """What the model reads back from a call: its logs (with the error), and the files and images it made."""
    parts = []
    for output in call[TOOL_TYPE]["outputs"]:
        if output["type"] == "logs":
            parts.append(output["logs"][-OUTPUT_CHARS_FOR_MODEL:])
        elif output["type"] == "image":
            parts.append("[an image was shown to the user]")
    for path in call.get("_files", []):
        parts.append(f"[file written: sandbox:{path}]")
    return "\n".join(part for part in parts if part) or "(no output)"


@dataclass
class CodeCall:
    """One code_interpreter call as a run step records it; `files` (the sandbox paths of files the code wrote,
    with their file ids) are kept under `_files` for the prompt and the message's `file_path` annotations."""

    call_id: str
    code: str
    outputs: list[dict[str, Any]]
    files: dict[str, str] = field(default_factory=dict)  # sandbox path -> file id
    images: list[bytes] = field(default_factory=list)  # the figures' PNG bytes (stored as the image outputs' files)

    def stored(self) -> dict[str, Any]:
        return {
            "id": self.call_id,
            "type": TOOL_TYPE,
            TOOL_TYPE: {"input": self.code, "outputs": self.outputs},
            "_files": self.files,
        }


class CodeInterpreter:
    def __init__(self, db: Database, files: FileService, sandboxes: SandboxPool) -> None:
        self._db = db
        self._files = files
        self._sandboxes = sandboxes

    async def check_available(self, param: str) -> None:
        """A 400 naming why, when runs here cannot use the tool (no sandbox can start on this machine)."""
        try:
            await self._sandboxes.check()
        except SandboxUnavailable as exc:
            message = f"The code_interpreter tool is not available on this server: {exc}"
            raise invalid_request(message, param=param, code="unsupported_tool") from None

    async def run(self, run: Run, call_id: str, code: str, round_number: int) -> CodeCall:
        """Runs the code in the thread's session; outputs are stored as files under ids fixed by the run, the
        round, the output's place, name and content, so a run taken over after a crash that makes the same
        outputs again stores each once."""
        inputs = await self._input_files(run)
        return await self.run_code(run.project_id, run.thread_id, call_id, code, inputs, run.id, round_number)

    async def run_code(
        self,
        project_id: str,
        session_key: str,
        call_id: str,
        code: str,
        inputs: dict[str, str],
        owner_id: str,
        round_number: int,
    ) -> CodeCall:
        """Runs the code in the session `session_key` names, with the `inputs` files (name in /mnt/data -> file
        id) placed first; figures and written files are stored under ids fixed by their owner (a run), the round
        of calls, and the output."""
        seed = f"{owner_id}:{round_number}"
        placed = {name: self._project_file(project_id, file_id) for name, file_id in inputs.items()}
        execution, outputs = await self._execute(session_key, code, placed)
        made = 0
        for image in execution.images:
            stored = await self._store(project_id, seed, made, f"image-{round_number}-{made}.png", image)
            outputs.append({"type": "image", "image": {"file_id": stored}})
            made += 1
        written: dict[str, str] = {}
        for path, content_bytes in execution.files.items():
            name = path.rsplit("/", 1)[-1]
            written[f"/mnt/data/{path}"] = await self._store(project_id, seed, made, name, content_bytes)
            made += 1
        return CodeCall(call_id, code, outputs, written, list(execution.images))

    async def run_placed(
        self, session_key: str, call_id: str, code: str, placed: dict[str, PlacedFile], memory_mb: int | None = None
    ) -> tuple[CodeCall, dict[str, bytes]]:
        """Runs the code in the session `session_key` names (its processes' address space `memory_mb`, when given),
        with the `placed` files put in /mnt/data first where the session lacks them; figures are noted in the
        outputs (their bytes on the call), and the files the code wrote are returned (path under /mnt/data ->
        content) for the caller to keep."""
        execution, outputs = await self._execute(session_key, code, placed, memory_mb)
        outputs += [{"type": "image", "image": {"file_id": None}} for _ in execution.images]
        written_here = {f"/mnt/data/{path}": "" for path in execution.files}
        return CodeCall(call_id, code, outputs, written_here, list(execution.images)), dict(execution.files)

    async def note_placed(self, session_key: str, tags: dict[str, str]) -> None:
        """Files the session's code wrote, now stored under these tags (name in /mnt/data -> tag): the session has
        them, and a later run need not place them again."""
        session = self._sandboxes.find(session_key)
        if session is not None:  # else closed meanwhile: a new session places every file again
            session.placed.update(tags)

    def _project_file(self, project_id: str, file_id: str) -> PlacedFile:
        async def load() -> tuple[int, AsyncIterator[bytes]]:
            content = await self._files.content(project_id, file_id)
            return content.size, content.chunks

        return PlacedFile(file_id, load)

    async def _execute(
        self, session_key: str, code: str, placed: dict[str, PlacedFile], memory_mb: int | None = None
    ) -> tuple[Execution, list[dict[str, Any]]]:
        """Places what the session lacks of `placed` (name in /mnt/data -> file), runs the code, and reads its
        logs (with the error, and a note of each file too large to place) as the call's first outputs."""
        session = await self._sandboxes.session(session_key, memory_mb)
        limits = self._sandboxes.limits
        room = limits.folder_mb << 20
        missing: dict[str, bytes] = {}
        notes: list[str] = []
        for name, file in placed.items():
            if session.placed.get(name) == file.tag:  # the same file under the same name: there already
                continue
            size, chunks = await file.load()
            if size > min(limits.file_mb << 20, room):
                notes.append(f"[{name} ({file.tag}) is too large for /mnt/data and was not placed there]")
                continue
            missing[name] = b"".join([chunk async for chunk in chunks])
            room -= len(missing[name])
        execution = await session.run(code, missing, {name: placed[name].tag for name in missing})
        logs = "\n".join([*notes, execution.logs]) if notes else execution.logs
        if execution.error:
            logs = f"{logs.rstrip()}\n{execution.error}".strip() if execution.error not in logs else logs
        outputs: list[dict[str, Any]] = [{"type": "logs", "logs": logs}] if logs else []
        return execution, outputs

    async def _store(self, project_id: str, seed: str, index: int, filename: str, data: bytes) -> str:
        content_digest = hashlib.sha256(data).hexdigest()
        digest = hashlib.sha256(f"{seed}:{index}:{filename}:{content_digest}".encode()).hexdigest()[:24]

        async def chunks() -> Any:
            yield data

        stored = await self._files.store_once(
            project_id, purpose="assistants_output", filename=filename, chunks=chunks(), file_id=f"file-{digest}"
        )
        return stored.id

    async def placed_names(self, project_id: str, file_ids: list[str]) -> dict[str, str]:
        """The files by the names they get in /mnt/data (a second file of a name keeps its id in its name)."""
        async with self._db.session() as session:
            names = await file_rows.filenames(session, project_id, list(dict.fromkeys(file_ids)))
        return _placed(names)

    async def _input_files(self, run: Run) -> dict[str, str]:
        """The run's files by their name in /mnt/data: the assistant's and the thread's code_interpreter files,
        and files attached to the thread's messages for code_interpreter."""
        async with self._db.session() as session:
            thread = await thread_rows.get_thread(session, run.project_id, run.thread_id)
            assistant = await assistant_rows.get_assistant(session, run.project_id, run.assistant_id)
            messages = await thread_rows.conversation(session, run.thread_id)
            file_ids: list[str] = []
            for owner in (assistant, thread):
                if owner is not None:
                    file_ids += json.loads(owner.tool_resources_json).get(TOOL_TYPE, {}).get("file_ids", [])
            for message in messages:
                for attachment in json.loads(message.attachments_json):
                    if any(tool["type"] == TOOL_TYPE for tool in attachment.get("tools", [])):
                        file_ids.append(attachment["file_id"])
            names = await file_rows.filenames(session, run.project_id, list(dict.fromkeys(file_ids)))
        return _placed(names)


def _placed(names: dict[str, str]) -> dict[str, str]:
    """File id -> filename as name in /mnt/data -> file id."""
    placed: dict[str, str] = {}
    for file_id, filename in names.items():
        name = filename.rsplit("/", 1)[-1] or file_id
        if name in placed:  # two files of one name: the later one keeps its id in its name
            name = f"{file_id}-{name}"
        placed[name] = file_id
    return placed
