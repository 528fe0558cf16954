"""The GPU path end to end: a GPT-2-small-sized student learns from a GPT-2-medium-sized teacher, scored by a
BERT-base-sized reward model, in bf16, full fine-tuning and then LoRA, and across two GPUs when there are two.

Models are random-init from configs (nothing is downloaded) over a word-level tokenizer built here with
GPT-2's 50,257 tokens (BERT's 30,522 for the reward model), so embeddings and logits have the real sizes. The
teacher is initialised with a wide weight spread so that its next-token distributions are peaked and the
student has something to learn. Each run trains `--steps` PPO steps of `--batch` prompts with `--new-tokens`
new tokens (trials and teacher demos, distillation on) and checks:

- every step's loss is finite;
- the teacher-student KL falls (mean of the last third of the steps below the mean of the first third);

and reports samples/s and tokens/s (the trainer's step statistics, median over the steps after the first),
the share of the step spent generating (time/rollout over time/step), and the peak memory
(`torch.cuda.max_memory_allocated`, or the process's peak RSS on the CPU) against the memory plan
(`tnd_core.models.memory_plan.plan_memory`).

  python -m benchmarks.gpu_check                                    # on CUDA: writes docs/ (about 6 min on one GPU)
  python -m benchmarks.gpu_check --device cpu --tiny --out-dir /tmp/g   # tiny sizes on the CPU: the smoke test

With two or more GPUs it then runs the full fine-tuning case again under
`accelerate launch --multi_gpu --num_processes 2` (each process its own batch of prompts).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import DOCS, command_line, machine, machine_line, quiet_libraries, table, write_report

MODULE = "benchmarks.gpu_check"


@dataclass(frozen=True)
class Sizes:
    """Model shapes and the work of one run."""

    vocab: int
    reward_vocab: int
    student: dict[str, int]
    teacher: dict[str, int]
    reward: dict[str, int]
    batch: int
    mini_batch: int
    new_tokens: int
    prompt_words: int
    steps: int
    learning_rate: float
    lora_learning_rate: float


FULL = Sizes(
    vocab=50257,
    reward_vocab=30522,
    student={"n_layer": 12, "n_embd": 768, "n_head": 12},  # GPT-2 small
    teacher={"n_layer": 24, "n_embd": 1024, "n_head": 16},  # GPT-2 medium
    reward={"num_hidden_layers": 12, "hidden_size": 768, "num_attention_heads": 12, "intermediate_size": 3072},
    batch=64,
    mini_batch=16,
    new_tokens=64,
    prompt_words=8,
    steps=30,
    learning_rate=1e-4,
    lora_learning_rate=1e-3,
)
TINY = Sizes(
    vocab=512,
    reward_vocab=256,
    student={"n_layer": 2, "n_embd": 64, "n_head": 2},
    teacher={"n_layer": 2, "n_embd": 64, "n_head": 2},
    reward={"num_hidden_layers": 1, "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64},
    batch=8,
    mini_batch=4,
    new_tokens=8,
    prompt_words=4,
    steps=9,
    learning_rate=1e-2,
    lora_learning_rate=3e-2,
)
# Adapters on every linear layer (peft's GPT-2 default, c_attn only, barely moves a random-init student's
# output distribution in a few steps).
LORA_TARGETS = "all-linear"
# A peaked teacher: GPT-2's default spread (0.02) makes near-uniform next-token distributions.
TEACHER_INIT_RANGE = 0.3


# ---------------------------------------------------------------------- models
def word_tokenizer(n_words: int, specials: list[str]) -> Any:
    """A word-level tokenizer over w0 .. w{n}: `specials` first, then words up to `n_words` tokens in all."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(specials)}
    vocab.update({f"w{i}": len(specials) + i for i in range(n_words - len(specials))})
    word_level = Tokenizer(models.WordLevel(vocab, unk_token="<unk>" if "<unk>" in vocab else "[UNK]"))
    word_level.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    word_level.decoder = decoders.WordPiece(prefix="##")
    return PreTrainedTokenizerFast(tokenizer_object=word_level)


def build_models(sizes: Sizes) -> dict[str, Any]:
    """Tokenizers, transformers configs and random-init models of the three roles (on the CPU, float32)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, GPT2Config, GPT2LMHeadModel

    tokenizer = word_tokenizer(sizes.vocab, ["<pad>", "<eos>", "<unk>"])
    tokenizer.add_special_tokens({"pad_token": "<pad>", "eos_token": "<eos>", "unk_token": "<unk>"})
    reward_tokenizer = word_tokenizer(sizes.reward_vocab, ["[PAD]", "[UNK]", "[CLS]", "[SEP]"])
    reward_tokenizer.add_special_tokens({"pad_token": "[PAD]", "unk_token": "[UNK]"})
    ids = {"bos_token_id": 1, "eos_token_id": 1, "pad_token_id": 0}
    positions = 4 * (sizes.prompt_words + sizes.new_tokens)
    student_config = GPT2Config(vocab_size=sizes.vocab, n_positions=positions, **ids, **sizes.student)
    teacher_config = GPT2Config(
        vocab_size=sizes.vocab, n_positions=positions, initializer_range=TEACHER_INIT_RANGE, **ids, **sizes.teacher
    )
    reward_config = BertConfig(vocab_size=sizes.reward_vocab, num_labels=1, pad_token_id=0, **sizes.reward)
    torch.manual_seed(0)
    return {
        "tokenizer": tokenizer,
        "reward_tokenizer": reward_tokenizer,
        "configs": (student_config, teacher_config, reward_config),
        "student": GPT2LMHeadModel(student_config),
        "teacher": GPT2LMHeadModel(teacher_config),
        "reward": BertForSequenceClassification(reward_config),
    }


def prompts(sizes: Sizes, n: int, seed: int = 0) -> list[str]:
    """`n` prompts of `prompt_words` words drawn from the first thousand words of the vocabulary."""
    import random

    rng = random.Random(seed)
    words = min(1000, sizes.vocab - 3)
    return [" ".join(f"w{rng.randrange(words)}" for _ in range(sizes.prompt_words)) for _ in range(n)]


# ---------------------------------------------------------------------- one run
@dataclass
class RunResult:
    """What one run measured."""

    name: str
    processes: int
    steps: int
    samples_per_s: float
    tokens_per_s: float
    generation_share: float
    teacher_student_kl_first: float
    teacher_student_kl_last: float
    losses_finite: bool
    peak_memory_gb: float
    memory_measure: str
    planned_memory_gb: float | None

    @property
    def kl_falls(self) -> bool:
        return self.teacher_student_kl_last < self.teacher_student_kl_first


def run_once(name: str, sizes: Sizes, device: str, use_lora: bool, work_dir: Path) -> RunResult:
    """Train one run and measure it (on every process; the caller keeps the main process's result)."""
    import torch

    from tnd_core import CustomPPOConfig, CustomPPOTrainer
    from tnd_core import stats as S
    from tnd_core.events import StepEvent
    from tnd_core.models import RewardModel, StudentModel, TeacherModel
    from tnd_core.models.memory_plan import plan_memory

    models = build_models(sizes)
    cuda = device == "cuda"
    config = CustomPPOConfig(
        batch_size=sizes.batch,
        mini_batch_size=sizes.mini_batch,
        max_new_tokens=sizes.new_tokens,
        max_prompt_length=2 * sizes.prompt_words,
        steps=sizes.steps,
        learning_rate=sizes.lora_learning_rate if use_lora else sizes.learning_rate,
        use_lora=use_lora,
        lora_target_modules=LORA_TARGETS,
        mixed_precision="bf16" if cuda else "no",
        frozen_dtype="bfloat16" if cuda else "float32",
        output_dir=str(work_dir / name),
        save_steps=0,
        logging_steps=1,
        seed=0,
    )
    student_config, teacher_config, reward_config = models["configs"]
    plan = plan_memory(config, student_config, teacher_config, reward_config, device=torch.device(device))
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    steps: list[dict[str, float]] = []
    trainer = CustomPPOTrainer(
        teacher=TeacherModel(models["teacher"], models["tokenizer"]),
        student=StudentModel(models["student"], models["tokenizer"]),
        reward_model=RewardModel(models["reward"], models["reward_tokenizer"]),
        config=config,
        train_dataset=prompts(sizes, 16 * sizes.batch),
        callbacks=[lambda event: steps.append(event.stats) if isinstance(event, StepEvent) else None],
    )
    trainer.train()
    if cuda:
        peak, measure = torch.cuda.max_memory_allocated() / 2**30, "torch.cuda.max_memory_allocated"
    else:
        peak, measure = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "peak RSS of the process"
    measured = steps[1:] or steps  # the first step warms up kernels and allocator
    third = max(1, len(steps) // 3)
    kls = [s[S.TEACHER_STUDENT_KL] for s in steps]
    return RunResult(
        name=name,
        processes=trainer.accelerator.num_processes,
        steps=len(steps),
        samples_per_s=statistics.median(s[S.SAMPLES_PER_S] for s in measured) * trainer.accelerator.num_processes,
        tokens_per_s=statistics.median(s[S.TOKENS_PER_S] for s in measured) * trainer.accelerator.num_processes,
        generation_share=sum(s[S.TIME_ROLLOUT] for s in measured) / sum(s[S.TIME_STEP] for s in measured),
        teacher_student_kl_first=statistics.fmean(kls[:third]),
        teacher_student_kl_last=statistics.fmean(kls[-third:]),
        losses_finite=all(math.isfinite(s[S.LOSS_TOTAL]) for s in steps),
        peak_memory_gb=peak,
        memory_measure=measure,
        planned_memory_gb=plan.total_gb,
    )


def check(result: RunResult) -> list[str]:
    """What is wrong with a run: non-finite losses or a teacher-student KL that did not fall."""
    problems = []
    if not result.losses_finite:
        problems.append(f"{result.name}: a loss was NaN or infinite")
    if not result.kl_falls:
        problems.append(
            f"{result.name}: the teacher-student KL did not fall "
            f"({result.teacher_student_kl_first:.4f} -> {result.teacher_student_kl_last:.4f})"
        )
    return problems


def two_process_run(sizes_name: str, work_dir: Path, timeout_s: int) -> RunResult:
    """The full fine-tuning run again under `accelerate launch` on two GPUs; the main process's result."""
    result_file = work_dir / "two_processes.json"
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--mixed_precision",
        "bf16",
        "-m",
        MODULE,
        "--worker",
        "--sizes",
        sizes_name,
        "--work-dir",
        str(work_dir),
        "--result",
        str(result_file),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0:
        raise RuntimeError(f"accelerate launch failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return RunResult(**json.loads(result_file.read_text()))


# ---------------------------------------------------------------------- report
def report(results: list[RunResult], sizes_name: str, env: dict[str, Any], argv: list[str], notes: list[str]) -> str:
    rows = [
        [
            r.name,
            r.processes,
            r.steps,
            r.samples_per_s,
            r.tokens_per_s,
            f"{100 * r.generation_share:.0f}%",
            f"{r.teacher_student_kl_first:.3g} -> {r.teacher_student_kl_last:.3g}",
            "yes" if r.losses_finite else "NO",
            r.peak_memory_gb,
            r.planned_memory_gb if r.planned_memory_gb is not None else "n/a",
        ]
        for r in results
    ]
    header = [
        "run",
        "processes",
        "steps",
        "samples/s",
        "tokens/s",
        "generating",
        "teacher-student KL (first third -> last third)",
        "losses finite",
        "peak memory GB",
        "memory plan GB",
    ]
    memory = results[0].memory_measure if results else ""
    if memory.startswith("torch.cuda"):
        overhead = "The plan's total includes about 0.6 GB of CUDA context, which torch's allocator does not count."
    else:
        overhead = "The process's RSS includes Python and its libraries (about 0.5 GB), which the plan does not count."
    lines = [
        f"Machine: {machine_line(env)}",
        "",
        f"Command: `{command_line(MODULE, argv)}` ({sizes_name} sizes)",
        "",
        table(header, rows),
        "",
        f"Peak memory: {memory}, per process. {overhead}",
    ]
    lines += [f"- {note}" for note in notes]
    return "\n".join(lines)


# ---------------------------------------------------------------------- entry points
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny models and a few steps (the smoke test)")
    parser.add_argument("--out-dir", default=str(DOCS), help="where bench_gpu.md/.json go (default: docs/)")
    parser.add_argument("--two-process-timeout", type=int, default=900)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", choices=("full", "tiny"), help=argparse.SUPPRESS)
    parser.add_argument("--work-dir", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def worker(args: argparse.Namespace) -> int:
    """One process of the two-process run (started by accelerate launch)."""
    quiet_libraries()
    sizes = FULL if args.sizes == "full" else TINY
    result = run_once("full fine-tuning, 2 GPUs (DDP)", sizes, "cuda", False, Path(args.work_dir))
    if int(os.environ.get("RANK", "0")) == 0:
        Path(args.result).write_text(json.dumps(asdict(result)))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    import torch

    quiet_libraries()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here: run on a GPU machine, or pass --device cpu --tiny", file=sys.stderr)
        return 2
    if args.tiny and Path(args.out_dir).resolve() == DOCS.resolve():
        print("--tiny results do not go into docs/: pass --out-dir", file=sys.stderr)
        return 2
    if args.device == "cpu":
        os.environ["ACCELERATE_USE_CPU"] = "true"  # keep accelerate off any GPU the machine may have
    sizes_name = "tiny" if args.tiny else "full"
    sizes = TINY if args.tiny else FULL
    env = machine()
    results, notes = [], []
    with tempfile.TemporaryDirectory(prefix="tnd-gpu-check-") as tmp:
        work = Path(tmp)
        results.append(run_once("full fine-tuning", sizes, args.device, False, work))
        results.append(run_once("LoRA", sizes, args.device, True, work))
        if args.device == "cuda" and torch.cuda.device_count() >= 2:
            results.append(two_process_run(sizes_name, work, args.two_process_timeout))
        else:
            notes.append("2-process run: not run (it needs two GPUs; this machine has fewer).")
    problems = [problem for r in results for problem in check(r)]
    notes += [f"FAILED: {problem}" for problem in problems]
    markdown = report(results, sizes_name, env, sys.argv[1:] if argv is None else argv, notes)
    data = {"machine": env, "sizes": asdict(sizes), "runs": [asdict(r) for r in results], "problems": problems}
    write_report(args.out_dir, "gpu", markdown, data)
    print(markdown)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
