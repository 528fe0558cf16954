"""Model presets: common teacher -> student pairs from the Hugging Face Hub with a reward model, as data.

Each preset names the hub ids of its three models and keeps the architecture fields of their published
configs (`shapes`), so that the memory options can be suggested for a device without downloading
anything (`suggest_memory_options`, through tnd_core.models.memory_plan). The Models tab offers them;
docs/HUB_PRESETS.md describes them; tests/test_model_presets.py trains look-alikes of each family.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from tnd_core.config import CustomPPOConfig

MEMORY_OPTIONS = {"use_lora": False, "gradient_checkpointing": False, "frozen_dtype": "auto"}
SENTIMENT = "lvwerra/distilbert-imdb"  # two classes, NEGATIVE and POSITIVE: scores the log-odds of POSITIVE
SENTIMENT_SHAPE = {
    "model_type": "distilbert",
    "num_labels": 2,
    "id2label": {0: "NEGATIVE", 1: "POSITIVE"},
    "label2id": {"NEGATIVE": 0, "POSITIVE": 1},
}


@dataclass(frozen=True)
class ModelPreset:
    """A teacher -> student pair with a reward model, the prompts it suits, and its models' architectures."""

    name: str
    teacher: str
    student: str
    reward_model: str
    dataset: str
    prompt_column: str
    note: str
    shapes: dict[str, dict[str, Any]]  # role -> the architecture fields of the model's config.json

    def sources(self) -> dict[str, Any]:
        """The model-source options the preset sets (every option of the 'models' group)."""
        return {
            "teacher_name_or_path": self.teacher,
            "student_name_or_path": self.student,
            "reward_model_name_or_path": self.reward_model,
            "trust_remote_code": False,
        }

    def model_config(self, role: str) -> Any:
        """The transformers config of one role's model, built from `shapes` (nothing is downloaded)."""
        from transformers import AutoConfig

        fields = dict(self.shapes[role])
        return AutoConfig.for_model(fields.pop("model_type"), **fields)


def _llama(hidden: int, mlp: int, layers: int, heads: int, kv_heads: int) -> dict[str, Any]:
    return {
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": mlp,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "vocab_size": 49152,
        "max_position_embeddings": 8192,
        "tie_word_embeddings": True,
        "dtype": "bfloat16",
    }


def _qwen2(hidden: int, mlp: int, layers: int, heads: int, positions: int) -> dict[str, Any]:
    return {
        "model_type": "qwen2",
        "hidden_size": hidden,
        "intermediate_size": mlp,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": 2,
        "vocab_size": 151936,
        "max_position_embeddings": positions,
        "tie_word_embeddings": True,
        "dtype": "bfloat16",
    }


PRESETS: tuple[ModelPreset, ...] = (
    ModelPreset(
        name="GPT-2 -> DistilGPT-2, IMDB sentiment",
        teacher="gpt2",
        student="distilgpt2",
        reward_model=SENTIMENT,
        dataset="imdb",
        prompt_column="text",
        note="GPT-2's byte-level BPE on both sides (no pad token: EOS pads); positive movie reviews.",
        shapes={
            "teacher": {"model_type": "gpt2"},
            "student": {"model_type": "gpt2", "n_layer": 6},
            "reward_model": SENTIMENT_SHAPE,
        },
    ),
    ModelPreset(
        name="SmolLM2-360M -> SmolLM2-135M, IMDB sentiment",
        teacher="HuggingFaceTB/SmolLM2-360M",
        student="HuggingFaceTB/SmolLM2-135M",
        reward_model=SENTIMENT,
        dataset="imdb",
        prompt_column="text",
        note="Llama architecture with tied embeddings; one GPT-2-style tokenizer for both.",
        shapes={
            "teacher": _llama(960, 2560, 32, 15, 5),
            "student": _llama(576, 1536, 30, 9, 3),
            "reward_model": SENTIMENT_SHAPE,
        },
    ),
    ModelPreset(
        name="Qwen2.5-1.5B -> Qwen2.5-0.5B, IMDB sentiment",
        teacher="Qwen/Qwen2.5-1.5B",
        student="Qwen/Qwen2.5-0.5B",
        reward_model=SENTIMENT,
        dataset="imdb",
        prompt_column="text",
        note="Qwen2 architecture, 151,936-token vocabulary shared by both.",
        shapes={
            "teacher": _qwen2(1536, 8960, 28, 12, 131072),
            "student": _qwen2(896, 4864, 24, 14, 32768),
            "reward_model": SENTIMENT_SHAPE,
        },
    ),
)


def preset_by_name(name: str) -> ModelPreset:
    """The preset called `name` (KeyError naming the presets there are otherwise)."""
    for preset in PRESETS:
        if preset.name == name:
            return preset
    raise KeyError(f"no preset {name!r}; the presets are: {', '.join(p.name for p in PRESETS)}")


def suggest_memory_options(
    preset: ModelPreset,
    config: CustomPPOConfig,
    device: str | torch.device | None = None,
    available_gb: float | None = None,
) -> tuple[dict[str, Any], Any]:
    """The memory options for running `preset` with the rest of `config` on `device` (default: this
    process's), against `available_gb` (default: the device's free memory now).

    Only LoRA, gradient checkpointing and the frozen models' dtype are suggested (MEMORY_OPTIONS; the
    batch sizes stay the user's): none when the plan fits, else the fitting suggestion of the memory plan
    with the fewest changes (then the smallest total), else all of them together. Returns
    (options, the memory plan with them)."""
    from tnd_core.models.memory_plan import plan_memory

    configs = [preset.model_config(role) for role in ("student", "teacher", "reward_model")]
    base = config.replace(**preset.sources(), **MEMORY_OPTIONS)
    plan = plan_memory(base, *configs, device=device, available_gb=available_gb)
    options = dict(MEMORY_OPTIONS)
    ours = [s for s in plan.suggestions if set(s.changes) <= set(MEMORY_OPTIONS)]
    if plan.fits or not ours:
        return options, plan
    fitting = [s for s in ours if s.fits]
    if fitting:
        options.update(min(fitting, key=lambda s: (len(s.changes), s.total_gb)).changes)
    else:  # none fits alone: all of them together lower it most
        options.update({k: v for s in ours for k, v in s.changes.items()})
    chosen = base.replace(**options)
    return options, plan_memory(chosen, *configs, device=device, available_gb=available_gb, suggest=False)
