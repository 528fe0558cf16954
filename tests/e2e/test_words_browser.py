"""The Words tab in headless Chromium on two finished tiny-bundle runs: curves, heat map, the
across-runs scatter and a CSV export. Screenshot: tests/artifacts/words_tab.png (and, with
TND_UPDATE_SCREENSHOTS=1, docs/screenshots/words_tab.png, the README's picture).

The runs are 3 steps long, evaluated at each (evaluations cost most of the time);
TND_WORDS_STEPS=20 makes them 20 steps evaluated every 2, as in the README's picture."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from benchmarks.app_server import CHROMIUM, CHROMIUM_ARGS, REPO, VIEWPORT, running_app

pytestmark = [pytest.mark.browser, pytest.mark.slow]

STEPS = int(os.environ.get("TND_WORDS_STEPS", "3"))
EVAL_STEPS = max(1, STEPS // 10)
# the short test's runs use small batches; the README's picture, the bundle's own
BATCH = {} if "TND_WORDS_STEPS" in os.environ else {"batch_size": 4, "mini_batch_size": 4}
ARTIFACTS = REPO / "tests" / "artifacts"
DOC_SHOTS = REPO / "docs" / "screenshots"
RUNS = {
    "tnd-words": {},  # the bundle's recommended TnD run
    "plain-ppo-words": {"distill_coef": 0.0, "use_teacher_demos": False, "kl_reference": "initial_student"},
}
TRACES_JS = """(id) => {
  const div = document.querySelector(`#${id} .js-plotly-plot`);
  return div && div.data ? div.data.length : 0;
}"""


@pytest.fixture(scope="module")
def runs_root(tiny_bundle, tmp_path_factory):
    """Two short finished runs under one runs root."""
    from tnd_core.config import CustomPPOConfig
    from tnd_core.pipeline import build_trainer

    root = tmp_path_factory.mktemp("words") / "runs"
    for name, changes in RUNS.items():
        config = CustomPPOConfig.load(tiny_bundle.config).replace(
            steps=STEPS,
            eval_steps=EVAL_STEPS,
            ppo_epochs=1,
            save_steps=0,
            output_dir=str(root / name),
            **BATCH,
            **changes,
        )
        build_trainer(config).train()
    return root


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


def wait_until(predicate, timeout_s, what):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def pick(page, elem_id, name):
    page.locator(f"#{elem_id} input").click()
    # both run pickers list the same runs: take the option of the one just opened
    page.locator(f"#{elem_id}").get_by_role("option", name=name, exact=True).click()


def test_words_tab_on_two_finished_runs(browser, runs_root, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("words-app")
    with running_app(workdir, env={"TND_RUNS_ROOT": str(runs_root)}) as url:
        page = browser.new_context(viewport=VIEWPORT).new_page()
        page.set_default_timeout(90_000)  # a loaded 2-core machine
        page.goto(url)
        page.get_by_role("tab", name="Words").click()
        pick(page, "words-run", "tnd-words")
        pick(page, "words-run-b", "plain-ppo-words")
        for plot in ("words-curves", "words-heatmap", "words-scatter"):
            wait_until(lambda: page.evaluate(TRACES_JS, plot) > 0, 60, f"the {plot} figure")
        summary = page.locator("#words-summary").inner_text()
        evaluations = STEPS // EVAL_STEPS
        assert f"words at {evaluations} evaluations (steps {EVAL_STEPS}–{evaluations * EVAL_STEPS})" in summary
        assert page.evaluate(TRACES_JS, "words-heatmap") == 2  # surprisal and, beside it, the frequencies
        assert page.locator("#words-table").inner_text().count("\n") > 10

        page.locator("#btn-words-table-csv").click()
        link = page.locator("#words-csv a").first
        link.wait_for()
        assert ".csv" in link.get_attribute("href")

        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / "words_tab.png"
        page.screenshot(path=str(shot), full_page=True)
        if os.environ.get("TND_UPDATE_SCREENSHOTS") == "1":
            DOC_SHOTS.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(shot, DOC_SHOTS / "words_tab.png")
