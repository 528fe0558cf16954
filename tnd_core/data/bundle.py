"""The embedded default: baby-language data, tokenizer, teacher, reward models and a from-scratch student.

`ensure_bundle()` builds the bundle once under the cache root and reuses it; `build_bundle()` is what
`tnd bundle` runs. The build writes into a temporary folder and renames it into place at the end, so
a half-built bundle is never used; `bundle.json` records the recipe version (a new version triggers
a rebuild), the sizes, the build time and the measured quality of each part.

Recipe (sizes in `SIZES`):
1. corpus, held-out evaluation sentences (none of them in the corpus) and prompts (1-3 word prefixes);
2. a word-level tokenizer;
3. the teacher: a small GPT-2 pretrained with causal LM on the corpus (transformers' Trainer),
   keeping checkpoints at steps 2^k; its grammaticality is measured on sampled sentences;
4. the stage reward model (the paper's reward): a small BERT regressor trained to predict log2(step)
   of the teacher checkpoint that wrote a text;
5. the grammar reward model: pairwise (TRL RewardTrainer) on (grammatical, perturbed) pairs,
   initialised from the teacher (as reward models usually start from a pretrained LM) with two
   fresh layers on top;
6. the student: a GPT-2 no larger than the teacher, randomly initialised with a fixed seed;
7. `config.yaml`: CustomPPOConfig values recommended for this bundle.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import random
import shutil
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from tnd_core.errors import ConfigError, TndError

logger = logging.getLogger(__name__)

BUNDLE_VERSION = 4
MANIFEST = "bundle.json"
ProgressFn = Callable[[float, str], None]

_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_ACCESS_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST}


class BundleError(TndError):
    """The bundle could not be built or read (disk full, folder not writable, unknown size)."""


@dataclass(frozen=True)
class ModelSpec:
    """A GPT-2 shape."""

    n_embd: int
    n_layer: int
    n_head: int
    n_positions: int = 64


@dataclass(frozen=True)
class BundleSpec:
    """Everything that differs between bundle sizes."""

    corpus_sentences: int
    eval_sentences: int
    prompts: int
    teacher: ModelSpec
    student: ModelSpec
    teacher_steps: int
    teacher_batch_size: int
    teacher_learning_rate: float
    grammar_samples: int
    stage_samples_per_checkpoint: int
    stage_epochs: float
    grammar_pairs: int
    grammar_epochs: float
    grammar_learning_rate: float
    required_mib: int
    ppo_overrides: dict[str, Any] = field(default_factory=dict)


_RECOMMENDED_PPO: dict[str, Any] = {
    "teacher_name_or_path": "bundle",
    "student_name_or_path": "bundle",
    "reward_model_name_or_path": "bundle",
    "dataset_name_or_path": "bundle",
    "prompt_column": "prompt",
    "steps": 250,
    "batch_size": 32,
    "mini_batch_size": 8,
    "ppo_epochs": 2,
    "learning_rate": 1e-3,
    # annealed: at a constant 1e-3 the held-out KL swings between 0.6 and 1.0 from one
    # evaluation to the next over the last half of the run; with cosine it settles (0.33 and
    # 0.72 at the end of two runs that differed only in thread count, 0.85 and 0.33 at constant)
    "scheduler_name": "cosine",
    "init_kl_coef": 0.05,
    "kl_reference": "teacher",
    "use_score_scaling": True,
    "use_score_norm": True,
    "score_clip": 3.0,
    "distill_coef": 1.0,
    "use_teacher_demos": True,
    "demo_score": "reward_model",
    "clm_per_step": 0,
    "ppo_per_step": 1,
    "max_new_tokens": 16,
    "temperature": 1.0,
    "eval_steps": 10,
    "save_steps": 0,
    "output_dir": "outputs/tnd-bundle",
}

SIZES: dict[str, BundleSpec] = {
    "tiny": BundleSpec(
        corpus_sentences=12_000,
        eval_sentences=200,
        prompts=256,
        teacher=ModelSpec(n_embd=128, n_layer=2, n_head=4),
        student=ModelSpec(n_embd=64, n_layer=2, n_head=4),
        teacher_steps=400,
        teacher_batch_size=64,
        teacher_learning_rate=3e-3,
        grammar_samples=200,
        stage_samples_per_checkpoint=64,
        stage_epochs=8,
        grammar_pairs=3000,
        grammar_epochs=1,
        grammar_learning_rate=5e-4,
        required_mib=50,
        ppo_overrides={"steps": 20, "batch_size": 16, "mini_batch_size": 8, "eval_steps": 5},
    ),
    "default": BundleSpec(
        corpus_sentences=40_000,
        eval_sentences=500,
        prompts=1000,
        teacher=ModelSpec(n_embd=128, n_layer=2, n_head=4),
        student=ModelSpec(n_embd=64, n_layer=2, n_head=4),
        teacher_steps=1600,
        teacher_batch_size=64,
        teacher_learning_rate=3e-3,
        grammar_samples=500,
        stage_samples_per_checkpoint=128,
        stage_epochs=8,
        grammar_pairs=40_000,
        grammar_epochs=1,
        grammar_learning_rate=3e-4,
        required_mib=150,
    ),
}

GRAMMAR_EXTRA_LAYERS = 2
SEEDS = {"corpus": 0, "eval": 1, "prompts": 2, "prefix": 3, "pairs": 4, "perturb": 5, "teacher": 6, "student": 7, "stage": 8, "grammar": 9, "sample": 10}


@dataclass(frozen=True)
class BundlePaths:
    """Where each part of a built bundle lives."""

    root: Path
    tokenizer: Path
    teacher: Path
    student: Path
    reward_stage: Path
    reward_grammar: Path
    prompts: Path
    eval: Path
    corpus: Path
    config: Path

    @classmethod
    def under(cls, root: Path) -> "BundlePaths":
        return cls(
            root=root,
            tokenizer=root / "tokenizer",
            teacher=root / "teacher",
            student=root / "student",
            reward_stage=root / "reward_stage",
            reward_grammar=root / "reward_grammar",
            prompts=root / "prompts.jsonl",
            eval=root / "eval.jsonl",
            corpus=root / "corpus.txt",
            config=root / "config.yaml",
        )

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST

    @property
    def teacher_checkpoints(self) -> Path:
        return self.root / "teacher_checkpoints"

    def info(self) -> dict[str, Any]:
        """The contents of bundle.json (version, sizes, build time, metrics)."""
        return json.loads(self.manifest.read_text())


# ---------------------------------------------------------------------- locations
def cache_root(cache_dir: str | Path | None = None) -> Path:
    """`cache_dir`, else $TND_CACHE_DIR, else ~/.cache/tnd_studio (honouring $XDG_CACHE_HOME)."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    if os.environ.get("TND_CACHE_DIR"):
        return Path(os.environ["TND_CACHE_DIR"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "tnd_studio"


def resolve_size(size: str | None = None) -> str:
    """`size`, else $TND_BUNDLE_SIZE, else 'default'; ConfigError for unknown sizes."""
    chosen = size or os.environ.get("TND_BUNDLE_SIZE") or "default"
    if chosen not in SIZES:
        source = "size" if size else "TND_BUNDLE_SIZE"
        raise ConfigError(source, chosen, f"must be one of {', '.join(SIZES)}")
    return chosen


def bundle_root(size: str | None = None, cache_dir: str | Path | None = None) -> Path:
    return cache_root(cache_dir) / f"bundle-{resolve_size(size)}"


def _is_current(root: Path, size: str) -> bool:
    try:
        info = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return info.get("version") == BUNDLE_VERSION and info.get("size") == size


# ---------------------------------------------------------------------- public API
def ensure_bundle(size: str | None = None, cache_dir: str | Path | None = None, progress: ProgressFn | None = None) -> BundlePaths:
    """The bundle's paths, building it first if it is missing or from an older recipe version."""
    size = resolve_size(size)
    root = bundle_root(size, cache_dir)
    if _is_current(root, size):
        return BundlePaths.under(root)
    return build_bundle(size, cache_dir, force=False, progress=progress)


def build_bundle(size: str = "default", cache_dir: str | Path | None = None, force: bool = False, progress: ProgressFn | None = None) -> BundlePaths:
    """Build the bundle (unless a current one exists and not `force`) and return its paths.

    Raises BundleError with advice when the cache folder is not writable or the disk is full.
    """
    size = resolve_size(size)
    spec = SIZES[size]
    base = cache_root(cache_dir)
    root = base / f"bundle-{size}"
    with _user_facing_os_errors(base, spec):
        _check_writable(base, spec)
        with _build_lock(base, size):
            if not force and _is_current(root, size):
                return BundlePaths.under(root)
            for stale in base.glob(f".bundle-{size}.*"):
                shutil.rmtree(stale, ignore_errors=True)
            staging = base / f".bundle-{size}.building-{uuid.uuid4().hex[:8]}"
            staging.mkdir()
            try:
                with _one_thread():
                    _build_into(BundlePaths.under(staging), size, spec, _Progress(progress, f"bundle {size}"))
                _swap_into_place(staging, root)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    logger.info("bundle %s ready at %s", size, root)
    return BundlePaths.under(root)


# ---------------------------------------------------------------------- file-system safety
@contextmanager
def _user_facing_os_errors(base: Path, spec: BundleSpec) -> Iterator[None]:
    try:
        yield
    except BundleError:
        raise
    except OSError as exc:
        raise _as_bundle_error(exc, base, spec) from exc
    except RuntimeError as exc:  # safetensors and torch report a full disk as RuntimeError
        if "No space left" in str(exc) or "os error 28" in str(exc):
            raise _as_bundle_error(OSError(errno.ENOSPC, str(exc)), base, spec) from exc
        raise


def _as_bundle_error(exc: OSError, base: Path, spec: BundleSpec) -> BundleError:
    hint = "Set TND_CACHE_DIR (or pass --cache_dir) to another folder."
    if exc.errno in _DISK_ERRNOS:
        return BundleError(f"not enough disk space to build the bundle in {base} (it needs about {spec.required_mib} MiB): {exc.strerror or exc}. Free some space or choose another folder. {hint}")
    if exc.errno in _ACCESS_ERRNOS:
        return BundleError(f"cannot write the bundle to {base}: {exc.strerror or exc} ({exc.filename or base}). {hint}")
    return BundleError(f"could not build the bundle in {base}: {exc}. {hint}")


def _check_writable(base: Path, spec: BundleSpec) -> None:
    base.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=base, prefix=".write-test-"):
        pass
    free = shutil.disk_usage(base).free
    if free < spec.required_mib * 2**20:
        raise OSError(errno.ENOSPC, f"only {free / 2**20:.0f} MiB free", str(base))


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch on one thread: these models are too small to gain from intra-op threads, and on a
    shared CPU two threads per process spin against other processes (3-4x slower on 2 busy cores)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def _build_lock(base: Path, size: str) -> Iterator[None]:
    """One builder per bundle at a time, across processes (the app and a test run may race)."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; concurrent first builds are unlikely there
        yield
        return
    with open(base / f"bundle-{size}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _swap_into_place(staging: Path, root: Path) -> None:
    old = root.with_name(f".{root.name}.old-{uuid.uuid4().hex[:8]}")
    if root.exists():
        root.rename(old)
    staging.rename(root)
    shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------------- progress
class _Progress:
    """Maps each build stage to a slice of [0, 1]; reports to the caller's callback, a tqdm bar and the log."""

    def __init__(self, callback: ProgressFn | None, title: str):
        from tqdm.auto import tqdm

        self.callback = callback
        self.bar = tqdm(total=1000, desc=title, disable=None, leave=True, bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining} {postfix}")
        self.start, self.end, self.message = 0.0, 0.0, ""
        self.last_logged = -1.0

    def stage(self, start: float, end: float, message: str) -> None:
        self.start, self.end, self.message = start, end, message
        logger.info("bundle: %s", message)
        self.bar.set_postfix_str(message)
        self.update(0.0)

    def update(self, within: float) -> None:
        fraction = self.start + max(0.0, min(1.0, within)) * (self.end - self.start)
        self.bar.n = int(fraction * 1000)
        self.bar.refresh()
        if self.callback is not None:
            self.callback(fraction, self.message)
        if fraction - self.last_logged >= 0.1:
            logger.info("bundle: %3.0f%% %s", 100 * fraction, self.message)
            self.last_logged = fraction

    def close(self) -> None:
        self.update(1.0)
        self.bar.close()


def _trainer_callbacks(progress: _Progress, checkpoint_dir: Path | None = None) -> list[Any]:
    from transformers import TrainerCallback

    class StageProgress(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
            progress.update(state.global_step / max(1, state.max_steps))
            step = state.global_step
            if checkpoint_dir is not None and (step & (step - 1) == 0 or step == state.max_steps):
                model.save_pretrained(checkpoint_dir / f"step-{step:06d}")

    return [StageProgress()]


def _quiet(trainer: Any) -> Any:
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    return trainer


# ---------------------------------------------------------------------- build stages
def _write_jsonl(path: Path, rows: list[dict[str, str]]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def _held_out(n: int, exclude: set[str], seed: int) -> list[str]:
    from tnd_core.data.language import generate_sentence

    rng, kept, seen = random.Random(seed), [], set(exclude)
    for _ in range(200 * n):
        if len(kept) == n:
            break
        sentence = generate_sentence(rng)
        if sentence not in seen:
            seen.add(sentence)
            kept.append(sentence)
    return kept


def _write_data(paths: BundlePaths, spec: BundleSpec) -> dict[str, int]:
    from tnd_core.data.language import generate_corpus, sentence_prefixes

    corpus = generate_corpus(spec.corpus_sentences, SEEDS["corpus"])
    paths.corpus.write_text("\n".join(corpus) + "\n")
    eval_sentences = _held_out(spec.eval_sentences, set(corpus), SEEDS["eval"])
    eval_prompts = sentence_prefixes(eval_sentences, SEEDS["prefix"])
    _write_jsonl(paths.eval, [{"text": s, "prompt": p} for s, p in zip(eval_sentences, eval_prompts)])
    prompts = list(dict.fromkeys(sentence_prefixes(generate_corpus(20 * spec.prompts, SEEDS["prompts"]), SEEDS["prefix"])))[: spec.prompts]
    _write_jsonl(paths.prompts, [{"prompt": p} for p in prompts])
    return {"corpus_sentences": len(corpus), "eval_sentences": len(eval_sentences), "prompts": len(prompts)}


def _gpt2(spec: ModelSpec, tokenizer: Any, seed: int) -> Any:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=spec.n_positions,
        n_embd=spec.n_embd,
        n_layer=spec.n_layer,
        n_head=spec.n_head,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model


def _train_teacher(paths: BundlePaths, spec: BundleSpec, tokenizer: Any, progress: _Progress) -> Any:
    from datasets import Dataset
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    sentences = paths.corpus.read_text().splitlines()
    ids = [seq + [tokenizer.eos_token_id] for seq in tokenizer(sentences)["input_ids"]]
    model = _gpt2(spec.teacher, tokenizer, SEEDS["teacher"])
    args = TrainingArguments(
        output_dir=str(paths.root / "_teacher_run"),
        max_steps=spec.teacher_steps,
        per_device_train_batch_size=spec.teacher_batch_size,
        learning_rate=spec.teacher_learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=0.05,
        weight_decay=0.01,
        logging_steps=max(1, spec.teacher_steps // 10),
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=SEEDS["teacher"],
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_dict({"input_ids": ids}),
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
        callbacks=_trainer_callbacks(progress, checkpoint_dir=paths.teacher_checkpoints),
    )
    _quiet(trainer).train()
    shutil.rmtree(args.output_dir, ignore_errors=True)
    model = trainer.model.cpu().eval()
    model.save_pretrained(paths.teacher)
    tokenizer.save_pretrained(paths.teacher)
    return model


def _stage_data(paths: BundlePaths, spec: BundleSpec, tokenizer: Any, progress: _Progress) -> Any:
    from datasets import Dataset
    from transformers import GPT2LMHeadModel

    from tnd_core.evaluation.grammar import sample_texts

    checkpoints = sorted(paths.teacher_checkpoints.iterdir())
    texts, stages = [], []
    for i, folder in enumerate(checkpoints):
        step = int(folder.name.rpartition("-")[2])
        model = GPT2LMHeadModel.from_pretrained(folder)
        for text in sample_texts(model, None, tokenizer, n=spec.stage_samples_per_checkpoint, seed=SEEDS["stage"] + step):
            if text:
                texts.append(text)
                stages.append(math.log2(step))
        progress.update((i + 1) / len(checkpoints))
    return Dataset.from_dict({"text": texts, "label": stages})


def _grammar_pairs(spec: BundleSpec, exclude: set[str]) -> Any:
    from datasets import Dataset

    from tnd_core.data.perturb import perturb

    rng = random.Random(SEEDS["perturb"])
    chosen, rejected = [], []
    for sentence in _held_out(spec.grammar_pairs, exclude, SEEDS["pairs"]):
        result = perturb(sentence, rng)
        if result is not None:
            chosen.append(sentence)
            rejected.append(result[0])
    return Dataset.from_dict({"chosen": chosen, "rejected": rejected})


def _grammar_model(paths: BundlePaths, spec: BundleSpec, tokenizer: Any) -> Any:
    """The teacher's layers with GRAMMAR_EXTRA_LAYERS fresh ones on top and a one-output head.

    The teacher's layers know the language; the extra layers give the last position room to gather
    evidence of an error anywhere in the sentence (with the teacher's two layers alone, held-out
    pair accuracy stalls near 94%; with two more it passes 98% in fewer steps).
    """
    import torch
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    torch.manual_seed(SEEDS["grammar"])
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the fresh layers and head are reported as newly initialised: expected
    try:
        model = AutoModelForSequenceClassification.from_pretrained(paths.teacher, num_labels=1, n_layer=spec.teacher.n_layer + GRAMMAR_EXTRA_LAYERS)
    finally:
        hf_logging.set_verbosity(verbosity)
    model.config.pad_token_id = tokenizer.pad_token_id
    return model


def _recommended_config(paths: BundlePaths, spec: BundleSpec) -> None:
    from tnd_core.config import CustomPPOConfig

    CustomPPOConfig.from_dict({**_RECOMMENDED_PPO, **spec.ppo_overrides}).save(paths.config)


def _parameters(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


def _build_into(paths: BundlePaths, size: str, spec: BundleSpec, progress: _Progress) -> None:
    from tnd_core.data.tokenizer import save_tokenizer
    from tnd_core.evaluation.grammar import grammaticality_rate, sample_texts
    from tnd_core.trainers.reward_trainer.reward import small_bert_classifier, train_reward_model

    started = time.perf_counter()
    timings: dict[str, float] = {}

    def timed(name: str) -> None:
        timings[name] = round(time.perf_counter() - started - sum(timings.values()), 2)

    progress.stage(0.0, 0.03, "writing the baby language: corpus, held-out sentences, prompts, tokenizer")
    counts = _write_data(paths, spec)
    tokenizer = save_tokenizer(paths.tokenizer)
    timed("data")

    progress.stage(0.03, 0.6, f"pretraining the teacher ({spec.teacher_steps} steps, checkpoints at 2^k)")
    teacher = _train_teacher(paths, spec, tokenizer, progress)
    timed("teacher")

    progress.stage(0.6, 0.63, "measuring the teacher's grammaticality")
    teacher_samples = sample_texts(teacher, None, tokenizer, n=spec.grammar_samples, seed=SEEDS["sample"])
    teacher_grammaticality = grammaticality_rate(teacher_samples)
    timed("teacher_eval")

    progress.stage(0.63, 0.7, "sampling texts from the teacher checkpoints")
    stage_data = _stage_data(paths, spec, tokenizer, progress)
    progress.stage(0.7, 0.8, "training the stage reward model (predicts log2 of the checkpoint step)")
    stage_model = small_bert_classifier(tokenizer, num_labels=1, seed=SEEDS["stage"])
    # Start the regressor at the mean stage so its few steps go into telling stages apart, not into the offset.
    stage_model.classifier.bias.data.fill_(sum(stage_data["label"]) / len(stage_data))
    stage = train_reward_model(
        stage_model, stage_data, paths.reward_stage,
        mode="regression", tokenizer=tokenizer, eval_fraction=0.15, epochs=spec.stage_epochs,
        learning_rate=1e-3, batch_size=32, max_length=spec.teacher.n_positions, seed=SEEDS["stage"],
        callbacks=_trainer_callbacks(progress), show_progress=False,
    )
    timed("reward_stage")

    progress.stage(0.8, 0.97, "training the grammar reward model (pairwise, TRL RewardTrainer)")
    eval_texts = {json.loads(line)["text"] for line in paths.eval.read_text().splitlines()}
    grammar = train_reward_model(
        _grammar_model(paths, spec, tokenizer), _grammar_pairs(spec, eval_texts), paths.reward_grammar,
        mode="pairwise", tokenizer=tokenizer, eval_fraction=0.15, epochs=spec.grammar_epochs,
        learning_rate=spec.grammar_learning_rate, batch_size=32, max_length=spec.teacher.n_positions, seed=SEEDS["grammar"],
        callbacks=_trainer_callbacks(progress), show_progress=False,
    )
    timed("reward_grammar")

    progress.stage(0.97, 1.0, "saving the from-scratch student and the recommended config")
    student = _gpt2(spec.student, tokenizer, SEEDS["student"])
    student.save_pretrained(paths.student)
    tokenizer.save_pretrained(paths.student)
    student_grammaticality = grammaticality_rate(sample_texts(student, None, tokenizer, n=spec.grammar_samples, seed=SEEDS["sample"]))
    _recommended_config(paths, spec)
    timed("student")

    manifest = {
        "version": BUNDLE_VERSION,
        "size": size,
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "build_seconds": round(time.perf_counter() - started, 1),
        "stage_seconds": timings,
        "spec": asdict(spec),
        "counts": {**counts, "vocabulary": len(tokenizer), "teacher_parameters": _parameters(teacher), "student_parameters": _parameters(student)},
        "teacher_checkpoints": sorted(int(p.name.rpartition("-")[2]) for p in paths.teacher_checkpoints.iterdir()),
        "metrics": {
            "teacher_grammaticality": teacher_grammaticality,
            "student_grammaticality": student_grammaticality,
            "reward_stage_pearson": stage.metrics.get("pearson"),
            "reward_stage_mse": stage.metrics.get("mse"),
            "reward_grammar_accuracy": grammar.metrics.get("accuracy"),
        },
        "teacher_samples": teacher_samples[:10],
    }
    paths.manifest.write_text(json.dumps(manifest, indent=2))
    progress.close()
    logger.info("bundle %s built in %.0f s: %s", size, manifest["build_seconds"], manifest["metrics"])
