"""Take the README's screenshots on a real run: the Train tab mid-run, then Compare on its student.

    python docs/screenshots/take.py --at-step 15       # the default bundle (built first if needed)
    TND_BUNDLE_SIZE=tiny python docs/screenshots/take.py --at-step 4

Starts `python app.py` in a scratch folder, drives it in headless Chromium with the bundle's
recommended config, and writes train_tab.png and compare_tab.png next to this file.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from benchmarks.app_server import CHROMIUM, CHROMIUM_ARGS, VIEWPORT, running_app  # noqa: E402  (the launcher of `python app.py` the tests use)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--at-step", type=int, default=15, help="take the Train shot once this step is plotted")
    parser.add_argument("--prompt", default="the dog")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp, running_app(Path(tmp), timeout_s=1800) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport=VIEWPORT)
        page.goto(url)
        page.wait_for_function("() => localStorage.getItem('tnd_studio_owner') !== null", timeout=1_800_000)
        page.get_by_role("tab", name="Train").click()
        page.wait_for_selector("#btn-start:not([disabled])")
        page.locator("#btn-start").click()
        page.wait_for_function(
            f"() => Number(document.querySelector('#train-progress').dataset.step) >= {args.at_step}",
            timeout=3_600_000,
            polling=1000,
        )
        time.sleep(3)  # let the plots finish drawing the step
        page.screenshot(path=str(HERE / "train_tab.png"), full_page=True)

        page.get_by_role("tab", name="Compare").click()
        page.locator("#compare-prompt textarea").fill(args.prompt)
        page.locator("#btn-compare").click()
        page.wait_for_function(
            "() => document.querySelector('#compare-note').innerText.includes('current run at step')", timeout=600_000
        )
        time.sleep(1)
        page.screenshot(path=str(HERE / "compare_tab.png"), full_page=True)
        page.get_by_role("tab", name="Train").click()
        page.locator("#btn-stop").click()
        page.wait_for_function(
            "() => /^(Stopped|Completed)/.test(document.querySelector('#train-status').innerText)", timeout=600_000
        )
        browser.close()
    print(f"wrote {HERE / 'train_tab.png'} and {HERE / 'compare_tab.png'}")


if __name__ == "__main__":
    main()
