"""The integration run: `tnd train` with default settings on the bundle, then its learning curve.

Runs exactly what `tnd train` runs with no flags (the bundle's recommended config through
`tnd_core.pipeline.run_training`), records every evaluation with its wall-clock time, and writes
docs/integration_curve.png and the table and figures in docs/INTEGRATION.md.

    python scripts/integration_run.py                      # default bundle, ~10 min on 2 CPU cores
    TND_BUNDLE_SIZE=tiny python scripts/integration_run.py --out-dir /tmp/integration
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CURVES = [
    ("eval/grammaticality", "grammaticality of samples"),
    ("eval/words_acquired", "words acquired"),
    ("eval/teacher_student_kl", "teacher-to-student KL (nats/token)"),
    ("eval/perplexity", "held-out perplexity"),
]


def run(output_dir: Path) -> tuple[list[dict], dict, float]:
    """Train with the default settings; returns the evaluations (step, seconds, metrics), the bundle info and the run time."""
    from tnd_core.cli import _training_config, build_parser
    from tnd_core.data.bundle import ensure_bundle
    from tnd_core.events import EvalEvent
    from tnd_core.pipeline import build_trainer

    paths = ensure_bundle()
    config = _training_config(build_parser().parse_args(["train", "--output_dir", str(output_dir)]))
    evaluations: list[dict] = []
    started = time.perf_counter()

    def record(event: object) -> None:
        if isinstance(event, EvalEvent):
            evaluations.append({"step": event.step, "seconds": time.perf_counter() - started, **event.metrics})

    trainer = build_trainer(config, callbacks=[record])
    # the from-scratch student before any update: the start of every curve
    evaluations.append({"step": 0, "seconds": 0.0, **trainer.evaluator(trainer.student, trainer.teacher)})
    started = time.perf_counter()
    trainer.train()
    return evaluations, {**paths.info(), "config": config.to_dict()}, time.perf_counter() - started


def plot(evaluations: list[dict], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(CURVES), figsize=(4 * len(CURVES), 3.2))
    minutes = [e["seconds"] / 60 for e in evaluations]
    for ax, (key, title) in zip(axes, CURVES):
        ax.plot(minutes, [e[key] for e in evaluations], marker="o", markersize=3)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("minutes of training")
        ax.grid(alpha=0.3)
    axes[-1].set_yscale("log")
    fig.suptitle("TnD on the embedded baby language: from-scratch student, default settings", fontsize=11)
    fig.tight_layout()
    fig.savefig(png, dpi=120)


def table(evaluations: list[dict]) -> str:
    head = "| step | minutes | grammaticality | words acquired | teacher-student KL | perplexity | distinct-2 |\n|---:|---:|---:|---:|---:|---:|---:|\n"
    rows = [
        f"| {e['step']} | {e['seconds'] / 60:.1f} | {e['eval/grammaticality']:.3f} | {e['eval/words_acquired']:.0f} | "
        f"{e['eval/teacher_student_kl']:.3f} | {e['eval/perplexity']:.1f} | {e['eval/distinct_2']:.3f} |"
        for e in evaluations
    ]
    return head + "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", default=str(REPO / "docs"), help="Where the PNG and the JSON of the curve go.")
    parser.add_argument("--run-dir", default=str(REPO / "outputs" / "integration"), help="The training run's output_dir.")
    args = parser.parse_args()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    evaluations, info, seconds = run(Path(args.run_dir))
    plot(evaluations, out / "integration_curve.png")
    (out / "integration_curve.json").write_text(json.dumps({"evaluations": evaluations, "run_seconds": seconds, "bundle": info, "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f} at the end"}, indent=1))
    (out / "integration_table.md").write_text(table(evaluations))
    print(table(evaluations))
    print(f"run time {seconds / 60:.1f} min; curve in {out / 'integration_curve.png'}")


if __name__ == "__main__":
    main()
