"""Seconds per CustomPPOTrainer step on this machine, and the toy-task reward curve.

    python scripts/engine_step_time.py [--threads 1] [--steps 6]

Models are tiny GPT-2s built from configs (tests/tnd_tiny.py); nothing is downloaded.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tnd_tiny import TargetWordReward, make_lm, make_tokenizer, prompts  # noqa: E402

from tnd_core import CustomPPOConfig  # noqa: E402
from tnd_core.events import StepEvent  # noqa: E402
from tnd_core.models import StudentModel, TeacherModel  # noqa: E402
from tnd_core.trainers import CustomPPOTrainer  # noqa: E402


def run(tok, n_embd: int, steps: int, out: str, **options) -> list[dict[str, float]]:
    stats: list[dict[str, float]] = []
    config = CustomPPOConfig(steps=steps, output_dir=out, save_steps=0, **options)
    teacher = (
        TeacherModel(make_lm(tok, seed=5, n_embd=n_embd, initializer_range=0.3), tok)
        if options.get("kl_reference") != "initial_student"
        else None
    )
    trainer = CustomPPOTrainer(
        teacher=teacher,
        student=StudentModel(make_lm(tok, seed=1, n_embd=n_embd), tok),
        reward_model=TargetWordReward("w15", config.max_new_tokens),
        config=config,
        train_dataset=prompts(256),
        callbacks=[lambda e: isinstance(e, StepEvent) and stats.append(e.stats)],
    )
    trainer.train()
    return stats


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tok = make_tokenizer()
    print(f"torch threads {args.threads}; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")

    curve = run(
        tok,
        32,
        30,
        "/tmp/tnd-toy",
        batch_size=16,
        mini_batch_size=8,
        ppo_epochs=2,
        learning_rate=3e-3,
        max_new_tokens=8,
        kl_reference="initial_student",
        init_kl_coef=0.01,
        adap_kl_ctrl=False,
        distill_coef=0.0,
        use_teacher_demos=False,
    )
    rewards = [s["env/reward_mean"] for s in curve]
    print(
        f"toy task (reward = share of w15), 30 steps, batch 16: "
        f"mean reward first 5 steps {np.mean(rewards[:5]):.3f}, last 5 {np.mean(rewards[-5:]):.3f}"
    )
    print("  curve:", " ".join(f"{r:.2f}" for r in rewards))

    base = dict(batch_size=64, mini_batch_size=16, ppo_epochs=4, max_new_tokens=16, learning_rate=1e-4)
    modes = {
        "classic PPO (no teacher)": dict(kl_reference="initial_student", distill_coef=0.0, use_teacher_demos=False),
        "TnD (demos + distillation, teacher as KL reference)": dict(),
    }
    for n_embd in (32, 128):
        for name, extra in modes.items():
            stats = run(tok, n_embd, args.steps, "/tmp/tnd-bench", **base, **extra)[1:]  # step 1 warms up
            phases = {
                k: np.mean([s[k] for s in stats])
                for k in ("time/step", "time/rollout", "time/score", "time/teacher", "time/optimize")
            }
            print(
                f"n_embd {n_embd:3d}, 2 layers, batch 64, mini 16, ppo_epochs 4, max_new_tokens 16, {name}: "
                f"{phases['time/step']:.2f} s/step "
                f"(rollout {phases['time/rollout']:.2f}, score {phases['time/score']:.2f}, "
                f"teacher {phases['time/teacher']:.2f}, optimize {phases['time/optimize']:.2f})"
            )


if __name__ == "__main__":
    main()
