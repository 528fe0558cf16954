"""What a bundle is: its recipe version, its sizes, its recommended run and the layout of its folder."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tnd_core.cache import cache_root
from tnd_core.errors import ConfigError, TndError

BUNDLE_VERSION = 4
MANIFEST = "bundle.json"


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


RECOMMENDED_PPO: dict[str, Any] = {
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
def resolve_size(size: str | None = None) -> str:
    """`size`, else $TND_BUNDLE_SIZE, else 'default'; ConfigError for unknown sizes."""
    chosen = size or os.environ.get("TND_BUNDLE_SIZE") or "default"
    if chosen not in SIZES:
        source = "size" if size else "TND_BUNDLE_SIZE"
        raise ConfigError(source, chosen, f"must be one of {', '.join(SIZES)}")
    return chosen


def bundle_root(size: str | None = None, cache_dir: str | Path | None = None) -> Path:
    """The folder a bundle of this size lives in under the cache root."""
    return cache_root(cache_dir) / f"bundle-{resolve_size(size)}"
