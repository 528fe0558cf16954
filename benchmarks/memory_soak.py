"""Memory soak: the server's resident memory over a long training run watched in a browser.

`python app.py` runs in a subprocess on the tiny bundle, a headless Chromium (Playwright) page shows
its Train tab (the 1 s poll and the plot redraws every 3 s), and a run of many cheap steps is started
through the `start_training` API. The server's RSS is sampled every few seconds; the result is the
least-squares slope of RSS over time after a warm-up (model loading, first redraws and allocator
growth settle in the first minutes), in MB per minute. A flat server stays under 1 MB/min.

With `--compare-with PATH` a second app, PATH/app.py (e.g. a git worktree of an older commit), runs
at the same time with its own page, so both see the same load on the machine.

  python -m benchmarks.memory_soak                                  # 10 min; writes docs/bench_memory.md
  python -m benchmarks.memory_soak --minutes 10 --compare-with /tmp/old-checkout
  python -m benchmarks.memory_soak --minutes 10 --variant "arena2:MALLOC_ARENA_MAX=2"   # allocator settings
  python -m benchmarks.memory_soak --minutes 1 --warmup-minutes 0.3 --out-dir /tmp/soak   # a quick look
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from benchmarks.app_server import CHROMIUM, CHROMIUM_ARGS, REPO, VIEWPORT, running_app
from benchmarks.common import DOCS, command_line, machine, machine_line, table, write_report

# many cheap steps, every one logged, an evaluation now and then, no checkpoints
RUN_YAML = (
    "steps: 100000\nbatch_size: 4\nmini_batch_size: 4\nppo_epochs: 1\nmax_new_tokens: 8\n"
    "logging_steps: 1\neval_steps: 200\nsave_steps: 0\noutput_dir: soak-run\n"
)
TARGET_MB_PER_MIN = 1.0


@dataclass
class Watched:
    """One app under watch: its samples (seconds since the run started, RSS in MB, the run's step)."""

    name: str
    url: str
    pid: int
    page: Any
    client: Any
    samples: list[tuple[float, float, int]] = field(default_factory=list)


def server_pid(url: str) -> int:
    """The pid of this process's child serving `url` (matched by the GRADIO_SERVER_PORT it was given)."""
    import psutil

    port = url.rstrip("/").rsplit(":", 1)[1]
    for child in psutil.Process().children():
        try:
            if "app.py" in " ".join(child.cmdline()) and child.environ().get("GRADIO_SERVER_PORT") == port:
                return child.pid
        except psutil.Error:
            continue
    raise RuntimeError(f"no app.py child serves {url}")


def rss_mb(pid: int) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20


def slope_mb_per_min(samples: Sequence[tuple[float, float, int]], warmup_s: float) -> float:
    """Least-squares slope of RSS (MB) over time (minutes) of the samples taken after `warmup_s`."""
    import numpy as np

    kept = [(t, rss) for t, rss, _ in samples if t >= warmup_s]
    if len(kept) < 3:
        raise ValueError(f"only {len(kept)} samples after the warm-up: run longer or sample more often")
    t, rss = np.array(kept).T
    return float(np.polyfit(t / 60.0, rss, 1)[0])


def open_train_tab(browser: Any, url: str) -> Any:
    """A page of the app showing its Train tab, once the page's load event has run."""
    page = browser.new_context(viewport=VIEWPORT).new_page()
    page.set_default_timeout(120_000)
    page.goto(url)
    page.wait_for_selector("#load-models")
    page.wait_for_function("() => localStorage.getItem('tnd_studio_owner') !== null", polling=200)
    page.get_by_role("tab", name="Train").click()
    return page


def page_step(page: Any) -> int:
    return int(page.locator("#train-progress").get_attribute("data-step") or 0)


@dataclass(frozen=True)
class AppUnderTest:
    """An app.py to soak and the extra environment its server starts with."""

    app_file: Path
    env: dict[str, str] = field(default_factory=dict)


def soak(minutes: float, warmup_minutes: float, sample_s: float, apps: dict[str, AppUnderTest]) -> list[dict[str, Any]]:
    """Run every app in `apps` (name -> app.py and environment) side by side for `minutes`, each watched
    by a page; the RSS slope after `warmup_minutes` and the run's pace of each."""
    from gradio_client import Client
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"{CHROMIUM} is missing: apt-get install -y chromium")
    watched: list[Watched] = []
    with sync_playwright() as playwright, ExitStack() as stack:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        stack.callback(browser.close)
        for name, app in apps.items():
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tnd-soak-")))
            env = {"TND_RUNS_ROOT": str(workdir / "runs"), **app.env}
            url = stack.enter_context(running_app(workdir, env=env, app_file=app.app_file))
            page = open_train_tab(browser, url)
            watched.append(Watched(name, url, server_pid(url), page, Client(url, verbose=False)))
        for app in watched:
            answer = app.client.predict("soak", RUN_YAML, api_name="/start_training")
            if not answer.startswith("started"):
                raise RuntimeError(f"{app.name}: {answer}")
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < minutes * 60:
            for app in watched:
                status = app.client.predict(api_name="/training_status")
                if status["state"] == "failed":
                    raise RuntimeError(f"{app.name}: the run failed: {status['error']}")
                app.samples.append((elapsed, rss_mb(app.pid), status["step"]))
            time.sleep(max(0.0, sample_s - (time.monotonic() - started - elapsed)))
        results = []
        for app in watched:
            shown = page_step(app.page)
            if shown <= 0:
                raise RuntimeError(f"{app.name}: the watched page never showed a step")
            results.append(summarise(app, warmup_minutes * 60, shown))
        for app in watched:
            app.client.predict("soak", api_name="/stop_training")
    return results


def summarise(app: Watched, warmup_s: float, shown_step: int) -> dict[str, Any]:
    """Slope, RSS at the start of the run, after the warm-up and at the end, steps and pace."""
    after = [s for s in app.samples if s[0] >= warmup_s]
    first, last = app.samples[0], app.samples[-1]
    minutes = (last[0] - first[0]) / 60
    return {
        "app": app.name,
        "slope_mb_per_min": slope_mb_per_min(app.samples, warmup_s),
        "rss_start_mb": first[1],
        "rss_after_warmup_mb": after[0][1],
        "rss_end_mb": last[1],
        "rss_max_mb": max(s[1] for s in app.samples),
        "steps": last[2],
        "steps_per_min": (last[2] - first[2]) / minutes if minutes else 0.0,
        "steps_after_warmup": last[2] - after[0][2],
        "page_step_at_end": shown_step,
        "samples": app.samples,
    }


def report(results: list[dict[str, Any]], args: argparse.Namespace, argv: list[str] | None) -> str:
    rows = [
        [
            r["app"],
            round(r["slope_mb_per_min"], 2),
            round(r["rss_start_mb"]),
            round(r["rss_after_warmup_mb"]),
            round(r["rss_end_mb"]),
            r["steps"],
            round(r["steps_per_min"], 1),
            r["page_step_at_end"],
        ]
        for r in results
    ]
    verdicts = [
        f"- **{r['app']}**: {r['slope_mb_per_min']:.2f} MB/min after the warm-up "
        f"({'under' if r['slope_mb_per_min'] < TARGET_MB_PER_MIN else 'over'} the {TARGET_MB_PER_MIN:g} MB/min target)"
        for r in results
    ]
    return "\n".join(
        [
            "## Memory over a long watched run",
            "",
            f"`{command_line('benchmarks.memory_soak', argv)}`",
            "",
            machine_line(machine()),
            "",
            f"`python app.py` on the tiny bundle, its Train tab open in headless Chromium, a run of cheap steps "
            f"(batch 4, 8 new tokens, 1 PPO epoch, every step logged, an evaluation every 200 steps) started "
            f"through the API. Server RSS sampled every {args.sample_s:g} s for {args.minutes:g} min; the slope is "
            f"a least-squares fit after the first {args.warmup_minutes:g} min."
            + (" The apps ran at the same time, each with its own page." if len(results) > 1 else ""),
            "",
            table(
                [
                    "app",
                    "RSS slope, MB/min",
                    "RSS at start, MB",
                    "after warm-up, MB",
                    "at end, MB",
                    "steps",
                    "steps/min",
                    "step on the page at end",
                ],
                rows,
            ),
            "",
            *verdicts,
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long the run is watched")
    parser.add_argument("--warmup-minutes", type=float, default=2.0, help="left out of the slope")
    parser.add_argument("--sample-s", type=float, default=5.0, help="seconds between RSS samples")
    parser.add_argument("--compare-with", type=Path, help="another checkout whose app.py runs alongside")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME:VAR=VALUE,...",
        help="this checkout again, alongside, with extra environment variables (repeatable)",
    )
    parser.add_argument("--out-dir", default=str(DOCS), help="where bench_memory.md/.json go")
    args = parser.parse_args(argv)
    os.environ.setdefault("TND_CACHE_DIR", str(REPO / "tests" / "artifacts" / "cache"))
    os.environ.setdefault("TND_BUNDLE_SIZE", "tiny")
    from tnd_core.bundle import ensure_bundle

    ensure_bundle(os.environ["TND_BUNDLE_SIZE"], Path(os.environ["TND_CACHE_DIR"]))
    apps = {"this checkout": AppUnderTest(REPO / "app.py")}
    if args.compare_with:
        apps[f"{args.compare_with}"] = AppUnderTest(args.compare_with / "app.py")
    for variant in args.variant:
        name, _, assignments = variant.partition(":")
        env = dict(item.split("=", 1) for item in assignments.split(",") if "=" in item)
        apps[name] = AppUnderTest(REPO / "app.py", env)
    results = soak(args.minutes, args.warmup_minutes, args.sample_s, apps)
    markdown = report(results, args, argv)
    write_report(args.out_dir, "memory", markdown, {"args": vars(args), "results": results})
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
