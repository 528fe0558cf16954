"""Our step at two commits, side by side: did a change slow the engine down?

Each round runs CustomPPOTrainer from the working tree and from a git worktree of `--base` (default
HEAD~1) in fresh processes, in alternating order, on the same models, prompts and work as
`benchmarks.throughput`'s RL comparison (distillation off and on). The ratio is taken between the
two runs of one round, so machine drift hits both alike.

  python -m benchmarks.engine_ab --base a4c6644 --threads 1          # writes docs/bench_engine_ab.*
  python -m benchmarks.engine_ab --base HEAD --quick --out-dir /tmp/b
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import DOCS, command_line, machine, machine_line, set_threads, summary, table, write_report

REPO = Path(__file__).resolve().parent.parent

# Runs inside the tree under test: only the API both sides share (config, trainer, wrappers, StepEvent).
WORKER = r"""
import json, sys, tempfile, time
import torch
torch.set_num_threads(int(sys.argv[6]))
import tnd_core
from tnd_core import CustomPPOConfig, CustomPPOTrainer
from tnd_core.events import StepEvent
from tnd_core.models import RewardModel, StudentModel, TeacherModel

models, distill = sys.argv[1], sys.argv[2] == "1"
steps, seed, work = int(sys.argv[3]), int(sys.argv[4]), json.loads(sys.argv[5])
prompts = json.loads(open(f"{models}/prompts.json").read())
student = StudentModel.from_pretrained(f"{models}/student")
student.pretrained_model.generation_config.min_new_tokens = work["response_length"]
teacher = TeacherModel.from_pretrained(f"{models}/teacher") if distill else None
config = CustomPPOConfig(
    steps=1 + steps, batch_size=work["batch_size"], mini_batch_size=work["mini_batch_size"], ppo_epochs=work["passes"],
    max_new_tokens=work["response_length"], learning_rate=1e-5, distill_coef=1.0 if distill else 0.0,
    use_teacher_demos=False, kl_reference="teacher" if distill else "initial_student", save_steps=0,
    output_dir=tempfile.mkdtemp(prefix="tnd-ab-"), seed=seed,
)
marks = []
trainer = CustomPPOTrainer(teacher, student, RewardModel.from_pretrained(f"{models}/reward"), config, prompts,
                           callbacks=[lambda e: isinstance(e, StepEvent) and marks.append(time.perf_counter())])
trainer.train()
print(json.dumps({"module": tnd_core.__file__, "step_s": [b - a for a, b in zip(marks[:-1], marks[1:])]}))
"""


def _worktree(base: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix="tnd-base-")) / "tree"
    subprocess.run(["git", "worktree", "add", "--detach", str(path), base], cwd=REPO, check=True, capture_output=True)
    return path


def _run(
    tree: Path, models: str, distill: bool, steps: int, seed: int, work: dict[str, int], threads: int
) -> list[float]:
    env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1"}
    args = [models, "1" if distill else "0", str(steps), str(seed), json.dumps(work), str(threads)]
    proc = subprocess.run([sys.executable, "-c", WORKER, *args], cwd=tree, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"run in {tree} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if not result["module"].startswith(str(tree)):
        raise RuntimeError(f"the run in {tree} imported tnd_core from {result['module']}")
    return result["step_s"]


def main(argv: list[str] | None = None) -> int:
    """Interleaved rounds of both trees; writes bench_engine_ab.md/json to --out-dir."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="HEAD~1", help="commit to compare the working tree against")
    parser.add_argument("--reps", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per run (after one warm-up step)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="tiny budget for the smoke test")
    parser.add_argument("--out-dir", default=str(DOCS))
    args = parser.parse_args(argv)
    set_threads(args.threads)  # the machine line reports the workers' thread count
    from benchmarks.throughput import build_models

    work = {"batch_size": 16, "mini_batch_size": 4, "passes": 4, "response_length": 16}
    if args.quick:
        args.reps, args.steps, work = 1, 1, {"batch_size": 4, "mini_batch_size": 2, "passes": 1, "response_length": 4}
    scratch = Path(tempfile.mkdtemp(prefix="tnd-ab-models-"))
    base_tree = _worktree(args.base)
    try:
        models = build_models(scratch)
        (scratch / "prompts.json").write_text(json.dumps(list(models.prompts)))
        trees = {"working tree": REPO, f"base {args.base}": base_tree}
        data: dict[str, Any] = {
            "machine": machine(),
            "command": command_line("benchmarks.engine_ab", argv),
            "work": work,
        }
        for distill in (False, True):
            rounds = []
            for rep in range(args.reps):
                order = list(trees.items()) if rep % 2 == 0 else list(trees.items())[::-1]
                rates = {}
                for name, tree in order:
                    step_s = _run(tree, str(scratch), distill, args.steps, rep, work, args.threads)
                    rates[name] = work["batch_size"] * len(step_s) / sum(step_s)
                    print(f"distill={distill} round {rep + 1} {name}: {rates[name]:.2f} samples/s", flush=True)
                rounds.append(rates)
            names = list(trees)
            data["distillation on" if distill else "distillation off"] = {
                "samples_per_s": {n: summary([r[n] for r in rounds]) for n in names},
                "working_over_base": summary([r[names[0]] / r[names[1]] for r in rounds]),
            }
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(base_tree)], cwd=REPO, capture_output=True)
        shutil.rmtree(scratch, ignore_errors=True)
    rows = []
    for scenario in ("distillation off", "distillation on"):
        res = data[scenario]
        rates = list(res["samples_per_s"].values())
        ratio = res["working_over_base"]
        rows.append(
            [
                scenario,
                f"{rates[0]['median']:.2f}",
                f"{rates[1]['median']:.2f}",
                f"**{ratio['median']:.3f}** ({ratio['min']:.3f}-{ratio['max']:.3f})",
            ]
        )
    markdown = "\n".join(
        [
            "# Engine A/B: the working tree against an earlier commit",
            "",
            f"`{data['command']}`",
            "",
            machine_line(data["machine"]),
            "",
            f"Work per step: {work}. Median samples/s over {args.reps} interleaved rounds; "
            "the ratio is paired per round.",
            "",
            table(["scenario", "working tree", f"base {args.base}", "working / base (range)"], rows),
            "",
        ]
    )
    write_report(args.out_dir, "engine_ab", markdown, data)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
