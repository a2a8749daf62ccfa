"""The web dashboard at `/` (issue 19), in a real browser: playwright for Python driving Debian's chromium against a
real `oasis serve` with an API key. Screenshots of each page go to build/screenshots/ (not committed)."""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from tests.api.test_images import SHAPES
from tests.conftest import E5, PIPER, WHISPER, smollm
from tests.server_process import ServerProcess, oasis_env, oasis_server, run_oasis

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parents[1] / "build" / "screenshots"
# chromium's own calls home are refused on a closed network, many at a time: turn them off
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # a microphone that plays a tone, allowed without asking: the playground's recorder has something to record
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
]

pytestmark = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None, reason="Debian's chromium is not installed (apt-get install chromium)"
)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    folder = tmp_path_factory.mktemp("dashboard")
    config = folder / "oasis.yaml"
    config.write_text(yaml.safe_dump({"defaults": False, "models": [smollm(), E5, WHISPER, PIPER, SHAPES]}))
    env = oasis_env(None)
    data = folder / "data"
    created = run_oasis("keys", "create", "--project", "dash", "--manage-keys", "--data-dir", str(data), env=env)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    with oasis_server(data, env, "--config", str(config)) as server:
        yield server, key


@pytest.fixture
async def page(served: tuple[ServerProcess, str]) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright, expect

    expect.set_options(timeout=60_000)  # the 2-core CI machine runs models beside the browser
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = await browser.new_context(
            accept_downloads=True, viewport={"width": 1366, "height": 820}, permissions=["microphone"]
        )
        opened = await context.new_page()
        opened.set_default_timeout(60_000)
        await opened.goto(served[0].base_url + "/")
        yield opened
        await browser.close()


async def sign_in(page: Any, key: str) -> None:
    await page.get_by_label("API key").fill(key)
    await page.get_by_role("button", name="Sign in").click()


async def screenshot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


async def test_a_bad_key_is_refused_with_the_servers_reason(page: Any) -> None:
    from playwright.async_api import expect

    await sign_in(page, "sk-not-a-key")
    alert = page.get_by_role("alert")
    await expect(alert).to_contain_text("Not signed in")
    await expect(page.get_by_role("navigation", name="Pages")).to_be_hidden()
    await screenshot(page, "sign-in-refused")


async def test_a_chat_reply_streams_in_with_its_speed(page: Any, served: tuple[ServerProcess, str]) -> None:
    from playwright.async_api import expect

    await sign_in(page, served[1])
    await expect(page.get_by_role("heading", name="Playground")).to_be_visible()
    chat = page.get_by_role("tabpanel", name="Chat")
    await expect(chat.get_by_label("Model", exact=True)).to_have_value("smollm2-135m-instruct")
    await chat.get_by_label("Temperature", exact=True).fill("0")
    await chat.get_by_label("Max tokens", exact=True).fill("24")
    # count the changes to the reply's text as they arrive: a streamed reply changes many times
    await page.evaluate(
        """() => {
            window.replyUpdates = 0;
            new MutationObserver(() => { window.replyUpdates += 1; })
                .observe(document.getElementById('chat-log'), {subtree: true, characterData: true, childList: true});
        }"""
    )
    await chat.get_by_label("Message", exact=True).fill("Name three colours.")
    await chat.get_by_role("button", name="Send").click()
    stats = chat.get_by_label("Speed")
    await expect(stats).to_contain_text("tokens/s")
    await expect(stats).to_contain_text("first token")
    reply = page.locator("#chat-log .assistant .content")
    assert (await reply.inner_text()).strip()
    assert await page.evaluate("window.replyUpdates") >= 5
    await expect(page.locator("#chat-log .user .content")).to_have_text("Name three colours.")
    await screenshot(page, "playground")


async def test_a_file_is_uploaded_listed_downloaded_and_deleted(
    page: Any, served: tuple[ServerProcess, str], tmp_path: Path
) -> None:
    from playwright.async_api import expect

    await sign_in(page, served[1])
    await page.get_by_role("link", name="Files").click()
    source = tmp_path / "notes.jsonl"
    line = '{"custom_id": "r%d", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "m"}}\n'
    source.write_text("".join(line % index for index in range(2000)))
    await page.get_by_label("File", exact=True).set_input_files(str(source))
    await page.get_by_label("Purpose", exact=True).select_option("batch")
    await page.get_by_role("button", name="Upload").click()
    row = page.get_by_role("row").filter(has_text="notes.jsonl")
    await expect(row).to_contain_text("batch")
    await expect(row).to_contain_text(str(source.stat().st_size))
    await expect(page.get_by_label("Upload progress")).to_have_js_property("value", 100)
    await screenshot(page, "files")

    await page.get_by_label("Show").select_option("assistants")
    await expect(row).to_have_count(0)
    await page.get_by_label("Show").select_option("batch")
    await expect(row).to_have_count(1)

    async with page.expect_download() as waiting:
        await page.get_by_role("button", name="Download notes.jsonl").click()
    download = await waiting.value
    assert download.suggested_filename == "notes.jsonl"
    assert Path(await download.path()).read_bytes() == source.read_bytes()

    await page.get_by_role("button", name="Delete notes.jsonl").click()
    await expect(row).to_have_count(0)


async def test_the_server_page_shows_models_and_their_slots(page: Any, served: tuple[ServerProcess, str]) -> None:
    from playwright.async_api import expect

    await sign_in(page, served[1])
    await page.get_by_role("link", name="Server").click()
    row = page.get_by_role("row").filter(has_text="smollm2-135m-instruct")
    await expect(row).to_contain_text("llamacpp")
    await expect(row).to_contain_text("ready")
    await expect(row.get_by_role("cell").nth(3)).to_have_text(re.compile(r"^\d+ / 4$"))  # busy / all, /metrics
    await screenshot(page, "server")


async def test_signing_out_forgets_the_key(page: Any, served: tuple[ServerProcess, str]) -> None:
    from playwright.async_api import expect

    await sign_in(page, served[1])
    await expect(page.get_by_role("heading", name="Playground")).to_be_visible()
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert await page.evaluate("sessionStorage.length") == 0


async def test_a_vector_store_ingests_a_file_live_and_answers_a_search(
    page: Any, served: tuple[ServerProcess, str], tmp_path: Path
) -> None:
    from playwright.async_api import expect

    await sign_in(page, served[1])
    await page.get_by_role("link", name="Vector stores").click()
    await page.get_by_label("New store's name").fill("handbook")
    await page.get_by_role("button", name="Create store").click()
    await expect(page.get_by_role("heading", name="Store handbook")).to_be_visible()
    notes = tmp_path / "garden.md"
    notes.write_text(
        "# Garden rota\n\nThe tomatoes are watered every morning by Priya.\n\n"
        "# Kitchen\n\nThe dishwasher is emptied after lunch by Tom.\n"
    )
    await page.get_by_label("Add a file").set_input_files(str(notes))
    await page.get_by_role("button", name="Add file").click()
    file_row = page.locator("#store-files tr").filter(has_text="garden.md")
    await expect(file_row).to_contain_text("completed")  # the page follows ingestion without a reload
    store_row = page.get_by_role("row").filter(has_text="handbook")
    await expect(store_row).to_contain_text("1 / 1")
    await page.get_by_label("Search the store").fill("who waters the tomatoes?")
    await page.get_by_role("button", name="Search").click()
    first = page.get_by_role("list", name="Search results").get_by_role("listitem").first
    await expect(first).to_contain_text("Priya")
    await expect(first).to_contain_text(re.compile(r"garden\.md · score \d\.\d{3}"))
    await screenshot(page, "vector-stores")


async def test_a_batch_runs_to_completion_with_its_progress_bar(
    page: Any, served: tuple[ServerProcess, str], tmp_path: Path
) -> None:
    from playwright.async_api import expect

    await sign_in(page, served[1])
    await page.get_by_role("link", name="Files").click()
    requests = tmp_path / "questions.jsonl"
    body = '{"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 4}'
    line = '{"custom_id": "q%d", "method": "POST", "url": "/v1/chat/completions", "body": %s}\n'
    requests.write_text("".join(line % (index, body) for index in range(3)))
    await page.get_by_label("File", exact=True).set_input_files(str(requests))
    await page.get_by_label("Purpose", exact=True).select_option("batch")
    await page.get_by_role("button", name="Upload").click()
    await expect(page.get_by_role("row").filter(has_text="questions.jsonl")).to_have_count(1)

    await page.get_by_role("link", name="Batches").click()
    option = page.get_by_label("Input file").locator("option", has_text="questions.jsonl")
    await page.get_by_label("Input file").select_option(await option.get_attribute("value"))
    await page.get_by_role("button", name="Create batch").click()
    row = page.locator("#batches-list tr").first
    await expect(row).to_contain_text("completed", timeout=120_000)
    await expect(row).to_contain_text("3 / 0 / 3")
    await expect(row.get_by_role("progressbar")).to_have_js_property("value", 3)
    await screenshot(page, "batches")
    async with page.expect_download() as waiting:
        await row.get_by_role("button", name=re.compile("Download the output")).click()
    output = Path(await (await waiting.value).path()).read_text()
    results = [json.loads(line) for line in output.splitlines()]
    assert sorted(result["custom_id"] for result in results) == ["q0", "q1", "q2"]
    assert all(result["response"]["status_code"] == 200 for result in results)


WEATHER_TOOL = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city now.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]


async def test_an_assistant_with_a_function_tool_runs_in_a_thread(page: Any, served: tuple[ServerProcess, str]) -> None:
    from playwright.async_api import expect

    await sign_in(page, served[1])
    await page.get_by_role("link", name="Assistants").click()
    section = page.locator("#assistants")
    await section.get_by_label("Name").fill("weather helper")
    await section.get_by_label("Model").select_option("smollm2-135m-instruct")
    await section.get_by_label("Instructions").fill("Answer questions about the weather with the get_weather tool.")
    await section.get_by_label("Function tools (JSON list)").fill(json.dumps(WEATHER_TOOL))
    await page.get_by_role("button", name="Create assistant").click()
    await expect(page.get_by_role("row").filter(has_text="weather helper")).to_contain_text("get_weather")
    await expect(page.get_by_role("heading", name="Edit weather helper")).to_be_visible()

    await page.get_by_role("button", name="New thread").click()
    await expect(page.get_by_role("heading", name=re.compile(r"^Thread thread_"))).to_be_visible()
    await section.get_by_label("Message", exact=True).fill("What is the weather in Paris?")
    await section.get_by_label("Tool choice").select_option("required")
    await page.get_by_role("button", name="Send and run").click()
    outputs = page.get_by_role("form", name="The run asks for tool outputs")
    await expect(outputs).to_be_visible()
    await expect(page.get_by_label("Run status")).to_contain_text("requires_action")
    await screenshot(page, "assistants")
    # after the outputs the model chooses for itself (tool_choice turns auto): it may ask again
    for _ in range(3):
        field = outputs.get_by_label(re.compile(r"^Output of get_weather\("))
        await field.first.fill("Sunny, 21 °C")
        await outputs.get_by_role("button", name="Submit tool outputs").click()
        # Submitting hides the form at once, while the status still reads requires_action until the run's stream
        # says otherwise: wait for the form to come back (the model asks again) or for the run to end. The model
        # samples at temperature 1 and may write at length: the slow CI machine gets minutes.
        await page.wait_for_function(
            "!document.getElementById('tool-outputs').hidden"
            " || /: (completed|incomplete|failed|expired|cancelled)$/"
            ".test(document.getElementById('run-state').textContent)",
            timeout=240_000,
        )
        if not await outputs.is_visible():
            break
    await expect(page.get_by_label("Run status")).to_contain_text("completed")
    steps = page.locator("#run-steps li")
    await expect(steps.first).to_contain_text("tool_calls · completed · get_weather(")
    await expect(steps.first).to_contain_text("→ Sunny, 21 °C")
    await expect(steps.last).to_contain_text("message_creation · completed")
    messages = page.locator("#thread-messages > li")
    await expect(messages.first).to_contain_text("What is the weather in Paris?")
    await expect(messages.last).to_contain_text("assistant")
    assert (await messages.last.locator(".content").inner_text()).strip()


async def test_the_playground_speaks_transcribes_and_records(
    page: Any, served: tuple[ServerProcess, str], tmp_path: Path
) -> None:
    from playwright.async_api import expect

    await sign_in(page, served[1])
    await page.get_by_role("tab", name="Audio").click()
    panel = page.get_by_role("tabpanel", name="Audio")
    await panel.get_by_label("Text", exact=True).fill("Good morning, the garden needs water today.")
    await panel.get_by_label("Format").select_option("wav")
    await panel.get_by_role("button", name="Speak").click()
    player = panel.get_by_label("Speech", exact=True)
    await expect(player).to_be_visible()
    await page.wait_for_function("document.getElementById('speak-audio').duration > 1")

    # the same words, spoken by the server, read back through the upload
    speech = httpx.post(
        f"{served[0].base_url}/v1/audio/speech",
        headers={"authorization": f"Bearer {served[1]}"},
        json={"model": "tts-1", "input": "Good morning, the garden needs water today.", "voice": "alloy"},
        timeout=120,
    )
    clip = tmp_path / "morning.mp3"
    clip.write_bytes(speech.content)
    await panel.get_by_label("Audio file").set_input_files(str(clip))
    await panel.get_by_role("button", name="Transcribe").click()
    transcript = panel.get_by_label("Transcript")
    # Piper's voice varies from one synthesis to the next (noise in the model), and Whisper base now and then hears
    # "garden" as "guard in": two other words of the sentence, in order, show the clip was transcribed.
    await expect(transcript).to_contain_text(re.compile("morning.*water", re.IGNORECASE), timeout=120_000)
    await screenshot(page, "playground-audio")

    await panel.get_by_label("Audio file").set_input_files([])
    await panel.get_by_role("button", name="Record").click()
    await expect(panel.get_by_label("Recording")).to_have_text("recording…")
    await page.wait_for_timeout(1500)
    await panel.get_by_role("button", name="Stop").click()
    await expect(panel.get_by_label("Recording")).to_contain_text("KB")
    await panel.get_by_role("button", name="Transcribe").click()
    await expect(transcript).not_to_have_text("…", timeout=120_000)  # a tone: any text, but an answer
    await expect(page.get_by_role("alert")).to_be_hidden()


async def test_the_playground_draws_and_edits_inside_a_painted_mask(
    page: Any, served: tuple[ServerProcess, str]
) -> None:
    from playwright.async_api import expect

    await sign_in(page, served[1])
    await page.get_by_role("tab", name="Images").click()
    panel = page.get_by_role("tabpanel", name="Images")
    await panel.get_by_label("Prompt").fill("a red circle on the left")
    await panel.get_by_role("button", name="Generate").click()
    first = panel.get_by_role("list", name="Pictures").get_by_role("img").first
    await expect(first).to_have_attribute("alt", "a red circle on the left (1)")
    await panel.get_by_role("button", name="Edit picture 1").click()
    canvas = panel.locator("#edit-canvas")
    await expect(canvas).to_be_visible()
    original = await first.get_attribute("src")
    box = await canvas.bounding_box()
    assert box is not None
    # paint a stroke down the left quarter: only there may the picture change
    await page.mouse.move(box["x"] + box["width"] * 0.15, box["y"] + box["height"] * 0.2)
    await page.mouse.down()
    for step in range(1, 9):
        await page.mouse.move(box["x"] + box["width"] * 0.15, box["y"] + box["height"] * (0.2 + 0.075 * step))
    await page.mouse.up()
    await panel.get_by_label("What to draw there").fill("a blue square on the left")
    await panel.get_by_role("button", name="Edit", exact=True).click()
    await expect(first).to_have_attribute("alt", "a blue square on the left (1)")
    await screenshot(page, "playground-images")
    changed_outside = await page.evaluate(
        """async ([before, after]) => {
            const pixels = async (src) => {
                const image = new Image();
                image.src = src;
                await image.decode();
                const canvas = document.createElement('canvas');
                canvas.width = image.naturalWidth;
                canvas.height = image.naturalHeight;
                const context = canvas.getContext('2d');
                context.drawImage(image, 0, 0);
                return context.getImageData(0, 0, canvas.width, canvas.height);
            };
            const [a, b] = [await pixels(before), await pixels(after)];
            let changed = 0;
            for (let y = 0; y < a.height; y++) {
                for (let x = Math.floor(a.width / 2); x < a.width; x++) {  // the right half: never painted
                    const i = 4 * (y * a.width + x);
                    if (a.data[i] !== b.data[i] || a.data[i + 1] !== b.data[i + 1] || a.data[i + 2] !== b.data[i + 2]) {
                        changed += 1;
                    }
                }
            }
            return changed;
        }""",
        [original, await first.get_attribute("src")],
    )
    assert changed_outside == 0


async def test_keys_are_created_shown_once_and_revoked(page: Any, served: tuple[ServerProcess, str]) -> None:
    from playwright.async_api import expect

    await sign_in(page, served[1])
    await page.get_by_role("link", name="Server").click()
    await expect(page.locator("#keys-note")).to_contain_text("Project dash")
    keys = page.get_by_role("table", name="Keys of this project").locator("tbody tr")
    await expect(keys.first).to_be_visible()  # the key signed in with, at least
    before = await keys.count()
    await page.get_by_role("button", name="Create a key").click()
    secret = page.locator("#new-key-value")
    await expect(secret).to_have_text(re.compile(r"^sk-oasis-"))
    await expect(keys).to_have_count(before + 1)
    new_key = await secret.inner_text()
    works = httpx.get(f"{served[0].base_url}/v1/models", headers={"authorization": f"Bearer {new_key}"})
    assert works.status_code == 200
    await screenshot(page, "keys")

    await page.get_by_role("button", name=f"Revoke {new_key[:11]}...{new_key[-4:]}").click()
    await expect(keys).to_have_count(before)
    await expect(page.get_by_role("status")).to_be_hidden()
    refused = httpx.get(f"{served[0].base_url}/v1/models", headers={"authorization": f"Bearer {new_key}"})
    assert refused.status_code == 401


async def test_a_file_search_answer_links_its_citations_to_their_files(
    page: Any, served: tuple[ServerProcess, str]
) -> None:
    from playwright.async_api import expect

    from tests.api.test_vector_stores import DOCUMENTS

    client = openai.OpenAI(api_key=served[1], base_url=f"{served[0].base_url}/v1", max_retries=0)
    bees = client.files.create(file=("bees.html", DOCUMENTS["bees.html"].encode()), purpose="assistants")
    store = client.vector_stores.create(name="bees", file_ids=[bees.id])
    deadline = time.monotonic() + 300
    while (counts := client.vector_stores.retrieve(store.id).file_counts).in_progress and time.monotonic() < deadline:
        time.sleep(0.5)
    assert counts.completed == 1, counts
    client.beta.assistants.create(
        name="bee expert",
        model="smollm2-135m-instruct",
        temperature=0,
        instructions="Answer the question from the files, in one sentence.",
        tools=[{"type": "file_search"}],
        tool_resources={"file_search": {"vector_store_ids": [store.id]}},
    )

    await sign_in(page, served[1])
    await page.get_by_role("link", name="Assistants").click()
    section = page.locator("#assistants")
    await section.get_by_role("button", name="Open bee expert").click()
    await section.get_by_role("button", name="New thread").click()
    await section.get_by_label("Message", exact=True).fill("How many eggs does the queen bee lay a day?")
    await section.get_by_label("Tool choice").select_option("required")
    await section.get_by_label("Max tokens").fill("256")
    await section.get_by_role("button", name="Send and run").click()
    await expect(section.get_by_label("Run status")).to_contain_text(re.compile("completed|incomplete"))
    await expect(section.locator("#run-steps li").first).to_contain_text("tool_calls · completed · file_search")
    answer = section.locator("#thread-messages > li").last  # its own items hold the sources' list
    source = answer.get_by_role("list", name="Sources").get_by_role("button").first
    await expect(source).to_contain_text(f"[1] {bees.id}")
    await expect(answer.locator(".content")).to_contain_text("[1]")  # the marker, numbered as its source
    async with page.expect_download() as waiting:
        await source.click()
    download = await waiting.value
    assert download.suggested_filename == "bees.html"
    assert Path(await download.path()).read_text() == DOCUMENTS["bees.html"]


async def test_a_plain_key_sees_why_it_cannot_manage_keys(page: Any, served: tuple[ServerProcess, str]) -> None:
    from playwright.async_api import expect

    projects = httpx.get(
        f"{served[0].base_url}/v1/organization/projects", headers={"authorization": f"Bearer {served[1]}"}
    )
    keys_path = f"{served[0].base_url}/v1/organization/projects/{projects.json()['data'][0]['id']}/api_keys"
    plain = httpx.post(keys_path, headers={"authorization": f"Bearer {served[1]}"}).json()["value"]
    await sign_in(page, plain)
    await page.get_by_role("link", name="Server").click()
    await expect(page.locator("#keys-note")).to_contain_text("--manage-keys")
    await expect(page.get_by_role("button", name="Create a key")).to_be_hidden()
    await expect(page.get_by_role("alert")).to_be_hidden()
