"""UI overhead: the same short run headless and inside the app with a browser tab open on the Train tab.

Headless is what `tnd train` runs (`tnd_core.pipeline.run_training`), in this process, with no server
and no browser. UI is `python app.py` in a subprocess, headless Chromium (Playwright) on the Train
tab, Start clicked in the page and the live plots polling. Both use the app's starting config (the
defaults overlaid with the bundle's recommended values) with `steps` and `output_dir` changed, and
alternate, headless then UI, so background load hits both alike.

Measured: the trainer's own steps/s (StepEvent `elapsed_s` at the last step; the app reports the same
number through its `training_status` API), the time from the Start click to the first plotted point
(headless: from the call to the first step), and the time from the Stop click to the page showing
the job stopped (the current step finishes and a checkpoint is written first).

  python -m benchmarks.ui_overhead                            # ~5 min on 2 CPU cores; writes docs/
  python -m benchmarks.ui_overhead --quick --out-dir /tmp/u   # the smoke test
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.app_server import CHROMIUM, CHROMIUM_ARGS, VIEWPORT, running_app
from benchmarks.common import (
    DOCS,
    command_line,
    machine,
    machine_line,
    quiet_libraries,
    set_threads,
    summary,
    table,
    write_report,
)

PLOT_POINTS_JS = """(id) => {
  const div = document.querySelector(`#${id} .js-plotly-plot`);
  return div && div.data ? div.data.reduce((n, t) => n + (t.x ? t.x.length : 0), 0) : 0;
}"""


def start_config(steps: int, output_dir: str) -> Any:
    """The app's starting config (defaults + the bundle's recommended values) with steps and output_dir set."""
    from tnd_core.bundle import ensure_bundle
    from tnd_core.config import CustomPPOConfig

    paths = ensure_bundle(size=os.environ.get("TND_BUNDLE_SIZE") or None)
    values = CustomPPOConfig().to_dict()
    if getattr(paths, "config", None) and Path(paths.config).is_file():
        values.update(CustomPPOConfig.load(paths.config).to_dict())
    return CustomPPOConfig.from_dict({**values, "steps": steps, "output_dir": output_dir})


def headless_run(steps: int, output_dir: str) -> dict[str, float]:
    """`run_training` on the starting config: steps/s and call-to-first-step seconds."""
    from tnd_core.events import StepEvent
    from tnd_core.pipeline import run_training

    config = start_config(steps, output_dir)
    seen: dict[str, float] = {}
    started = time.monotonic()

    def on_event(event: Any) -> None:
        if isinstance(event, StepEvent):
            seen.setdefault("first_step_s", time.monotonic() - started)
            seen["step"], seen["elapsed_s"] = event.step, event.elapsed_s

    cpu = cpu_seconds()
    result = run_training(config, callbacks=[on_event])
    if result["state"] != "completed":
        raise RuntimeError(f"headless run ended {result['state']}")
    return {
        "steps": seen["step"],
        "train_s": seen["elapsed_s"],
        "steps_per_s": seen["step"] / seen["elapsed_s"],
        "start_to_first_s": seen["first_step_s"],
        "cpu_s_per_step": {k: (v - cpu[k]) / seen["step"] for k, v in cpu_seconds().items()},
    }


_CPU_BY_PID: dict[int, tuple[str, float]] = {}


def cpu_seconds() -> dict[str, float]:
    """CPU seconds used so far by this process, the app server (a child running app.py) and the browser
    (chromium). A child that has exited keeps its last reading, so the totals never go backwards."""
    import psutil

    me = psutil.Process()
    _CPU_BY_PID[me.pid] = ("this process", sum(me.cpu_times()[:2]))
    for child in me.children(recursive=True):
        try:
            name, cmd, times = child.name(), " ".join(child.cmdline()), child.cpu_times()
        except psutil.Error:
            continue
        key = "browser" if "chrom" in name or "chrom" in cmd else "app server" if "app.py" in cmd else None
        if key:
            _CPU_BY_PID[child.pid] = (key, times.user + times.system)
    out = {"this process": 0.0, "app server": 0.0, "browser": 0.0}
    for key, seconds in _CPU_BY_PID.values():
        out[key] += seconds
    return out


# ---------------------------------------------------------------------- the app in a browser
def _wait(predicate: Any, timeout_s: float, what: str, poll_s: float = 0.05) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(poll_s)


def _open_train_tab(browser: Any, url: str, steps: int) -> Any:
    """A fresh page with `steps` set on the Config tab, showing the Train tab. Runs share the app's
    output folder; a new run starts fresh and replaces checkpoints of the same step atomically."""
    page = browser.new_page(viewport=VIEWPORT)
    page.goto(url)
    page.wait_for_selector("#load-models", timeout=120_000)
    # the page's load event may refill the form (the bundle's recommended values): type after it
    page.wait_for_function("() => localStorage.getItem('tnd_studio_owner') !== null", timeout=120_000, polling=100)
    page.get_by_role("tab", name="Config").click()
    box = page.locator("#cfg-steps input")
    box.fill(str(steps))
    box.press("Tab")
    page.wait_for_function(
        "() => document.querySelector('#config-check').innerText.includes('Config OK')", timeout=30_000
    )
    page.get_by_role("tab", name="Train").click()
    page.wait_for_selector("#btn-start")
    return page


def _status_text(page: Any) -> str:
    return page.locator("#train-status").inner_text()


def ui_run(browser: Any, client: Any, url: str, steps: int, timeout_s: float) -> dict[str, float]:
    """Click Start, time the first plotted point, wait for completion; steps/s from the app's status API."""
    page = _open_train_tab(browser, url, steps)
    cpu = cpu_seconds()
    clicked = time.monotonic()
    page.locator("#btn-start").click()
    _wait(lambda: page.evaluate(PLOT_POINTS_JS, "plot-reward") > 0, timeout_s, "the first plotted point")
    first_point = time.monotonic() - clicked
    # polled every 200 ms: Playwright's default polls on every animation frame, which keeps the
    # renderer drawing 60 frames a second and would bill the browser for the benchmark's own probe
    page.wait_for_function(
        "() => document.querySelector('#train-status').innerText.startsWith('Completed')",
        timeout=timeout_s * 1000,
        polling=200,
    )
    status = client.predict(api_name="/training_status")
    used = {k: (v - cpu[k]) / status["step"] for k, v in cpu_seconds().items()}
    page.close()
    return {
        "steps": status["step"],
        "train_s": status["elapsed_s"],
        "steps_per_s": status["step"] / status["elapsed_s"],
        "start_to_first_s": first_point,
        "job_start_to_first_step_s": status["first_step_wall_s"],
        "cpu_s_per_step": used,
    }


def ui_stop(browser: Any, client: Any, url: str, after_steps: int, timeout_s: float) -> dict[str, float]:
    """Start a long run; once the page shows `after_steps` steps, click Stop and time (a) until the job has
    stopped, asking the app's status API, and (b) until the page says so. Also how far the page lagged."""
    page = _open_train_tab(browser, url, 100_000)
    page.locator("#btn-start").click()
    step_of = lambda: int(page.locator("#train-progress").get_attribute("data-step") or 0)  # noqa: E731
    _wait(
        lambda: step_of() >= after_steps and page.locator("#btn-stop").is_enabled(), timeout_s, f"{after_steps} steps"
    )
    page_step = step_of()
    job_step = client.predict(api_name="/training_status")["step"]
    clicked = time.monotonic()
    page.locator("#btn-stop").click()
    _wait(
        lambda: client.predict(api_name="/training_status")["state"] == "stopped",
        timeout_s,
        "the job to stop",
        poll_s=0.1,
    )
    job_stopped = time.monotonic() - clicked
    page.wait_for_function(
        "() => document.querySelector('#train-status').innerText.startsWith('Stopped')",
        timeout=timeout_s * 1000,
        polling=50,
    )
    page_stopped = time.monotonic() - clicked
    status = client.predict(api_name="/training_status")
    page.close()
    return {
        "job_stop_s": job_stopped,
        "page_stop_s": page_stopped,
        "page_step_at_click": page_step,
        "job_step_at_click": job_step,
        "stopped_at": status["step"],
        "mean_step_s": status["elapsed_s"] / max(status["step"], 1),
    }


# ---------------------------------------------------------------------- report
def render(data: dict[str, Any]) -> str:
    h, u, stops = data["headless"], data["ui"], data["stops"]
    ratios = summary([b["steps_per_s"] / a["steps_per_s"] for a, b in zip(h, u)])
    hr, ur = summary([r["steps_per_s"] for r in h]), summary([r["steps_per_s"] for r in u])
    hf, uf = summary([r["start_to_first_s"] for r in h]), summary([r["start_to_first_s"] for r in u])
    uj = summary([r["job_start_to_first_step_s"] for r in u])
    job, page = summary([r["job_stop_s"] for r in stops]), summary([r["page_stop_s"] for r in stops])
    lag = statistics.median(r["job_step_at_click"] - r["page_step_at_click"] for r in stops)
    step_s = statistics.median(r["mean_step_s"] for r in stops)
    rows = [
        [
            "headless (`run_training`)",
            hr["median"],
            f"{hr['min']:.3g}-{hr['max']:.3g}",
            hr["n"],
            f"{hf['median']:.1f} s (call to first step)",
        ],
        [
            "app + browser on the Train tab",
            ur["median"],
            f"{ur['min']:.3g}-{ur['max']:.3g}",
            ur["n"],
            f"{uf['median']:.1f} s (Start click to first plotted point; job start to first step {uj['median']:.1f} s)",
        ],
    ]
    cpu_rows = [
        [mode]
        + [statistics.fmean(r["cpu_s_per_step"][k] for r in runs) for k in ("this process", "app server", "browser")]
        for mode, runs in (("headless", h), ("app + browser", u))
    ]
    stop_rows = [
        [what, x["median"], x["min"], x["max"]]
        for what, x in (("job stopped (app's status API)", job), ("page shows Stopped", page))
    ]
    c = data["config"]
    return "\n".join(
        [
            f"Machine: {machine_line(data['machine'])}.",
            "",
            f"Command: `{data['command']}`",
            "",
            f"Run: the app's starting config on the `{data['bundle_size']}` bundle (batch {c['batch_size']}, "
            f"{c['max_new_tokens']} new tokens, {c['ppo_epochs']} PPO epochs, clm_per_step {c['clm_per_step']}, "
            f"demos {'on' if c['use_teacher_demos'] else 'off'}, distill_coef {c['distill_coef']}, "
            f"eval every {c['eval_steps']} steps), "
            f"{data['steps']} steps per run, {len(h)} interleaved rounds (headless, then app). "
            "The browser runs on the same machine "
            "as the app, as when training locally; on a hosted Space it would not.",
            "",
            f"**Headline:** step rate in the app with a browser watching = **{ratios['median']:.2f}x** headless "
            f"(median of paired rounds, {ratios['min']:.2f}-{ratios['max']:.2f}; "
            f"target >= 0.95: {'met' if ratios['median'] >= 0.95 else 'not met'}). "
            f"Start click to first plotted point: **{uf['median']:.1f} s** "
            f"(the job's first step came {uj['median']:.1f} s after its start). "
            f"Stop click to job stopped: **{job['median']:.1f} s**; to the page showing it: **{page['median']:.1f} s** "
            f"(median of {job['n']}; a step takes {step_s:.2f} s here, "
            "and Stop finishes it and writes a checkpoint first).",
            "",
            table(["mode", "steps/s median", "min-max", "runs", "time to first point"], rows),
            "",
            "Stop click to stopped, seconds:",
            "",
            table(["", "median", "min", "max"], stop_rows),
            "",
            f"When Stop was clicked the page showed a step {lag:.0f} step(s) behind the job (median).",
            "",
            "CPU seconds per training step (user + system) of each process during the runs: "
            "where the app's extra cost goes.",
            "",
            table(
                ["mode", "benchmark process (headless training)", "app server (training + UI)", "browser (Chromium)"],
                cpu_rows,
            ),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40, help="steps per rate run")
    parser.add_argument("--reps", type=int, default=3, help="interleaved rounds (headless, app)")
    parser.add_argument("--stop-after", type=int, default=3, help="steps before Stop is clicked")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds any one wait may take")
    parser.add_argument("--quick", action="store_true", help="tiny budget for the smoke test")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's choice); 1 is steadier on a shared machine",
    )
    parser.add_argument("--out-dir", default=str(DOCS))
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.reps, args.stop_after = 2, 1, 1
    quiet_libraries()
    set_threads(1 if args.quick and args.threads is None else args.threads)
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"{CHROMIUM} is missing: apt-get install -y chromium")
    from gradio_client import Client
    from playwright.sync_api import sync_playwright

    info = machine()
    data: dict[str, Any] = {
        "machine": info,
        "command": command_line("benchmarks.ui_overhead", argv),
        "steps": args.steps,
        "headless": [],
        "ui": [],
        "stops": [],
    }
    with tempfile.TemporaryDirectory(prefix="tnd-ui-bench-") as tmp:
        work = Path(tmp)
        data["config"] = start_config(args.steps, "unused").to_dict()  # builds the bundle first if needed
        import tnd_core.pipeline  # noqa: F401  (imports before the first timed call, as the app has them loaded)
        import tnd_core.trainers.ppo_trainer.ppo  # noqa: F401

        data["bundle_size"] = os.environ.get("TND_BUNDLE_SIZE") or "default"
        with running_app(work, timeout_s=300) as url, sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            client = Client(url, verbose=False)
            for rep in range(args.reps):
                data["headless"].append(headless_run(args.steps, str(work / f"headless-{rep}")))
                data["ui"].append(ui_run(browser, client, url, args.steps, args.timeout))
                print(
                    f"round {rep + 1}: headless {data['headless'][-1]['steps_per_s']:.3f} steps/s, "
                    f"app {data['ui'][-1]['steps_per_s']:.3f} steps/s",
                    flush=True,
                )
            for rep in range(args.reps):
                data["stops"].append(ui_stop(browser, client, url, args.stop_after, args.timeout))
                print(
                    f"stop {rep + 1}: job {data['stops'][-1]['job_stop_s']:.2f} s, "
                    f"page {data['stops'][-1]['page_stop_s']:.2f} s",
                    flush=True,
                )
            browser.close()
    path = write_report(args.out_dir, "ui_overhead", render(data), data)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
