"""Learning efficiency on the embedded baby language: TnD against its ablations, at one token budget.

Every variant trains a from-scratch student of the bundle's student shape (fresh weights per seed)
with `CustomPPOTrainer` on the bundle's recommended config; only the fields that define the variant
differ. The interactive variants follow the paper's schedule, 3 CLM steps on the corpus then 1
interactive step; as in the paper, they run without a KL penalty.

  clm      CLM only: plain causal-LM steps on the corpus.
  trials   PPO on the student's own trials, scored by the stage reward model.
  demos    CLM on teacher demonstrations: the CLM stream holds one teacher demo (prompt + the
           teacher's continuation, sampled with the run's generation settings) per 3 corpus texts.
  tnd      TnD: PPO on trials and the teacher's demos for the same prompts (the paper's method).
  tnd_kd   TnD plus logit distillation from the teacher (ours; distill_coef from the bundle's config).

Every run stops when the student has trained on the same number of tokens (`--budget`): tokens that
carry a loss, so CLM text minus its first token, and PPO response tokens (trials and demos), counted
once per batch whatever the number of PPO epochs. Evaluations (bundle held-out text and prompts:
grammaticality, words acquired, perplexity, teacher-to-student KL) run at even token intervals and
are excluded from the wall-clock axis.

Equal tuning: each variant gets the same learning-rate search (the grid in `--lr-grid`, seed 0, a
fraction of the budget, best final words acquired), then `--seeds` full runs at its chosen rate.

Thresholds are fixed before any run, relative to the models themselves: the point halfway (and 80%
of the way) from the random-init student to the teacher on each metric (for perplexity, on the log
scale; the teacher's own KL is 0).

  python -m benchmarks.learning                                   # ~35 min on 2 CPU cores; writes docs/
  python -m benchmarks.learning --quick --out-dir /tmp/l          # the smoke test (tiny bundle)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from benchmarks.common import (
    DOCS,
    command_line,
    machine,
    machine_line,
    quiet_libraries,
    set_threads,
    table,
    write_report,
)

VARIANTS: dict[str, dict[str, Any]] = {
    "clm": {"clm_per_step": 1, "ppo_per_step": 0, "use_teacher_demos": False, "distill_coef": 0.0},
    "trials": {"clm_per_step": 3, "ppo_per_step": 1, "use_teacher_demos": False, "distill_coef": 0.0},
    "demos": {"clm_per_step": 1, "ppo_per_step": 0, "use_teacher_demos": False, "distill_coef": 0.0},
    "tnd": {"clm_per_step": 3, "ppo_per_step": 1, "use_teacher_demos": True, "distill_coef": 0.0},
    "tnd_kd": {"clm_per_step": 3, "ppo_per_step": 1, "use_teacher_demos": True},
}
LABELS = {
    "clm": "CLM only",
    "trials": "PPO on trials only",
    "demos": "demos only (CLM on demos)",
    "tnd": "TnD (trials + demos)",
    "tnd_kd": "TnD + logit distillation",
}
# As in the paper: no KL penalty in any variant (the teacher still serves as the reference for the KL
# statistic). Runs end at a token budget, not a step count, so the learning rate stays constant.
COMMON = {
    "init_kl_coef": 0.0,
    "adap_kl_ctrl": False,
    "save_steps": 0,
    "eval_steps": 0,
    "logging_steps": 1,
    "patience": 0,
    "scheduler_name": "constant",
}
METRICS = {
    "eval/grammaticality": ("grammaticality", "up"),
    "eval/words_acquired": ("words acquired", "up"),
    "eval/perplexity": ("held-out perplexity", "down"),
    "eval/teacher_student_kl": ("teacher-to-student KL (nats/token)", "down"),
}
LEVELS = (0.5, 0.8)
DEMOS_PER_CORPUS_TEXT = 1 / 3


# ---------------------------------------------------------------------- setting up
class Setup:
    """The bundle, its tokenizer, teacher, reward model, prompts, corpus and evaluator, loaded once."""

    def __init__(self, size: str, eval_samples: int):
        from tnd_core.bundle import ensure_bundle
        from tnd_core.config import CustomPPOConfig
        from tnd_core.data.prompts import load_prompts
        from tnd_core.evaluation import bundle_evaluator
        from tnd_core.models import load_reward_model, load_teacher
        from tnd_core.sources import resolve_sources

        os.environ["TND_BUNDLE_SIZE"] = size
        self.size = size
        self.paths = ensure_bundle(size)
        self.base = CustomPPOConfig.load(self.paths.config)
        sources = resolve_sources(self.base)
        self.teacher = load_teacher(sources.teacher.model, sources.teacher.tokenizer)
        self.tokenizer = self.teacher.tokenizer
        self.reward = load_reward_model(sources.reward_model.model, sources.reward_model.tokenizer)
        self.prompts = load_prompts(sources.prompts, sources.prompt_column)
        self.corpus = load_prompts(str(self.paths.corpus), "text")
        self.evaluator = bundle_evaluator(self.paths, num_samples=eval_samples)

    def config(self, variant: str, seed: int, lr: float, output_dir: str) -> Any:
        return self.base.replace(
            **{
                **COMMON,
                **VARIANTS[variant],
                "seed": seed,
                "learning_rate": lr,
                "output_dir": output_dir,
                "steps": 10**7,
            }
        )

    def fresh_student(self, seed: int) -> Any:
        """The bundle's student architecture with new random weights (and value head) for `seed`."""
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        from tnd_core.models import StudentModel

        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(self.paths.student))
        return StudentModel(model, self.tokenizer)

    def target_tokens(self, texts: list[str], max_length: int) -> float:
        """Mean tokens carrying a CLM loss per text (all but the first), as the trainer reads them.

        Each text gets EOS appended and is truncated to `max_length`.
        """
        eos = self.tokenizer.eos_token or ""
        ids = self.tokenizer([t + eos for t in texts], truncation=True, max_length=max_length)["input_ids"]
        return statistics.fmean(max(len(x) - 1, 0) for x in ids)

    def demo_stream(self, n_texts: int, seed: int) -> list[str]:
        """Corpus texts with one teacher demonstration per 3 of them, `n_texts` in all."""
        import random

        from tnd_core.evaluation import sample_texts

        c = self.base
        n_demos = max(1, round(n_texts * DEMOS_PER_CORPUS_TEXT / (1 + DEMOS_PER_CORPUS_TEXT)))
        rng = random.Random(seed)
        prompts = [rng.choice(self.prompts) for _ in range(n_demos)]
        demos = sample_texts(
            self.teacher,
            prompts,
            self.tokenizer,
            n=n_demos,
            max_new_tokens=c.max_new_tokens,
            temperature=c.temperature,
            top_k=c.top_k,
            top_p=c.top_p,
            batch_size=256,
            seed=seed,
        )
        return rng.sample(self.corpus, min(len(self.corpus), n_texts - n_demos)) + demos


def reference_points(setup: Setup, seeds: list[int]) -> tuple[dict[str, dict[str, float]], dict[int, dict[str, float]]]:
    """Each metric for the random-init students (mean over seeds) and for the teacher; and per seed at init."""
    inits = {s: setup.evaluator(setup.fresh_student(s), setup.teacher) for s in seeds}
    teacher = setup.evaluator(setup.teacher, setup.teacher)
    ref = {m: {"init": statistics.fmean(i[m] for i in inits.values()), "teacher": teacher[m]} for m in METRICS}
    return ref, {s: {m: i[m] for m in METRICS} for s, i in inits.items()}


def thresholds(ref: dict[str, dict[str, float]]) -> dict[str, dict[float, float]]:
    """The value `level` of the way from the random student to the teacher (perplexity on the log scale)."""
    out = {}
    for m, r in ref.items():
        if m == "eval/perplexity":
            out[m] = {
                lv: math.exp(math.log(r["init"]) + lv * (math.log(r["teacher"]) - math.log(r["init"]))) for lv in LEVELS
            }
        else:
            out[m] = {lv: r["init"] + lv * (r["teacher"] - r["init"]) for lv in LEVELS}
    return out


# ---------------------------------------------------------------------- one run
def run(
    setup: Setup,
    variant: str,
    seed: int,
    lr: float,
    budget: int,
    evals: int,
    start: dict[str, float],
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Train one variant until `budget` tokens; the curve of every metric against tokens and training seconds,
    from `start` (the metrics of the seed's untrained student)."""
    from tnd_core import CustomPPOTrainer
    from tnd_core.events import StepEvent, TrainingControl

    out = tempfile.mkdtemp(prefix=f"tnd-learning-{variant}-")
    config = setup.config(variant, seed, lr, out)
    max_length = config.max_prompt_length + config.max_new_tokens
    clm_texts = setup.corpus
    if variant == "demos":
        clm_texts = setup.demo_stream(
            int(budget / setup.target_tokens(setup.corpus[:2000], max_length) * 1.1) + 1, seed
        )
    clm_tokens = config.batch_size * setup.target_tokens(clm_texts, max_length)
    rows = config.batch_size * (2 if config.use_teacher_demos else 1)
    student = setup.fresh_student(seed)
    control = TrainingControl()
    state = {"tokens": 0.0, "eval_s": 0.0, "next_eval": budget / evals}
    curve: list[dict[str, float]] = [{"tokens": 0.0, "train_s": 0.0, **start}]

    def evaluate(train_s: float) -> None:
        t0 = time.perf_counter()
        metrics = setup.evaluator(student, setup.teacher)
        state["eval_s"] += time.perf_counter() - t0
        curve.append({"tokens": state["tokens"], "train_s": train_s, **{m: metrics[m] for m in METRICS}})

    def on_event(event: Any) -> None:
        if not isinstance(event, StepEvent):
            return
        state["tokens"] += clm_tokens if "clm/loss" in event.stats else rows * event.stats["tokens/response_len_mean"]
        train_s = event.elapsed_s - state["eval_s"]
        if state["tokens"] >= state["next_eval"] or state["tokens"] >= budget:
            evaluate(train_s)
            state["next_eval"] += budget / evals
        if state["tokens"] >= budget:
            control.request_stop()

    reward = setup.reward if config.ppo_per_step > 0 else None
    trainer = CustomPPOTrainer(
        setup.teacher,
        student,
        reward,
        config,
        setup.prompts,
        clm_dataset=clm_texts,
        callbacks=[on_event],
        control=control,
    )
    try:
        result = trainer.train()
    finally:
        shutil.rmtree(out, ignore_errors=True)
    log(
        f"{variant} seed {seed} lr {lr:g}: {result['step']} steps, {state['tokens']:.0f} tokens, "
        f"{curve[-1]['train_s']:.0f} s training; words acquired {curve[-1]['eval/words_acquired']:.0f}, "
        f"grammaticality {curve[-1]['eval/grammaticality']:.2f}"
    )
    return {"variant": variant, "seed": seed, "lr": lr, "steps": result["step"], "curve": curve}


# ---------------------------------------------------------------------- analysis
def crossing(
    curve: list[dict[str, float]], metric: str, threshold: float, direction: str, x: str = "tokens"
) -> float | None:
    """First x at which the metric reaches the threshold, linearly interpolated between evaluations."""

    def reached(v: float) -> bool:
        return v >= threshold if direction == "up" else v <= threshold

    for prev, cur in zip(curve, curve[1:]):
        if reached(cur[metric]):
            if reached(prev[metric]):
                return prev[x]
            frac = (threshold - prev[metric]) / (cur[metric] - prev[metric])
            return prev[x] + frac * (cur[x] - prev[x])
    return curve[0][x] if curve and reached(curve[0][metric]) else None


def tokens_to_thresholds(
    runs: list[dict[str, Any]], th: dict[str, dict[float, float]], x: str = "tokens"
) -> dict[str, dict[str, dict[str, Any]]]:
    """Per variant, metric and level: the median over seeds of the x needed, or None if any seed missed it."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for variant in VARIANTS:
        vr = [r for r in runs if r["variant"] == variant]
        if not vr:
            continue
        out[variant] = {}
        for m, (_, direction) in METRICS.items():
            for lv in LEVELS:
                xs = [crossing(r["curve"], m, th[m][lv], direction, x) for r in vr]
                reached = [v for v in xs if v is not None]
                out[variant][f"{m}@{lv}"] = {
                    "median": statistics.median(xs) if len(reached) == len(xs) else None,
                    "reached": f"{len(reached)}/{len(xs)}",
                    "each": xs,
                }
    return out


def plot(
    runs: list[dict[str, Any]], th: dict[str, dict[float, float]], ref: dict[str, dict[str, float]], path: Path
) -> None:
    """Mean curve over seeds (band: min-max) of each metric, against tokens (top) and training seconds (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(2, len(METRICS), figsize=(5 * len(METRICS), 8.5))
    colors = dict(zip(VARIANTS, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for row, x in enumerate(("tokens", "train_s")):
        for col, (m, (label, _)) in enumerate(METRICS.items()):
            ax = axes[row][col]
            for variant in VARIANTS:
                vr = [r for r in runs if r["variant"] == variant]
                if not vr:
                    continue
                top = min(r["curve"][-1][x] for r in vr)
                grid = np.linspace(0, top, 50)
                ys = np.array([np.interp(grid, [p[x] for p in r["curve"]], [p[m] for p in r["curve"]]) for r in vr])
                ax.plot(grid, ys.mean(0), color=colors[variant], label=LABELS[variant])
                ax.fill_between(grid, ys.min(0), ys.max(0), color=colors[variant], alpha=0.15)
            ax.axhline(ref[m]["teacher"], color="black", lw=0.8, ls=":", label="teacher")
            for lv in LEVELS:
                ax.axhline(th[m][lv], color="grey", lw=0.6, ls="--")
            if m == "eval/perplexity":
                ax.set_yscale("log")
            ax.set_title(label)
            ax.set_xlabel("student tokens trained on" if x == "tokens" else "training seconds (evaluation excluded)")
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render(data: dict[str, Any]) -> str:
    ref, th, ttt, tts = data["reference"], data["thresholds"], data["tokens_to_threshold"], data["seconds_to_threshold"]

    def fmt(cell: dict[str, Any], unit: str = "") -> str:
        return f"{cell['median']:,.0f}{unit}" if cell["median"] is not None else f"not reached ({cell['reached']})"

    header = ["variant", "lr (chosen)"] + [f"{METRICS[m][0]} @{int(lv * 100)}%" for m in METRICS for lv in LEVELS]
    rows = [
        [LABELS[v], f"{data['chosen_lr'][v]:g}"] + [fmt(ttt[v][f"{m}@{lv}"]) for m in METRICS for lv in LEVELS]
        for v in ttt
    ]
    rows_s = [
        [LABELS[v], f"{data['chosen_lr'][v]:g}"] + [fmt(tts[v][f"{m}@{lv}"], " s") for m in METRICS for lv in LEVELS]
        for v in tts
    ]
    th_rows = [[METRICS[m][0], ref[m]["init"], ref[m]["teacher"]] + [th[m][lv] for lv in LEVELS] for m in METRICS]
    final_rows = []
    for v in VARIANTS:
        vr = [r for r in data["runs"] if r["variant"] == v]
        if vr:
            final_rows.append(
                [LABELS[v]]
                + [statistics.fmean(r["curve"][-1][m] for r in vr) for m in METRICS]
                + [statistics.fmean(r["curve"][-1]["train_s"] for r in vr)]
            )
    search_rows = [
        [LABELS[s["variant"]], f"{s['lr']:g}", s["curve"][-1]["eval/words_acquired"], s["curve"][-1]["eval/perplexity"]]
        for s in data["search"]
    ]
    lines = [
        f"Machine: {machine_line(data['machine'])}.",
        "",
        f"Command: `{data['command']}`",
        "",
        f"Bundle `{data['bundle_size']}`; student {data['student_params']:,} parameters, "
        f"teacher {data['teacher_params']:,}. "
        f"Budget: **{data['budget']:,} tokens** per run (tokens carrying a loss), {len(data['seeds'])} seeds, "
        f"{data['evals']} evaluations per run. "
        f"Learning-rate search: grid {data['lr_grid']} on seed {data['seeds'][0]} with "
        f"{data['search_fraction']:.0%} of the budget, the same for every variant, best final words acquired.",
        "",
        f"**Headline:** {data['headline']}",
        "",
        "![learning curves](learning_curves.png)",
        "",
        "Tokens needed to reach each threshold "
        '(median over seeds; "not reached" when any seed missed it within the budget):',
        "",
        table(header, rows),
        "",
        "Training seconds needed (evaluation time excluded; one torch thread, and the load of a shared machine varies "
        "between runs, so read these as rough; the token counts above do not depend on load):",
        "",
        table(header, rows_s),
        "",
        "Thresholds (fixed before the runs: the way from a random-init student to the teacher):",
        "",
        table(["metric", "random init", "teacher"] + [f"{int(lv * 100)}%" for lv in LEVELS], th_rows),
        "",
        "At the end of the budget (mean over seeds):",
        "",
        table(["variant"] + [METRICS[m][0] for m in METRICS] + ["training s"], final_rows),
        "",
        "Learning-rate search (final values of the shortened runs):",
        "",
        table(["variant", "lr", "words acquired", "perplexity"], search_rows),
    ]
    return "\n".join(lines)


def headline(ttt: dict[str, Any], runs: list[dict[str, Any]]) -> str:
    """Tokens each variant needs to acquire half the teacher's words, whether TnD beats its ablations (the
    paper's claim), its factor over CLM only, and who leads each metric at the end of the budget."""
    key = "eval/words_acquired@0.5"
    need = {v: ttt[v][key]["median"] for v in ttt}
    listing = "; ".join(
        f"{LABELS[v]} {n:,.0f}" if n is not None else f"{LABELS[v]} not reached" for v, n in need.items()
    )
    parts = [f"Tokens to acquire half as many words as the teacher (median of seeds): {listing}."]
    ablations = [v for v in ("clm", "trials", "demos") if v in need]
    if "tnd" in need and ablations:
        wins = [v for v in ablations if need["tnd"] is not None and (need[v] is None or need["tnd"] < need[v])]
        verdict = "reproduced" if len(wins) == len(ablations) else "not reproduced"
        parts.append(
            f"The paper's finding, TnD acquiring words faster than its ablations, is **{verdict}** here "
            f"(TnD is faster than {len(wins)} of {len(ablations)})."
        )
    for v in ("tnd", "tnd_kd"):
        a, b = need.get("clm"), need.get(v)
        if v in need and "clm" in need:
            if a is not None and b is not None:
                factor = f"**{a / b:.2f}x** fewer tokens than" if b <= a else f"**{b / a:.2f}x** more tokens than"
                parts.append(f"{LABELS[v]} gets there with {factor} CLM only.")
            else:
                parts.append(f"{LABELS[v]} vs CLM only: no factor, one of them did not get there within the budget.")
    final = {
        v: {m: statistics.fmean(r["curve"][-1][m] for r in runs if r["variant"] == v) for m in METRICS}
        for v in VARIANTS
        if any(r["variant"] == v for r in runs)
    }
    leads = []
    for m, (label, direction) in METRICS.items():
        best = (max if direction == "up" else min)(final, key=lambda v: final[v][m])
        leads.append(
            f"{label} {LABELS[best]} ({final[best][m]:.3g}"
            + (f" vs CLM only {final['clm'][m]:.3g})" if "clm" in final and best != "clm" else ")")
        )
    parts.append("Leaders at the end of the budget (mean of seeds): " + "; ".join(leads) + ".")
    return " ".join(parts)


def publish(data: dict[str, Any], out: Path) -> Path:
    """Thresholds crossed, headline, curves PNG and the report, from the measured runs in `data`."""
    th = data["thresholds"] = {
        m: {float(lv): v for lv, v in levels.items()} for m, levels in data["thresholds"].items()
    }
    runs = data["runs"]
    data["tokens_to_threshold"] = ttt = tokens_to_thresholds(runs, th)
    data["seconds_to_threshold"] = tokens_to_thresholds(runs, th, "train_s")
    data["headline"] = headline(ttt, runs)
    out.mkdir(parents=True, exist_ok=True)
    plot(runs, th, data["reference"], out / "learning_curves.png")
    return write_report(out, "learning", render(data), data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=int, default=60_000, help="student tokens per run")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--evals", type=int, default=10, help="evaluations per run")
    parser.add_argument(
        "--lr-grid",
        default="3e-4,1e-3,3e-3",
        help="learning rates every variant tries (comma-separated); one value skips the search",
    )
    parser.add_argument("--search-fraction", type=float, default=0.34, help="budget fraction of each search run")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--bundle-size", default="default", choices=("tiny", "default"))
    parser.add_argument("--eval-samples", type=int, default=64, help="generations per evaluation (grammaticality)")
    parser.add_argument("--quick", action="store_true", help="tiny budget for the smoke test")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's choice); 1 is steadier on a shared machine",
    )
    parser.add_argument(
        "--from-json", help="redo the tables and the figure from a bench_learning.json, without training"
    )
    parser.add_argument("--out-dir", default=str(DOCS))
    args = parser.parse_args(argv)
    if args.from_json:
        print(f"wrote {publish(json.loads(Path(args.from_json).read_text()), Path(args.out_dir))}")
        return 0
    if args.quick:
        args.budget, args.seeds, args.evals, args.lr_grid, args.bundle_size, args.eval_samples = (
            1500,
            1,
            2,
            "1e-3",
            "tiny",
            8,
        )
    quiet_libraries()
    set_threads(1 if args.quick and args.threads is None else args.threads)

    def log(msg: str) -> None:
        print(msg, flush=True)

    info = machine()
    variants = [v for v in args.variants.split(",") if v]
    grid = [float(x) for x in args.lr_grid.split(",")]
    seeds = list(range(args.seeds))
    setup = Setup(args.bundle_size, args.eval_samples)
    ref, at_init = reference_points(setup, seeds)
    th = thresholds(ref)

    search, chosen = [], {}
    for v in variants:
        if len(grid) == 1:
            chosen[v] = grid[0]
            continue
        trials = [
            run(
                setup,
                v,
                seeds[0],
                lr,
                int(args.budget * args.search_fraction),
                max(2, args.evals // 3),
                at_init[seeds[0]],
                log,
            )
            for lr in grid
        ]
        search += trials
        best = max(trials, key=lambda r: (r["curve"][-1]["eval/words_acquired"], -r["curve"][-1]["eval/perplexity"]))
        chosen[v] = best["lr"]
    runs = [run(setup, v, s, chosen[v], args.budget, args.evals, at_init[s], log) for s in seeds for v in variants]
    data = {
        "machine": info,
        "command": command_line("benchmarks.learning", argv),
        "bundle_size": args.bundle_size,
        "budget": args.budget,
        "seeds": seeds,
        "evals": args.evals,
        "lr_grid": grid,
        "search_fraction": args.search_fraction,
        "student_params": sum(p.numel() for p in setup.fresh_student(0).pretrained_model.parameters()),
        "teacher_params": sum(p.numel() for p in setup.teacher.parameters()),
        "reference": ref,
        "thresholds": th,
        "chosen_lr": chosen,
        "search": search,
        "runs": runs,
    }
    log(f"wrote {publish(data, Path(args.out_dir))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
