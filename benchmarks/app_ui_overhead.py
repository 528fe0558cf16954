"""Step rate of one run headless versus with the app open in a browser, and Start-to-first-point time.

    TND_BUNDLE_SIZE=tiny python benchmarks/app_ui_overhead.py --steps 60 --repeats 2

Headless: the app's `Runner` in this process, no server, no browser. UI: `python app.py` in a
subprocess, headless Chromium on the Train tab, Start clicked in the page, plots polling live.
Both runs use the app's default config (the bundle's recommended values) with `steps` changed, and
alternate so that background load hits both alike. Prints one JSON line per run and a summary.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from app_server import running_app  # noqa: E402  (the tests' launcher: `python app.py` on a free port)

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]
PLOT_POINTS_JS = """(id) => {
  const div = document.querySelector(`#${id} .js-plotly-plot`);
  return div && div.data ? div.data.reduce((n, t) => n + (t.x ? t.x.length : 0), 0) : 0;
}"""


def headless(steps: int, workdir: Path) -> dict:
    """One run through the app's Runner without any UI."""
    from app.runner import Runner
    from app.ui import make_context

    ctx = make_context(runner=Runner())
    ctx.bundle.wait()
    config = ctx.initial_config().replace(steps=steps, output_dir=str(workdir / "headless"), save_steps=0)
    clicked = time.monotonic()
    ctx.runner.start(config, "bench")
    ctx.runner.join()
    snap = ctx.runner.store.snapshot()
    assert snap.state == "completed", snap.error
    return {"mode": "headless", "steps": snap.step, "train_s": snap.elapsed_s, "steps_per_s": snap.step / snap.elapsed_s, "start_to_first_step_s": snap.first_step_wall_s, "wall_s": time.monotonic() - clicked}


def with_ui(steps: int, workdir: Path, browser) -> dict:
    """The same run started by clicking Start in a browser that keeps the Train tab open."""
    from gradio_client import Client

    with running_app(workdir) as url:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        page.wait_for_selector("#load-models", timeout=120_000)
        page.get_by_role("tab", name="Config").click()
        field = page.locator("#cfg-steps input")
        field.fill(str(steps))
        field.press("Tab")
        page.wait_for_function("() => document.querySelector('#config-check').innerText.includes('Config OK')", timeout=30_000)
        page.get_by_role("tab", name="Train").click()
        page.wait_for_selector("#btn-start")
        clicked = time.monotonic()
        page.locator("#btn-start").click()
        while page.evaluate(PLOT_POINTS_JS, "plot-reward") == 0:
            time.sleep(0.05)
        first_point = time.monotonic() - clicked
        page.wait_for_function("() => document.querySelector('#train-status').innerText.startsWith('Completed')", timeout=600_000)
        status = Client(url, verbose=False).predict(api_name="/training_status")
        page.close()
    return {
        "mode": "ui",
        "steps": status["step"],
        "train_s": status["elapsed_s"],
        "steps_per_s": status["step"] / status["elapsed_s"],
        "start_to_first_step_s": status["first_step_wall_s"],
        "start_to_first_plotted_point_s": first_point,
        "wall_s": time.monotonic() - clicked,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    results = []
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
        for i in range(args.repeats):
            for mode in ("headless", "ui"):
                workdir = Path(tmp) / f"{mode}-{i}"
                workdir.mkdir()
                result = headless(args.steps, workdir) if mode == "headless" else with_ui(args.steps, workdir, browser)
                results.append(result)
                print(json.dumps(result), flush=True)
        browser.close()
    for mode in ("headless", "ui"):
        rates = [r["steps_per_s"] for r in results if r["mode"] == mode]
        print(f"{mode:8s} steps/s: median {statistics.median(rates):.3f} over {len(rates)} runs {[round(r, 3) for r in rates]}")
    points = [r["start_to_first_plotted_point_s"] for r in results if r["mode"] == "ui"]
    print(f"Start click to first plotted point: median {statistics.median(points):.2f} s {[round(p, 2) for p in points]}")


if __name__ == "__main__":
    main()
