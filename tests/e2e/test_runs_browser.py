"""Runs outlive the server, in headless Chromium on the tiny bundle: a run killed with its server (SIGKILL)
shows as interrupted after a restart, resumes from the Runs tab and continues its curves, and overlays
on another run.

Screenshots go to tests/artifacts/; with TND_UPDATE_SCREENSHOTS=1 they also replace docs/screenshots/
(the README's pictures).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
from api_calls import wait_for

from benchmarks.app_server import CHROMIUM, CHROMIUM_ARGS, REPO, VIEWPORT, running_app
from tnd_core import runs

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ARTIFACTS = REPO / "tests" / "artifacts"
DOC_SHOTS = REPO / "docs" / "screenshots"
SMALL = "batch_size: 4\nmini_batch_size: 4\nppo_epochs: 1\nmax_new_tokens: 8\nlogging_steps: 1\neval_steps: 0\n"
BASELINE = SMALL + "steps: 4\nsave_steps: 0\nlearning_rate: 1.0e-4\noutput_dir: baseline\n"
LONG = SMALL + "steps: 400\nsave_steps: 2\nsave_total_limit: 2\noutput_dir: long\n"
COLOURS_JS = """(id) => {
  const div = document.querySelector(`#${id} .js-plotly-plot`);
  const colours = {};
  for (const t of div && div.data ? div.data : []) colours[t.legendgroup] = t.line.color;
  return colours;
}"""
TRACES_JS = """(id) => {
  const div = document.querySelector(`#${id} .js-plotly-plot`);
  return div && div.data ? div.data.filter((t) => t.x && t.x.length).map((t) => t.legendgroup) : [];
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


def open_runs_tab(browser, url):
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.set_default_timeout(90_000)
    page.goto(url)
    page.wait_for_function("() => localStorage.getItem('tnd_studio_owner') !== null", timeout=60_000)
    page.get_by_role("tab", name="Runs").click()
    page.wait_for_selector("#runs-table")
    return context, page


def row_of(page, name: str) -> str:
    """The Runs table's row text of the run folder `name` ('' when it is not listed)."""
    return page.evaluate(
        """(name) => {
          const rows = [...document.querySelectorAll('#runs-table [role=row].virtual-row')];
          const cells = (r) => [...r.querySelectorAll('[role=gridcell]')];
          const row = rows.find((r) => cells(r).some((cell) => cell.innerText.trim() === name));
          return row ? row.innerText : '';
        }""",
        name,
    )


def wait_until(predicate, timeout_s, what):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def shoot(page, name):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("TND_UPDATE_SCREENSHOTS") == "1":
        DOC_SHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOC_SHOTS / name)


def test_a_run_killed_with_its_server_is_interrupted_then_resumed_and_overlaid(browser, tiny_bundle, tmp_path):
    from gradio_client import Client

    runs_root = tmp_path / "runs"
    env = {"TND_RUNS_ROOT": str(runs_root)}
    long_run = runs_root / "long"
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()

    with running_app(tmp_path / "first", timeout_s=360, env=env) as url:
        client = Client(url, verbose=False)
        assert client.predict("tester", BASELINE, api_name="/start_training").startswith("started")
        wait_for(client, lambda s: s["state"] == "completed", 120, "the baseline run to complete")
        assert client.predict("tester", LONG, api_name="/start_training").startswith("started")
        context, page = open_runs_tab(browser, url)
        wait_until(lambda: len(runs.list_checkpoints(long_run)) >= 1, 120, "a checkpoint of the long run")
        page.locator("#btn-runs-refresh").click()
        wait_until(lambda: "running" in row_of(page, "long"), 30, "the long run listed as running")
        assert "completed" in row_of(page, "baseline")
        context.close()
        status = json.loads((long_run / runs.STATUS_FILE).read_text())
        os.kill(status["pid"], signal.SIGKILL)  # the run lives in the server's process: both die mid-run
        wait_until(lambda: not runs.pid_alive(status["pid"]), 10, "the server to die")
    killed_at = runs.read_run(long_run)
    assert killed_at.status == "interrupted" and killed_at.checkpoints

    with running_app(tmp_path / "second", timeout_s=360, env=env) as url:
        context, page = open_runs_tab(browser, url)
        assert "interrupted" in row_of(page, "long"), row_of(page, "long")
        page.locator("#runs-pick input").click()
        page.get_by_role("option", name="long", exact=True).click()
        page.locator("#btn-runs-resume").click()
        page.wait_for_function("() => document.querySelector('#runs-note').innerText.includes('Resuming run')")
        resumed_from = killed_at.checkpoints[-1]
        wait_until(lambda: runs.read_run(long_run).steps_done > resumed_from + 1, 120, "steps after the resume")
        steps = [r["step"] for r in map(json.loads, (long_run / runs.METRICS_FILE).read_text().splitlines())]
        assert steps == list(range(1, len(steps) + 1)), "the curves continue with no step twice"

        for name in ("long", "baseline"):
            page.locator("#runs-compare").get_by_label(name, exact=True).check()
        page.locator("#runs-axis").get_by_label("student tokens seen").check()
        page.wait_for_function(
            "() => document.querySelector('#runs-note').innerText.includes('Overlaid 2 runs')", timeout=60_000
        )
        # one colour (legend group) per run; a run has a line per statistic (trials' and demos' reward)
        wait_until(lambda: set(page.evaluate(TRACES_JS, "runs-plot-reward")) == {"baseline", "long"}, 60, "overlay")
        colours = page.evaluate(COLOURS_JS, "runs-plot-kl")
        assert len(colours) == 2 and len(set(colours.values())) == 2, colours
        assert "learning_rate" in page.locator("#runs-diff").inner_text()
        wait_until(lambda: "running" in row_of(page, "long"), 30, "the resumed run listed as running")
        shoot(page, "runs_tab.png")
        context.close()
