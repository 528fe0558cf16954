"""Runs listing: how long the Runs tab takes to list 100 runs of 1,000 logged steps each.

The runs are written the way a real run writes them: the trainer's metrics log (`MetricsLog`, which
also keeps `status.json` through `RunStatusWriter`) is fed a run's events, 1,000 steps with the ~35
statistics of a PPO step, an evaluation every 100 steps and a checkpoint folder every 250 (its
trainer state only: listing never opens the weights). Then `tnd_core.runs.list_runs` reads the root:

- cold: a fresh process's first listing (the in-process cache emptied; the files may be in the OS's
  page cache, as they are on a server that wrote them);
- warm: the Runs tab's refresh, with nothing changed (the cache holds every run's summary by mtime);
- one changed: a refresh while one run trains (its status.json and metrics.jsonl changed);
- for scale, reading every run's whole metrics.jsonl (what a listing that parsed the metrics would do).

  python -m benchmarks.runs_listing                       # 100 runs x 1,000 steps; writes docs/
  python -m benchmarks.runs_listing --quick --out-dir /tmp/r
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import DOCS, command_line, machine, machine_line, summary, table, write_report

TARGET_S = 1.0
# runs written through the trainer's metrics log; the rest of the runs are copies of them
WRITTEN_RUNS = 5


def make_runs(root: Path, n_runs: int, n_steps: int, seed: int = 0) -> None:
    """Write `n_runs` completed run folders of `n_steps` logged steps under `root` through the trainer's
    own metrics log and status writer."""
    from tnd_core import runs
    from tnd_core import stats as S
    from tnd_core.events import CheckpointEvent, EvalEvent, StatusEvent, StepEvent
    from tnd_core.runs import CHECKPOINT_STATE_FILE
    from tnd_core.trainers.ppo_trainer.metrics_log import MetricsLog

    rng = random.Random(seed)
    names = [n for n in S.DESCRIPTIONS if n not in (S.WALL_CLOCK, S.TOKENS_SEEN)]
    for i in range(min(n_runs, WRITTEN_RUNS)):
        folder = root / f"run-{i:03d}"
        log = MetricsLog(folder)
        log.status.heartbeat_s = 3600.0  # a synthetic run writes in a blink: one status write per state
        log(StatusEvent(0, "started"))
        for step in range(1, n_steps + 1):
            stats = {name: rng.random() for name in names}
            log(StepEvent(step, n_steps, stats, elapsed_s=step * 0.5))
            if step % 100 == 0:
                log(EvalEvent(step, {"words_acquired": float(step), "perplexity": rng.random() * 100}))
            if step % 250 == 0:
                checkpoint = folder / f"checkpoint-{step}"
                checkpoint.mkdir()
                (checkpoint / CHECKPOINT_STATE_FILE).write_text("{}")
                log(CheckpointEvent(step, str(checkpoint)))
        log(StatusEvent(n_steps, "completed"))
    # the others are copies (writing 1,000 steps through the log takes seconds a run); each gets its own
    # creation time, as the listing sorts on it
    last_created = max(runs.read_run(p).created or 0 for p in root.iterdir())
    for i in range(WRITTEN_RUNS, n_runs):
        folder = root / f"run-{i:03d}"
        shutil.copytree(root / f"run-{i % WRITTEN_RUNS:03d}", folder)
        status = runs._read_json(folder / runs.STATUS_FILE)
        runs.write_json(folder / runs.STATUS_FILE, {**status, "created": last_created + i})


def clear_cache() -> None:
    from tnd_core import runs

    with runs._CACHE_LOCK:
        runs._CACHE.clear()
        runs._METRICS_CACHE.clear()


def measure(root: Path, n_runs: int, repeats: int) -> dict[str, Any]:
    from tnd_core import runs

    def timed(fn) -> tuple[float, Any]:
        started = time.perf_counter()
        result = fn()
        return time.perf_counter() - started, result

    cold, warm, changed, full = [], [], [], []
    for _ in range(repeats):
        clear_cache()
        seconds, records = timed(lambda: runs.list_runs(root))
        assert len(records) == n_runs and all(r.status == "completed" for r in records)
        cold.append(seconds)
        warm.append(timed(lambda: runs.list_runs(root))[0])
        one = root / "run-000"
        runs.write_json(one / runs.STATUS_FILE, runs._read_json(one / runs.STATUS_FILE))
        (one / runs.METRICS_FILE).touch()
        changed.append(timed(lambda: runs.list_runs(root))[0])
    for _ in range(max(1, repeats // 2)):
        clear_cache()
        full.append(timed(lambda: [runs.read_metrics(p) for p in sorted(root.iterdir())])[0])
    return {
        "cold": summary(cold),
        "warm": summary(warm),
        "one_changed": summary(changed),
        "read_all_metrics": summary(full),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="10 runs of 100 steps, 2 repeats (the smoke test)")
    parser.add_argument("--out-dir", default=str(DOCS))
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.steps, args.repeats = 10, 100, 2
    m = machine()
    with tempfile.TemporaryDirectory(prefix="tnd-runs-listing-") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        make_runs(root, args.runs, args.steps)
        written_s = time.perf_counter() - started
        size_mb = sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 2**20
        results = measure(root, args.runs, args.repeats)
    rows = [
        [what, r["median"], r["min"], r["max"]]
        for what, r in (
            ("cold: first listing of a process", results["cold"]),
            ("warm: refresh, nothing changed", results["warm"]),
            ("refresh while one run writes", results["one_changed"]),
            ("for scale: parse every metrics.jsonl", results["read_all_metrics"]),
        )
    ]
    verdict = "meets" if results["cold"]["median"] < TARGET_S else "misses"
    markdown = "\n".join(
        [
            f"### Listing {args.runs} runs of {args.steps:,} steps",
            "",
            f"`{command_line('benchmarks.runs_listing', argv)}`; {machine_line(m)}.",
            "",
            f"{args.runs} run folders ({size_mb:.0f} MB in {written_s:.0f} s: {WRITTEN_RUNS} written through the "
            "trainer's metrics log and status writer, the others copies of them), listed by "
            f"`tnd_core.runs.list_runs`; seconds over {args.repeats} repeats:",
            "",
            table(["listing", "median s", "min s", "max s"], rows),
            "",
            f"The cold listing {verdict} the target of {TARGET_S:g} s. A listing reads each run's status.json "
            "(which carries the latest value of every statistic) and scans its folder for checkpoints; it never "
            "parses metrics.jsonl unless a run has no status file.",
        ]
    )
    data = {"machine": m, "runs": args.runs, "steps": args.steps, "size_mb": size_mb, "results": results}
    print(markdown)
    write_report(args.out_dir, "runs_listing", markdown, data)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
