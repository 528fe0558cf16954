"""The Models tab's presets in headless Chromium: picking a preset and applying it fills the model fields and
the LoRA / memory options, says what the memory plan on this machine suggests, and leaves a valid config.
Nothing is loaded (the presets name Hub models, and the tests are offline). Screenshot:
tests/artifacts/models_presets.png."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from benchmarks.app_server import CHROMIUM, CHROMIUM_ARGS, REPO, VIEWPORT, running_app
from tnd_core.models.presets import PRESETS

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ARTIFACTS = REPO / "tests" / "artifacts"


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        message = f"{CHROMIUM} is missing: apt-get install -y chromium"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def _value(page, name: str) -> str:
    return page.locator(f"#cfg-{name} input, #cfg-{name} textarea").first.input_value()


def test_a_preset_fills_the_models_and_memory_options(browser, tiny_bundle, tmp_path_factory):
    preset = PRESETS[2]  # Qwen2.5: the largest pair
    workdir = tmp_path_factory.mktemp("presets-app")
    with running_app(workdir, env={"TND_RUNS_ROOT": str(workdir / "runs")}) as url:
        page = browser.new_context(viewport=VIEWPORT).new_page()
        page.set_default_timeout(90_000)  # a loaded 2-core machine
        page.goto(url)
        page.wait_for_selector("#apply-preset", timeout=60_000)
        page.locator("#model-preset input").click()
        page.get_by_role("option", name=preset.name, exact=True).click()
        page.locator("#apply-preset").click()
        page.wait_for_function(
            "() => document.querySelector('#preset-note').innerText.includes('Memory plan on')", timeout=90_000
        )
        note = page.locator("#preset-note").inner_text()
        assert preset.name in note and f"{preset.dataset}" in note
        assert _value(page, "teacher_name_or_path") == preset.teacher
        assert _value(page, "student_name_or_path") == preset.student
        assert _value(page, "reward_model_name_or_path") == preset.reward_model
        page.get_by_text("LoRA and memory", exact=True).click()
        use_lora = page.locator("#cfg-use_lora input").is_checked()
        assert ("use_lora=True" in note) == use_lora  # the checkbox shows what the note suggests
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "models_presets.png"), full_page=True)
        page.get_by_role("tab", name="Config").click()
        page.wait_for_function(
            "() => document.querySelector('#config-check').innerText.includes('Config OK')", timeout=30_000
        )
