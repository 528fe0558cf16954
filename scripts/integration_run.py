"""The integration run: `tnd train` with default settings on the bundle, then its learning curve.

Runs exactly what `tnd train` runs with no flags (the bundle's recommended config through
`tnd_core.pipeline.build_trainer`), records every evaluation with its wall-clock time, and writes
docs/integration_curve.png, docs/integration_curve.json (raw numbers) and docs/INTEGRATION.md
(the bundle's build figures, the table, the teacher as a reference row).

    python scripts/integration_run.py                      # default bundle, ~10 min on 2 CPU cores
    TND_BUNDLE_SIZE=tiny python scripts/integration_run.py --out-dir /tmp/integration
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
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
    """Train with the default settings; returns the evaluations (step, seconds, metrics), bundle info and run time."""
    from tnd_core.bundle import ensure_bundle
    from tnd_core.cli import _training_config, build_parser
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
    seconds = time.perf_counter() - started
    teacher = {"step": "teacher", "seconds": None, **trainer.evaluator(trainer.teacher, trainer.teacher)}
    return evaluations, {**paths.info(), "config": config.to_dict(), "teacher_reference": teacher}, seconds


def _version(package: str) -> str:
    return importlib.metadata.version(package)


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


def _minutes(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds / 60:.1f}"


def table(evaluations: list[dict]) -> str:
    """Markdown table of the evaluations (a row without minutes is a reference, e.g. the teacher)."""
    head = (
        "| step | minutes | grammaticality | words acquired | teacher-student KL | perplexity | distinct-2 |\n"
        "|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    rows = [
        f"| {e['step']} | {_minutes(e['seconds'])} | {e['eval/grammaticality']:.3f} | "
        f"{e['eval/words_acquired']:.0f} | {e['eval/teacher_student_kl']:.3f} | {e['eval/perplexity']:.1f} | "
        f"{e['eval/distinct_2']:.3f} |"
        for e in evaluations
    ]
    return head + "\n".join(rows) + "\n"


def report(
    evaluations: list[dict], info: dict, seconds: float, total_seconds: float, machine: str, command: str
) -> str:
    """docs/INTEGRATION.md: what ran, on what, the bundle's own figures, the curve and the table."""
    m, spec, counts, config = info["metrics"], info["spec"], info["counts"], info["config"]
    start, end, teacher = evaluations[0], evaluations[-1], info["teacher_reference"]
    stage_s = ", ".join(f"{k} {v:.0f} s" for k, v in info["stage_seconds"].items())
    now = datetime.datetime.now(datetime.timezone.utc)
    versions = (
        f"Python {platform.python_version()}, torch {_version('torch')}, "
        f"transformers {_version('transformers')}, TRL {_version('trl')}"
    )
    # (label, metric, format) per row; the teacher's KL to itself is 0 by definition
    metrics = [
        ("grammaticality of samples", "eval/grammaticality", ".3f"),
        ("words acquired (surprisal below threshold)", "eval/words_acquired", ".0f"),
        ("teacher-to-student KL (nats/token)", "eval/teacher_student_kl", ".3f"),
        ("held-out perplexity", "eval/perplexity", ".1f"),
    ]
    result_rows = [
        f"| metric (held-out, 64 samples / {spec['eval_sentences']} sentences) | from scratch "
        f"| after {end['step']} steps | teacher |",
        "|---|---:|---:|---:|",
    ] + [
        f"| {label} | {start[key]:{fmt}} | **{end[key]:{fmt}}** | "
        f"{'0' if key == 'eval/teacher_student_kl' else format(teacher[key], fmt)} |"
        for label, key, fmt in metrics
    ]
    result_table = "\n".join(result_rows)
    sizes = (
        f"Vocabulary {counts['vocabulary']} words; teacher {counts['teacher_parameters']:,} parameters, "
        f"student {counts['student_parameters']:,}."
    )
    return f"""# Integration run: `tnd train` on the embedded default

`tnd train` with no flags trains the bundle's from-scratch student with the bundle's recommended
config (trials scored by the stage reward model, teacher demonstrations, logit distillation). This
page is written by `{command}`; it runs exactly that configuration, headless, on the CPU.

Machine: {machine}; {now:%Y-%m-%d %H:%M} UTC; {versions}.

## Result

In **{seconds / 60:.1f} minutes** of training ({total_seconds / 60:.1f} min including loading and the first evaluation;
budget: 10 min), {config["steps"]} PPO steps of {config["batch_size"]} prompts:

{result_table}

![learning curves](integration_curve.png)

## The bundle it ran on

`{info["size"]}` bundle, version {info["version"]}, built in **{info["build_seconds"]:.0f} s** ({stage_s}).
{sizes}

| figure | value |
|---|---:|
| teacher grammaticality (sampled sentences) | {m["teacher_grammaticality"]:.3f} |
| stage reward model, held-out Pearson correlation with log2(step) | {m["reward_stage_pearson"]:.3f} |
| grammar reward model, held-out pair accuracy | {m["reward_grammar_accuracy"]:.3f} |
| student grammaticality before training | {m["student_grammaticality"]:.3f} |

## Every evaluation

{table(evaluations + [teacher])}
Raw numbers: `integration_curve.json`. The test `tests/test_integration.py` asserts the same
directions on the tiny bundle with a small budget.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", default=str(REPO / "docs"), help="Where the PNG and the JSON of the curve go.")
    parser.add_argument(
        "--run-dir", default=str(REPO / "outputs" / "integration"), help="The training run's output_dir."
    )
    args = parser.parse_args()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    load = os.getloadavg()[0]
    evaluations, info, seconds = run(Path(args.run_dir))
    total = time.perf_counter() - began
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores, load average {load:.1f} at the start"
    command = "python scripts/integration_run.py" + (f" --out-dir {args.out_dir}" if out != REPO / "docs" else "")
    plot(evaluations, out / "integration_curve.png")
    (out / "integration_curve.json").write_text(
        json.dumps(
            {
                "evaluations": evaluations,
                "run_seconds": seconds,
                "total_seconds": total,
                "bundle": info,
                "machine": machine,
                "command": command,
            },
            indent=1,
        )
    )
    (out / "INTEGRATION.md").write_text(report(evaluations, info, seconds, total, machine, command))
    print(table(evaluations))
    print(f"run time {seconds / 60:.1f} min ({total / 60:.1f} min in all); report in {out / 'INTEGRATION.md'}")


if __name__ == "__main__":
    main()
