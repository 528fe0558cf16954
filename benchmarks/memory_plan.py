"""The memory plan against measured peaks, and LoRA against full fine-tuning at equal work.

Each configuration runs in a fresh process: it builds random-init GPT-2 models from configs (a student,
a larger teacher, a reward classifier) and a word-level tokenizer, trains a few PPO steps with
distillation and demos, and reports its peak memory: on the CPU the peak resident set (ru_maxrss) less
the resident set after the imports, on CUDA `torch.cuda.max_memory_allocated`. The plan
(`tnd_core.models.memory_plan.plan_memory`) is made from the same configs and options, without the CUDA
context row on a GPU (max_memory_allocated does not count it). LoRA and full fine-tuning of the same
student run the same steps on the same prompts; their samples/s is batch * steps / seconds after one
warm-up step.

    python -m benchmarks.memory_plan --threads 1   # writes docs/bench_memory_plan.md/.json
    python -m benchmarks.memory_plan --quick --out-dir DIR   # tiny sizes (the smoke test)
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

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

# name -> options on top of the shared ones
CONFIGURATIONS = {
    "full": {},
    "lora": {"use_lora": True},
    "gradient_checkpointing": {"gradient_checkpointing": True},
    "bf16_frozen": {"frozen_dtype": "bfloat16"},
    "lora_checkpointing_bf16": {"use_lora": True, "gradient_checkpointing": True, "frozen_dtype": "bfloat16"},
}
SIZES = {
    # student, teacher and reward widths / layers, vocabulary, batch, mini-batch, prompt and response tokens
    "default": dict(
        student=(512, 6), teacher=(768, 8), reward=(256, 2), vocab=16000, batch=32, mini=16, prompt=32, new=64
    ),
    "quick": dict(student=(64, 2), teacher=(96, 2), reward=(32, 1), vocab=500, batch=8, mini=4, prompt=8, new=8),
}


def _tokenizer(vocab: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {w: i for i, w in enumerate(["<pad>", "<eos>", "<unk>"] + [f"w{i}" for i in range(vocab - 3)])}
    tok = Tokenizer(models.WordLevel(words, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")


def _gpt2(tok: Any, width: int, layers: int, positions: int, classifier: bool = False) -> Any:
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=len(tok),
        n_positions=positions,
        n_embd=width,
        n_layer=layers,
        n_head=max(1, width // 64),
        num_labels=1,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.eos_token_id,
        eos_token_id=tok.eos_token_id,
        **({} if classifier else {"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}),
    )


def _current_rss_mb() -> float:
    import os

    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_point(name: str, size: str, steps: int) -> dict[str, Any]:
    """One configuration in this process: its measured peak, its plan, and its speed."""
    import torch
    from transformers import GPT2ForSequenceClassification, GPT2LMHeadModel

    from tnd_core import CustomPPOTrainer
    from tnd_core.config import CustomPPOConfig
    from tnd_core.models import RewardModel, StudentModel, TeacherModel
    from tnd_core.models.memory_plan import GB, plan_memory

    quiet_libraries()
    s = SIZES[size]
    tok = _tokenizer(s["vocab"])
    positions = s["prompt"] + s["new"] + 8
    configs = {
        "student": _gpt2(tok, *s["student"], positions),
        "teacher": _gpt2(tok, *s["teacher"], positions),
        "reward": _gpt2(tok, *s["reward"], positions, classifier=True),
    }
    out_dir = tempfile.mkdtemp(prefix="tnd-bench-memory-")
    options = dict(
        batch_size=s["batch"],
        mini_batch_size=s["mini"],
        ppo_epochs=1,
        max_prompt_length=s["prompt"],
        max_new_tokens=s["new"],
        steps=steps,
        save_steps=0,
        learning_rate=1e-4,
        kl_reference="initial_student",
        distill_coef=1.0,
        use_teacher_demos=True,
        memory_check="off",
        output_dir=out_dir,
        seed=0,
    )
    config = CustomPPOConfig(**{**options, **CONFIGURATIONS[name]})
    device = "cuda" if torch.cuda.is_available() else "cpu"
    plan = plan_memory(config, configs["student"], configs["teacher"], configs["reward"], device, available_gb=1e6)
    baseline_mb = _current_rss_mb()
    torch.manual_seed(0)
    student = StudentModel(GPT2LMHeadModel(configs["student"]), tok)
    teacher = TeacherModel(GPT2LMHeadModel(configs["teacher"]), tok)
    reward = RewardModel(GPT2ForSequenceClassification(configs["reward"]), tok)
    prompts = [" ".join(f"w{(7 * i + j) % (s['vocab'] - 3)}" for j in range(s["prompt"])) for i in range(64)]
    # the run is one step longer than timed: the first step (allocator warm-up) is left out of samples/s
    config = config.replace(steps=steps + 1)
    trainer = CustomPPOTrainer(teacher, student, reward, config, prompts)
    stamps: list[float] = []
    trainer.add_callback(lambda event: type(event).__name__ == "StepEvent" and stamps.append(time.perf_counter()))
    trainer.train()
    measured_gb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - baseline_mb) / 1024
    planned_gb = plan.total_gb
    if device == "cuda":
        measured_gb = torch.cuda.max_memory_allocated() / GB
        planned_gb -= plan.rows.get("CUDA context", 0.0)
    return {
        "name": name,
        "device": device,
        "options": CONFIGURATIONS[name],
        "measured_gb": measured_gb,
        "planned_gb": planned_gb,
        "error": planned_gb / measured_gb - 1,
        "plan_rows": plan.rows,
        "plan_phases": plan.phases,
        "baseline_rss_mb": baseline_mb,
        "samples_per_s": s["batch"] * steps / (stamps[-1] - stamps[0]) if len(stamps) > 1 else None,
        "trainable_parameters": sum(p.numel() for p in student.parameters() if p.requires_grad),
    }


def render(data: dict[str, Any]) -> str:
    points = data["points"]
    rows = [
        [p["name"], p["measured_gb"], p["planned_gb"], f"{100 * p['error']:+.0f}%", p["samples_per_s"]] for p in points
    ]
    by_name = {p["name"]: p for p in points}
    full, lora = by_name["full"], by_name["lora"]
    s = data["sizes"]
    work = (
        f"student GPT-2 {s['student'][0]}x{s['student'][1]} layers, teacher {s['teacher'][0]}x{s['teacher'][1]}, "
        f"reward classifier {s['reward'][0]}x{s['reward'][1]}, vocabulary {s['vocab']}; batch {s['batch']} prompts "
        f"(+ as many demos), mini-batch {s['mini']}, {s['prompt']} prompt and {s['new']} new tokens, "
        f"{data['steps']} timed steps after one warm-up step"
    )
    worst = max(abs(p["error"]) for p in points)
    return "\n".join(
        [
            "## Memory plan against measured peaks",
            "",
            f"Command: `{data['command']}`  ",
            f"Machine: {machine_line(data['machine'])}  ",
            f"Work: {work}.",
            "",
            table(["configuration", "measured GB", "planned GB", "plan error", "samples/s"], rows),
            "",
            f"Largest plan error: {100 * worst:.0f}% (target: within 30%). Measured on the "
            f"{points[0]['device'].upper()}: "
            + (
                "peak resident set less the resident set after the imports."
                if points[0]["device"] == "cpu"
                else "torch.cuda.max_memory_allocated (the plan without its CUDA context row)."
            ),
            "",
            f"LoRA against full fine-tuning at equal work: peak {lora['measured_gb']:.3f} GB against "
            f"{full['measured_gb']:.3f} GB ({lora['measured_gb'] / full['measured_gb']:.2f}x), "
            f"{lora['samples_per_s'] or 0:.2f} against {full['samples_per_s'] or 0:.2f} samples/s, "
            f"{lora['trainable_parameters']:,} against {full['trainable_parameters']:,} trainable parameters.",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes for the smoke test")
    parser.add_argument("--steps", type=int, default=3, help="timed PPO steps per configuration")
    parser.add_argument("--out-dir", default=str(DOCS))
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (each process inherits them)")
    parser.add_argument("--point", nargs=3, metavar=("NAME", "SIZE", "STEPS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    set_threads(args.threads)
    if args.point:
        name, size, steps = args.point
        print(json.dumps(run_point(name, size, int(steps))))
        return 0
    if args.quick and Path(args.out_dir).resolve() == DOCS.resolve():
        print("--quick numbers are noise at tiny sizes: give --out-dir DIR, not docs/", file=sys.stderr)
        return 2
    size = "quick" if args.quick else "default"
    steps = 1 if args.quick else args.steps
    points = []
    for name in CONFIGURATIONS:
        cmd = [sys.executable, "-m", "benchmarks.memory_plan", "--point", name, size, str(steps)]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
        if proc.returncode:
            raise RuntimeError(f"configuration {name} failed:\n{proc.stderr[-3000:]}")
        point = json.loads(proc.stdout.strip().splitlines()[-1])
        print(
            f"[{name}] measured {point['measured_gb']:.3f} GB, planned {point['planned_gb']:.3f} GB "
            f"({100 * point['error']:+.0f}%)",
            file=sys.stderr,
        )
        points.append(point)
    data = {
        "machine": machine(),
        "command": command_line("benchmarks.memory_plan", argv),
        "sizes": SIZES[size],
        "steps": steps,
        "points": points,
    }
    write_report(args.out_dir, "memory_plan", render(data), data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
