"""The real app in headless Chromium on the tiny bundle: train with live plots, pause, resume, stop,
compare, reattach after a reload, and a second browser that watches but cannot control the job.

Screenshots go to tests/artifacts/; with TND_UPDATE_SCREENSHOTS=1 the Train and Compare shots also
replace docs/screenshots/ (the README's pictures).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest

from benchmarks.app_server import CHROMIUM, CHROMIUM_ARGS, REPO, VIEWPORT, running_app

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ARTIFACTS = REPO / "tests" / "artifacts"
DOC_SHOTS = REPO / "docs" / "screenshots"
# rows of a gr.Dataframe: Gradio 6 marks each cell with its row's index
TABLE_ROWS_JS = """(id) => new Set(
  [...document.querySelectorAll(`#${id} [data-row]`)].map(cell => cell.getAttribute('data-row'))
).size"""
PLOT_POINTS_JS = """(id) => {
  const div = document.querySelector(`#${id} .js-plotly-plot`);
  if (!div || !div.data) return 0;
  return div.data.reduce((n, trace) => n + (trace.x ? trace.x.length : 0), 0);
}"""


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


@pytest.fixture(scope="module")
def app(tiny_bundle, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("app")
    # this app's runs live in its workdir: its checkpoints are the only ones Compare offers
    with running_app(workdir, env={"TND_RUNS_ROOT": str(workdir / "runs")}) as url:
        yield url, workdir


def open_app(context, url):
    page = context.new_page()
    page.set_default_timeout(90_000)  # clicks wait for a busy page on a loaded 2-core machine
    page.goto(url)
    page.wait_for_selector("#load-models", timeout=60_000)
    # the page's load event has run once the browser holds its owner token
    page.wait_for_function("() => localStorage.getItem('tnd_studio_owner') !== null", timeout=60_000)
    return page


def go(page, tab):
    page.get_by_role("tab", name=tab).click()


def step_of(page) -> int:
    return int(page.locator("#train-progress").get_attribute("data-step"))


def wait_until(predicate, timeout_s, what):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def set_option(page, name, value, accordion=None):
    if accordion:
        page.get_by_text(accordion, exact=True).click()
    field = page.locator(f"#cfg-{name} input, #cfg-{name} textarea").first
    field.fill(str(value))
    field.press("Tab")


def shoot(page, name):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("TND_UPDATE_SCREENSHOTS") == "1":
        DOC_SHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOC_SHOTS / name)


def test_config_problems_show_next_to_the_field(browser, app):
    url, _ = app
    context = browser.new_context(viewport=VIEWPORT)
    page = open_app(context, url)
    go(page, "Config")
    field = page.locator("#cfg-batch_size")
    field.locator("input").fill("10")
    field.locator("input").press("Tab")
    page.wait_for_function(
        "() => document.querySelector('#cfg-batch_size').innerText.includes('must be a multiple of mini_batch_size')",
        timeout=30_000,
    )
    assert "tnd-invalid" in field.get_attribute("class")
    assert "batch_size" in page.locator("#config-check").inner_text()
    go(page, "Train")
    page.locator("#btn-start").click()
    page.wait_for_function(
        "() => document.querySelector('#train-message').innerText.includes('problems')", timeout=30_000
    )
    assert "batch_size" in page.locator("#train-message").inner_text()
    context.close()


def test_train_watch_pause_resume_compare_stop(browser, app):
    url, workdir = app
    owner_ctx = browser.new_context(viewport=VIEWPORT)
    page = open_app(owner_ctx, url)
    go(page, "Config")
    # small steps on the tiny bundle: this test is about the UI, the engine's tests are about learning
    for name, value in (("steps", 400), ("batch_size", 4), ("mini_batch_size", 4), ("ppo_epochs", 1)):
        set_option(page, name, value)
    set_option(page, "max_new_tokens", 8, accordion="Generation")
    set_option(page, "eval_steps", 0, accordion="Run")
    page.wait_for_function(
        "() => document.querySelector('#config-check').innerText.includes('Config OK')", timeout=30_000
    )

    go(page, "Train")
    page.wait_for_selector("#btn-start:not([disabled])")
    clicked = time.monotonic()
    page.evaluate("() => document.querySelector('#btn-start').click()")  # the app's latency, not Playwright's waits
    wait_until(lambda: page.evaluate(PLOT_POINTS_JS, "plot-reward") > 0, 120, "the first plotted reward point")
    first_point_s = time.monotonic() - clicked
    wait_until(lambda: step_of(page) >= 3, 60, "three steps")
    assert page.evaluate(PLOT_POINTS_JS, "plot-kl") > 0 and page.evaluate(PLOT_POINTS_JS, "plot-loss") > 0
    assert "You started this job" in page.locator("#train-role").inner_text()
    assert page.locator("#rollout-table").inner_text().count("\n") > 1
    shoot(page, "train_tab.png")

    # a second browser watches the same job read-only
    viewer_ctx = browser.new_context(viewport=VIEWPORT)
    viewer = open_app(viewer_ctx, url)
    go(viewer, "Train")
    viewer.wait_for_function(
        "() => document.querySelector('#train-role').innerText.includes('read-only')", timeout=60_000
    )
    for button in ("#btn-stop", "#btn-pause", "#btn-start"):
        assert viewer.locator(button).is_disabled(), button
    wait_until(lambda: viewer.evaluate(PLOT_POINTS_JS, "plot-reward") > 0, 60, "the viewer's plots")

    page.locator("#btn-pause").click()
    page.wait_for_function(
        "() => document.querySelector('#train-status').innerText.startsWith('Paused')", timeout=60_000
    )
    paused_at = step_of(page)
    time.sleep(3)
    assert step_of(page) == paused_at, "no step while paused"
    assert viewer.locator("#btn-stop").is_disabled()

    page.locator("#btn-resume").click()
    wait_until(lambda: step_of(page) >= paused_at + 2, 60, "steps after resuming")

    # Compare runs between two training steps, on the current student
    go(viewer, "Compare")
    viewer.locator("#compare-prompt textarea").fill("the dog")
    viewer.locator("#btn-compare").click()
    viewer.wait_for_function(
        "() => document.querySelector('#compare-note').innerText.includes('current run at step')", timeout=90_000
    )
    assert "Left: teacher" in viewer.locator("#compare-note").inner_text()
    for side in ("left", "right"):
        assert "reward" in viewer.locator(f"#compare-{side}-score").inner_text()
        table = f"compare-{side}"
        wait_until(lambda: viewer.evaluate(TABLE_ROWS_JS, table) == 4, 30, f"four samples on the {side}")
    shoot(viewer, "compare_tab.png")

    # a reload keeps ownership: the browser's token reattaches it to its job
    page.reload()
    page.wait_for_selector("#load-models", timeout=60_000)
    go(page, "Train")
    page.wait_for_function(
        "() => document.querySelector('#train-role').innerText.includes('You started this job')", timeout=60_000
    )
    page.wait_for_function("() => !document.querySelector('#btn-stop').disabled", timeout=60_000)

    page.locator("#btn-stop").click()
    page.wait_for_function(
        "() => document.querySelector('#train-status').innerText.startsWith('Stopped')", timeout=120_000
    )
    stopped_at = step_of(page)
    assert 0 < stopped_at < 400
    checkpoints = sorted(workdir.rglob("checkpoint-*"))
    assert checkpoints, "Stop writes a checkpoint"
    viewer.wait_for_function("() => !document.querySelector('#btn-start').disabled", timeout=60_000)

    # the run's checkpoint against the teacher, picked from the runs on disk
    viewer.locator("#compare-left-model input").click()
    viewer.get_by_role("option", name=re.compile(r"checkpoint-\d+$")).first.click()
    viewer.locator("#btn-compare").click()
    viewer.wait_for_function(
        "() => /Left: checkpoint-\\d+ of run/.test(document.querySelector('#compare-note').innerText)", timeout=90_000
    )
    wait_until(lambda: viewer.evaluate(TABLE_ROWS_JS, "compare-left") == 4, 30, "the checkpoint's samples")
    shoot(viewer, "compare_checkpoint.png")

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "browser_timings.json").write_text(
        json.dumps({"start_to_first_point_s": first_point_s, "stopped_at_step": stopped_at})
    )
    viewer_ctx.close()
    owner_ctx.close()


def test_the_memory_plan_next_to_start_follows_the_form_and_refuses_a_run_too_big(browser, app):
    url, _ = app
    context = browser.new_context(viewport=VIEWPORT)
    page = open_app(context, url)
    go(page, "Train")
    plan_says = "(text) => document.querySelector('#train-memory-plan').innerText.includes(text)"
    page.wait_for_function(plan_says, arg="fits", timeout=60_000)
    go(page, "Config")
    for name, value in (("batch_size", 4096), ("mini_batch_size", 4096), ("max_new_tokens", 4096)):
        set_option(page, name, value, accordion="Generation" if name == "max_new_tokens" else None)
    go(page, "Train")
    page.wait_for_function(plan_says, arg="will not fit", timeout=60_000)
    assert "gradient_checkpointing=True" in page.locator("#train-memory-plan").inner_text()
    shoot(page, "train_memory_plan.png")
    page.locator("#btn-start").click()
    page.wait_for_function(
        "() => document.querySelector('#train-message').innerText.includes('memory_check')", timeout=30_000
    )
    context.close()
