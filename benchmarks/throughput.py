"""Engine throughput: CustomPPOTrainer against TRL 1.x's RLOO, GRPO and Distillation trainers at equal work.

Every trainer gets the same tiny GPT-2 student (teacher, reward model), loaded from the same folder
with `from_pretrained`; the same prompts, all of one token length; the same samples per step; the
same response length (EOS suppressed with `min_new_tokens`, so every response is exactly that long);
the same mini-batch size, gradient accumulation and number of optimisation passes; fp32 everywhere.

A step is one generation batch end to end: sample, score, then every optimizer update on it. For
the TRL trainers that is `steps_per_generation * num_iterations / gradient_accumulation_steps`
optimizer steps, timed from one such boundary to the next by a TrainerCallback, as our StepEvents
time ours; the first step of each run is warm-up and not counted. Runs are interleaved (A B C A B C
...; the order rotates each round) so machine drift hits every trainer alike, and ratios are taken
between runs of the same round.

  python -m benchmarks.throughput                            # ~15 min on 2 CPU cores; writes docs/
  python -m benchmarks.throughput --quick --out-dir /tmp/b   # seconds: the smoke test

On a CUDA machine the same command runs there (accelerate and TRL pick the GPU) and writes
bench_throughput_cuda.* instead.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

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
from tnd_core.bundle import SIZES as BUNDLE_SIZES


def _shape(spec: Any) -> dict[str, int]:
    return {"n_layer": spec.n_layer, "n_embd": spec.n_embd, "n_head": spec.n_head}


# The default bundle's student and teacher shapes (positions widened to fit 64-token responses).
STUDENT = _shape(BUNDLE_SIZES["default"].student)
TEACHER = _shape(BUNDLE_SIZES["default"].teacher)
PROMPT_WORDS = 3
LEARNING_RATE = 1e-5


@dataclass(frozen=True)
class Work:
    """What one step does; identical for every trainer compared."""

    batch_size: int
    mini_batch_size: int
    grad_accum: int
    passes: int
    response_length: int

    @property
    def optimizer_steps(self) -> int:
        return self.passes * self.batch_size // (self.mini_batch_size * self.grad_accum)


@dataclass(frozen=True)
class Models:
    root: str
    student: str
    teacher: str
    reward: str
    prompts: tuple[str, ...]


@dataclass
class Run:
    """One run of one trainer: the measured steps after warm-up."""

    trainer: str
    step_s: list[float]
    response_len: float
    phases: dict[str, float] = field(default_factory=dict)  # our per-phase seconds per step (median)
    compute: dict[str, float] = field(default_factory=dict)  # seconds per step inside model compute, by kind

    @property
    def seconds(self) -> float:
        return sum(self.step_s)


# ---------------------------------------------------------------------- models and prompts
def build_models(root: Path, n_prompts: int = 256) -> Models:
    """Tokenizer of the baby language, random-init GPT-2 student/teacher/reward, saved with save_pretrained."""
    import torch
    from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel

    from tnd_core.data.language import generate_corpus
    from tnd_core.data.tokenizer import build_tokenizer

    torch.manual_seed(0)
    tok = build_tokenizer()
    base = {
        "vocab_size": len(tok),
        "n_positions": 128,
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
    }
    paths = {name: root / name for name in ("student", "teacher", "reward")}
    GPT2LMHeadModel(GPT2Config(**base, **STUDENT)).save_pretrained(paths["student"])
    GPT2LMHeadModel(GPT2Config(**base, **TEACHER)).save_pretrained(paths["teacher"])
    GPT2ForSequenceClassification(GPT2Config(**base, **STUDENT, num_labels=1)).save_pretrained(paths["reward"])
    for p in paths.values():
        tok.save_pretrained(p)
    sentences = [s.split() for s in generate_corpus(20 * n_prompts, seed=0)]
    prompts = [" ".join(w[:PROMPT_WORDS]) for w in sentences if len(w) > PROMPT_WORDS][:n_prompts]
    lengths = {len(ids) for ids in tok(prompts)["input_ids"]}
    if len(lengths) != 1:
        raise RuntimeError(f"prompts must all have one token length for equal work; got {sorted(lengths)}")
    return Models(str(root), *(str(paths[k]) for k in ("student", "teacher", "reward")), tuple(prompts))


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _now() -> float:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter()


# ---------------------------------------------------------------------- model-compute clock
class ComputeClock:
    """Wall time inside model compute, by kind, counting outermost calls only.

    Model compute is HF `generate`, any nn.Module call, autograd backward and optimizer steps. The rest
    of a step (tokenizing, decoding, batching, loss and advantage arithmetic, events, logging) is time
    outside model compute: the overhead a trainer owns.
    """

    KINDS = ("generate", "forward", "backward", "optimizer")

    def __init__(self) -> None:
        self.intervals: list[tuple[float, float, str]] = []
        self._depth = 0
        self._undo: list[Callable[[], None]] = []
        self._opt_start = 0.0

    def _timed(self, fn: Callable, kind: str) -> Callable:
        clock = self

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if clock._depth:
                return fn(*args, **kwargs)
            clock._depth += 1
            start = _now()
            try:
                return fn(*args, **kwargs)
            finally:
                clock.intervals.append((start, _now(), kind))
                clock._depth -= 1

        return timed

    def _patch(self, owner: Any, name: str, kind: str) -> None:
        original = getattr(owner, name)
        setattr(owner, name, self._timed(original, kind))
        self._undo.append(lambda: setattr(owner, name, original))

    def __enter__(self) -> "ComputeClock":
        import torch
        from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook
        from transformers.generation.utils import GenerationMixin

        self._patch(GenerationMixin, "generate", "generate")
        self._patch(torch.nn.Module, "__call__", "forward")
        self._patch(torch.autograd, "backward", "backward")

        def pre(*_: Any) -> None:
            self._depth += 1
            self._opt_start = _now()

        def post(*_: Any) -> None:
            self.intervals.append((self._opt_start, _now(), "optimizer"))
            self._depth -= 1

        for handle in (register_optimizer_step_pre_hook(pre), register_optimizer_step_post_hook(post)):
            self._undo.append(handle.remove)
        return self

    def __exit__(self, *exc: Any) -> None:
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()

    def seconds(self, start: float, end: float) -> dict[str, float]:
        """Seconds of each kind inside the window [start, end]."""
        out = dict.fromkeys(self.KINDS, 0.0)
        for a, b, kind in self.intervals:
            out[kind] += max(0.0, min(b, end) - max(a, start))
        return out


# ---------------------------------------------------------------------- runners
def run_ours(
    models: Models, work: Work, warmup: int, steps: int, distill: bool, seed: int, clock: ComputeClock | None = None
) -> Run:
    """CustomPPOTrainer.train on the tiny models; distillation on means the teacher is the KL reference and KD is on."""
    from tnd_core import CustomPPOConfig, CustomPPOTrainer
    from tnd_core.events import StepEvent
    from tnd_core.models import RewardModel, StudentModel, TeacherModel

    student = StudentModel.from_pretrained(models.student)
    student.pretrained_model.generation_config.min_new_tokens = work.response_length
    teacher = TeacherModel.from_pretrained(models.teacher) if distill else None
    reward = RewardModel.from_pretrained(models.reward)
    out = tempfile.mkdtemp(prefix="tnd-bench-")
    config = CustomPPOConfig(
        steps=warmup + steps,
        batch_size=work.batch_size,
        mini_batch_size=work.mini_batch_size,
        gradient_accumulation_steps=work.grad_accum,
        ppo_epochs=work.passes,
        max_new_tokens=work.response_length,
        learning_rate=LEARNING_RATE,
        distill_coef=1.0 if distill else 0.0,
        use_teacher_demos=False,
        kl_reference="teacher" if distill else "initial_student",
        save_steps=0,
        logging_steps=1,
        output_dir=out,
        seed=seed,
    )
    marks: list[tuple[float, dict[str, float]]] = []

    def on_event(event: Any) -> None:
        if isinstance(event, StepEvent):
            marks.append((_now(), event.stats))

    trainer = CustomPPOTrainer(teacher, student, reward, config, list(models.prompts), callbacks=[on_event])
    start = _now()
    try:
        trainer.train()
    finally:
        shutil.rmtree(out, ignore_errors=True)
    times = [start] + [t for t, _ in marks]
    measured = marks[warmup:]
    step_s = [b - a for a, b in zip(times[warmup:], times[warmup + 1 :])]
    keys = {
        "student generation": "time/rollout",
        "teacher forward": "time/teacher",
        "reward scoring": "time/score",
        "optimisation": "time/optimize",
    }
    phases = {name: sum(s.get(k, 0.0) for _, s in measured) / len(measured) for name, k in keys.items()}
    phases["everything else"] = sum(step_s) / len(step_s) - sum(phases.values())
    name = "CustomPPOTrainer (distillation on)" if distill else "CustomPPOTrainer (distillation off)"
    run = Run(name, step_s, sum(s["tokens/response_len_mean"] for _, s in measured) / len(measured), phases)
    if clock is not None:
        run.compute = {k: v / steps for k, v in clock.seconds(times[warmup], times[-1]).items()}
    return run


def _trl_reward(models: Models) -> Callable[..., list[float]]:
    """TRL reward function scoring prompt + completion with the same reward model ours uses."""
    from tnd_core.models import RewardModel

    reward = RewardModel.from_pretrained(models.reward).to(_device())

    def reward_model(prompts: list[str], completions: list[str], **_: Any) -> list[float]:
        return reward.score_texts([f"{p} {c}" for p, c in zip(prompts, completions)]).tolist()

    return reward_model


def run_trl(
    kind: str, models: Models, work: Work, warmup: int, steps: int, seed: int, clock: ComputeClock | None = None
) -> Run:
    """One TRL 1.x trainer ('rloo', 'grpo' or 'distillation') for warmup + steps generation batches."""
    from datasets import Dataset
    from transformers import AutoTokenizer, PrinterCallback, TrainerCallback

    per_step = work.optimizer_steps
    tok = AutoTokenizer.from_pretrained(models.student)
    tok.padding_side = "left"
    out = tempfile.mkdtemp(prefix="trl-bench-")
    common = dict(
        output_dir=out,
        per_device_train_batch_size=work.mini_batch_size,
        gradient_accumulation_steps=work.grad_accum,
        max_completion_length=work.response_length,
        generation_kwargs={"min_new_tokens": work.response_length},
        learning_rate=LEARNING_RATE,
        lr_scheduler_type="constant",
        bf16=False,
        gradient_checkpointing=False,
        report_to="none",
        save_strategy="no",
        logging_steps=per_step,
        max_steps=(warmup + steps) * per_step,
        disable_tqdm=True,
        seed=seed,
        temperature=1.0,
        dataloader_num_workers=0,
    )
    dataset = Dataset.from_dict({"prompt": list(models.prompts)})
    marks: list[float] = []

    class Boundaries(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **_: Any) -> None:
            marks.append(_now())

        def on_step_end(self, args: Any, state: Any, control: Any, **_: Any) -> None:
            if state.global_step % per_step == 0:
                marks.append(_now())

    if kind == "distillation":
        from trl import DistillationConfig, DistillationTrainer

        if work.passes != 1 or work.grad_accum * work.mini_batch_size != work.batch_size:
            raise ValueError(
                "DistillationTrainer makes one optimizer step per generation batch: "
                "passes=1, grad_accum=batch/mini_batch"
            )
        args = DistillationConfig(**common, beta=0.0)
        trainer = DistillationTrainer(
            model=models.student,
            teacher_model=models.teacher,
            args=args,
            train_dataset=dataset,
            processing_class=tok,
            callbacks=[Boundaries()],
        )
        name = "TRL DistillationTrainer"
    else:
        from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

        config_cls, trainer_cls, name = (
            (RLOOConfig, RLOOTrainer, "TRL RLOOTrainer")
            if kind == "rloo"
            else (GRPOConfig, GRPOTrainer, "TRL GRPOTrainer")
        )
        # beta > 0 keeps a reference model, as our KL penalty does; 2 generations per prompt is the least both allow.
        args = config_cls(
            **common,
            steps_per_generation=work.batch_size // work.mini_batch_size,
            num_generations=2,
            num_iterations=work.passes,
            beta=0.05,
        )
        trainer = trainer_cls(
            model=models.student,
            reward_funcs=_trl_reward(models),
            args=args,
            train_dataset=dataset,
            processing_class=tok,
            callbacks=[Boundaries()],
        )
    trainer.remove_callback(PrinterCallback)  # it prints every log dict to stdout
    try:
        trainer.train()
    finally:
        shutil.rmtree(out, ignore_errors=True)
    step_s = [b - a for a, b in zip(marks[warmup:], marks[warmup + 1 :])]
    lengths = [h["completions/mean_length"] for h in trainer.state.log_history if "completions/mean_length" in h]
    run = Run(name, step_s, lengths[-1] if lengths else float("nan"))
    if clock is not None:
        run.compute = {k: v / steps for k, v in clock.seconds(marks[warmup], marks[-1]).items()}
    return run


# ---------------------------------------------------------------------- comparisons
@dataclass(frozen=True)
class Contender:
    key: str
    run: Callable[..., Run]


def contenders(models: Models, scenario: str) -> list[Contender]:
    if scenario == "rl":
        return [
            Contender("ours_off", lambda w, wu, n, s, c=None: run_ours(models, w, wu, n, False, s, c)),
            Contender("rloo", lambda w, wu, n, s, c=None: run_trl("rloo", models, w, wu, n, s, c)),
            Contender("grpo", lambda w, wu, n, s, c=None: run_trl("grpo", models, w, wu, n, s, c)),
            Contender("ours_on", lambda w, wu, n, s, c=None: run_ours(models, w, wu, n, True, s, c)),
        ]
    return [
        Contender("ours_on", lambda w, wu, n, s, c=None: run_ours(models, w, wu, n, True, s, c)),
        Contender("distillation", lambda w, wu, n, s, c=None: run_trl("distillation", models, w, wu, n, s, c)),
    ]


def compare(
    models: Models, scenario: str, work: Work, reps: int, warmup: int, steps: int, log: Callable[[str], None]
) -> dict[str, Any]:
    """Interleaved rounds; the model-compute clock runs in every round on CPU (it costs microseconds per
    call there), and in one extra round on a GPU (it synchronises the device, which would slow the timed rounds)."""
    entrants = contenders(models, scenario)
    on_gpu = _device() == "cuda"
    rounds: list[dict[str, Run]] = []
    instrumented: dict[str, list[Run]] = {c.key: [] for c in entrants}
    for rep in range(reps + (1 if on_gpu else 0)):
        clocked = not on_gpu or rep == reps
        runs = {}
        for c in entrants[rep % len(entrants) :] + entrants[: rep % len(entrants)]:  # rotate who goes first
            with ComputeClock() if clocked else contextlib.nullcontext() as clock:
                runs[c.key] = c.run(work, warmup, steps, rep, clock)
            if clocked:
                instrumented[c.key].append(runs[c.key])
            log(
                f"[{scenario}] round {rep + 1} {runs[c.key].trainer}: "
                f"{work.batch_size * steps / runs[c.key].seconds:.2f} samples/s"
            )
        if rep < reps:
            rounds.append(runs)
    ours_key = "ours_off" if scenario == "rl" else "ours_on"
    result: dict[str, Any] = {"work": asdict(work), "trainers": {}}
    for c in entrants:
        runs = [r[c.key] for r in rounds]
        rates = [work.batch_size * len(r.step_s) / r.seconds for r in runs]
        entry = {
            "name": runs[0].trainer,
            "samples_per_s": summary(rates),
            "step_s": summary([s for r in runs for s in r.step_s]),
            "response_len": runs[0].response_len,
            "phases_s": {k: sum(r.phases[k] for r in runs) / len(runs) for k in runs[0].phases}
            if runs[0].phases
            else {},
            # means, not medians: the parts of a mean step add up to it
            "compute_s": {k: statistics.fmean(r.compute[k] for r in instrumented[c.key]) for k in ComputeClock.KINDS},
            "instrumented_step_s": statistics.fmean(r.seconds / len(r.step_s) for r in instrumented[c.key]),
        }
        if c.key != ours_key:
            paired = [
                (work.batch_size * len(r[ours_key].step_s) / r[ours_key].seconds)
                / (work.batch_size * len(r[c.key].step_s) / r[c.key].seconds)
                for r in rounds
            ]
            entry["ours_over_this"] = summary(paired)
        result["trainers"][c.key] = entry
    return result


# ------------------------------------------------------- scaling (one subprocess per point for its own peak RSS)
def scaling_point(models_root: str, batch: int, length: int, passes: int, steps: int) -> dict[str, Any]:
    """Our step (distillation on) at one batch size and response length; run in a fresh process."""
    import torch

    from tnd_core import CustomPPOTrainer  # noqa: F401  (imports count in the baseline, not in the step)

    models = _load_models(models_root)
    rss_loaded = _current_rss_mb()
    work = Work(batch, max(1, batch // 4), 1, passes, length)
    run = run_ours(models, work, 1, steps, True, 0)
    point = {
        "batch_size": batch,
        "response_length": length,
        "step_s": summary(run.step_s),
        "samples_per_s": batch * len(run.step_s) / run.seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_after_imports_mb": rss_loaded,
    }
    if torch.cuda.is_available():
        point["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return point


def _current_rss_mb() -> float:
    """Resident memory now (the peak, ru_maxrss, also counts transient import-time peaks)."""
    import os

    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _load_models(root: str) -> Models:
    data = json.loads((Path(root) / "models.json").read_text())
    return Models(**{**data, "prompts": tuple(data["prompts"])})


def scaling(
    models: Models,
    batches: list[int],
    lengths: list[int],
    base_batch: int,
    base_length: int,
    passes: int,
    steps: int,
    log: Callable[[str], None],
    in_process: bool = False,
) -> list[dict[str, Any]]:
    """Our step time and peak memory as the batch, then the response length, doubles (in_process: smoke test only)."""
    points = [(b, base_length) for b in batches] + [(base_batch, l) for l in lengths if l != base_length]
    out = []
    for batch, length in points:
        if in_process:
            out.append(scaling_point(models.root, batch, length, passes, steps))
            continue
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.throughput",
            "--point",
            models.root,
            str(batch),
            str(length),
            str(passes),
            str(steps),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
        if proc.returncode:
            raise RuntimeError(f"scaling point batch={batch} length={length} failed:\n{proc.stderr[-2000:]}")
        point = json.loads(proc.stdout.strip().splitlines()[-1])
        log(
            f"[scaling] batch {batch} length {length}: {point['step_s']['median']:.3f} s/step, "
            f"peak RSS {point['peak_rss_mb']:.0f} MB"
        )
        out.append(point)
    return out


# ---------------------------------------------------------------------- report
def _compare_md(title: str, res: dict[str, Any], ours_key: str) -> str:
    w = res["work"]
    lines = [
        f"### {title}",
        "",
        f"Work per step: {w['batch_size']} samples, {w['response_length']}-token responses, "
        f"mini-batches of {w['mini_batch_size']}, "
        f"gradient accumulation {w['grad_accum']}, {w['passes']} optimisation pass(es) "
        f"= {w['passes'] * w['batch_size'] // (w['mini_batch_size'] * w['grad_accum'])} optimizer steps per step.",
        "",
    ]
    rows = []
    for key, t in res["trainers"].items():
        s = t["samples_per_s"]
        ratio = t.get("ours_over_this")
        ratio_txt = (
            f"{ratio['median']:.2f}x ({ratio['min']:.2f}-{ratio['max']:.2f})"
            if ratio
            else ("-" if key == ours_key else "")
        )
        rows.append([t["name"], s["median"], s["min"], s["max"], s["n"], t["response_len"], ratio_txt])
    lines.append(
        table(
            [
                "trainer",
                "samples/s median",
                "min",
                "max",
                "runs",
                "mean response tokens",
                "ours / this (median of paired rounds, min-max)",
            ],
            rows,
        )
    )
    lines += ["", "Where the time goes (ComputeClock, mean over clocked runs; seconds per step):", ""]
    rows = []
    for t in res["trainers"].values():
        c, total = t["compute_s"], t["instrumented_step_s"]
        inside = sum(c.values())
        rows.append(
            [
                t["name"],
                total,
                c["generate"],
                c["forward"],
                c["backward"],
                c["optimizer"],
                total - inside,
                f"{100 * (total - inside) / total:.1f}%",
            ]
        )
    lines.append(
        table(
            [
                "trainer",
                "step s",
                "generate",
                "forward",
                "backward",
                "optimizer",
                "outside model compute",
                "outside share",
            ],
            rows,
        )
    )
    return "\n".join(lines)


def _phases_md(res: dict[str, dict[str, Any]]) -> str:
    rows = []
    for label, t in res.items():
        p = t["phases_s"]
        total = sum(p.values())
        rows.append([label] + [f"{p[k]:.3f} ({100 * p[k] / total:.0f}%)" for k in p] + [total])
    keys = list(next(iter(res.values()))["phases_s"])
    return table(["our step"] + keys + ["step s"], rows)


def render(data: dict[str, Any]) -> str:
    m = data["machine"]
    rl, kd = data["rl"], data["distill"]
    ours = rl["trainers"]["ours_off"]
    peers = {k: v for k, v in rl["trainers"].items() if k in ("rloo", "grpo")}
    fastest = max(peers, key=lambda k: peers[k]["samples_per_s"]["median"])
    kd_ratio = kd["trainers"]["distillation"]["ours_over_this"]["median"]
    on = rl["trainers"]["ours_on"]
    overhead = {
        k: 100 * (t["instrumented_step_s"] - sum(t["compute_s"].values())) / t["instrumented_step_s"]
        for k, t in (("ours_off", ours), ("ours_on", on))
    }
    head_ratio = peers[fastest]["ours_over_this"]["median"]
    lines = [
        f"Machine: {machine_line(m)}.",
        "",
        f"Command: `{data['command']}`",
        "",
        f"Models: the default bundle's shapes, GPT-2 student {STUDENT}, teacher {TEACHER}; "
        "reward model = student-sized GPT-2 classifier; baby-language "
        f"word-level tokenizer ({data['vocab_size']} tokens); random init, saved and loaded with `from_pretrained`. "
        f"Prompts: {PROMPT_WORDS} words ({data['prompt_tokens']} tokens with BOS). fp32. "
        f"{data['reps']} interleaved rounds, "
        f"{data['warmup']} warm-up step + {data['steps']} timed steps per run.",
        "",
        f"**Headline:** ours (distillation off) runs at **{head_ratio:.2f}x** the samples/s of the fastest TRL peer "
        f"({peers[fastest]['name']}) at equal work (target >= 1.3x: {'met' if head_ratio >= 1.3 else 'not met'}); "
        f"with distillation on, **{kd_ratio:.2f}x** TRL's DistillationTrainer "
        "(ours also scores with the reward model and trains the value head). "
        f"Time outside model compute: {overhead['ours_off']:.1f}% of our step with distillation off, "
        f"{overhead['ours_on']:.1f}% with it on "
        f"(target < 10%: {'met' if max(overhead.values()) < 10 else 'not met'}).",
        "",
        _compare_md("Distillation off: CustomPPOTrainer against TRL's on-policy RL trainers", rl, "ours_off"),
        "",
        "TRL peers: `steps_per_generation = batch / mini_batch`, `num_iterations` = passes, "
        "`num_generations=2` (the least they accept; our batch holds the same number of prompt rows), "
        "`beta=0.05` (a reference model, as our KL penalty keeps one), "
        "reward = the same reward model through a reward function. Ours with distillation off uses "
        "`kl_reference=initial_student`; with it on, the teacher is the reference "
        "and its one forward pass serves both the KL penalty and the distillation loss.",
        "",
        _compare_md("Distillation on: CustomPPOTrainer against TRL's DistillationTrainer", kd, "ours_on"),
        "",
        "DistillationTrainer (on-policy generalised JSD, `beta=0` = forward KL, as ours) "
        "makes exactly one optimizer step per generation batch, "
        "so both run one pass with gradient accumulation over the whole batch. It has no reward "
        "model and no value head: ours does more work per step here.",
        "",
        "### Phase breakdown of our step",
        "",
        "Seconds per step from the step statistics (`time/rollout`, `time/teacher`, `time/score`, `time/optimize`); "
        '"everything else" is wall time between StepEvents not inside a phase '
        "(events, metrics file, stream bookkeeping).",
        "",
        _phases_md(
            {
                "distillation off (RL work)": ours,
                "distillation on (RL work)": on,
                "distillation on (1 pass)": kd["trainers"]["ours_on"],
            }
        ),
    ]
    if data.get("scaling"):
        rows = [
            [
                p["batch_size"],
                p["response_length"],
                p["step_s"]["median"],
                p["samples_per_s"],
                p["peak_rss_mb"],
                p["peak_rss_mb"] - p["rss_after_imports_mb"],
            ]
            + ([p["peak_gpu_mb"]] if "peak_gpu_mb" in p else [])
            for p in data["scaling"]
        ]
        header = [
            "batch",
            "response tokens",
            "step s (median)",
            "samples/s",
            "peak RSS MB",
            "peak above RSS after imports MB",
        ] + (["peak GPU MB"] if "peak_gpu_mb" in data["scaling"][0] else [])
        lines += [
            "",
            "### Scaling of our step (distillation on)",
            "",
            "Each point in a fresh process (peak RSS is per process); "
            f"mini-batch = batch / 4, {data['rl']['work']['passes']} passes.",
            "",
            table(header, rows),
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=9, help="interleaved rounds")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps at the start of each run")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per run")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--mini-batch-size", type=int, default=4)
    parser.add_argument("--response-length", type=int, default=16)
    parser.add_argument(
        "--passes", type=int, default=4, help="optimisation passes (ppo_epochs / num_iterations) in the RL comparison"
    )
    parser.add_argument("--scaling-batches", default="8,16,32,64,128")
    parser.add_argument("--scaling-lengths", default="8,16,32,64")
    parser.add_argument("--scaling-steps", type=int, default=4)
    parser.add_argument("--no-scaling", action="store_true")
    parser.add_argument("--quick", action="store_true", help="tiny budget for the smoke test")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's choice); 1 is steadier on a shared machine",
    )
    parser.add_argument("--out-dir", default=str(DOCS))
    parser.add_argument(
        "--point", nargs=5, metavar=("MODELS", "BATCH", "LENGTH", "PASSES", "STEPS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    quiet_libraries()
    set_threads(1 if args.quick and args.threads is None else args.threads)

    if args.point:
        root, batch, length, passes, steps = args.point
        print(json.dumps(scaling_point(root, int(batch), int(length), int(passes), int(steps))))
        return 0
    if args.quick:
        args.reps, args.steps, args.batch_size, args.mini_batch_size, args.response_length, args.passes = (
            1,
            1,
            4,
            2,
            4,
            1,
        )
        args.warmup, args.scaling_batches, args.scaling_lengths, args.scaling_steps = 0, "4", "4", 1

    def log(msg: str) -> None:
        print(msg, flush=True)

    info = machine()
    with tempfile.TemporaryDirectory(prefix="tnd-throughput-") as tmp:
        models = build_models(Path(tmp))
        (Path(tmp) / "models.json").write_text(json.dumps(asdict(models)))
        from tnd_core.data.tokenizer import build_tokenizer

        tok = build_tokenizer()
        b, m, L = args.batch_size, args.mini_batch_size, args.response_length
        data: dict[str, Any] = {
            "machine": info,
            "command": command_line("benchmarks.throughput", argv),
            "reps": args.reps,
            "warmup": args.warmup,
            "steps": args.steps,
            "vocab_size": len(tok),
            "prompt_tokens": len(tok(models.prompts[0])["input_ids"]),
            "student": STUDENT,
            "teacher": TEACHER,
        }
        data["rl"] = compare(models, "rl", Work(b, m, 1, args.passes, L), args.reps, args.warmup, args.steps, log)
        data["distill"] = compare(models, "distill", Work(b, m, b // m, 1, L), args.reps, args.warmup, args.steps, log)
        if not args.no_scaling:
            batches = [int(x) for x in args.scaling_batches.split(",")]
            lengths = [int(x) for x in args.scaling_lengths.split(",")]
            data["scaling"] = scaling(
                models, batches, lengths, b, L, args.passes, args.scaling_steps, log, in_process=args.quick
            )
    name = "throughput_cuda" if info["gpu"] else "throughput"
    path = write_report(args.out_dir, name, render(data), data)
    log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
