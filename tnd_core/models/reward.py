"""The reward model: a frozen sequence classifier that scores decoded text (one output, or the log-odds of
the POSITIVE class of a two-class classifier)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from tnd_core.errors import ConfigError


@runtime_checkable
class RewardLike(Protocol):
    """Anything that scores texts; `RewardModel` is the reference implementation."""

    def score_texts(self, texts: list[str]) -> torch.Tensor: ...


class RewardModel(nn.Module):
    """Scores prompt + response text, re-tokenised with the reward model's own tokenizer (right-padded)."""

    def __init__(self, model: nn.Module, tokenizer: Any, max_length: int = 512, batch_size: int = 64):
        super().__init__()
        if tokenizer is None:
            raise ConfigError("reward_tokenizer", None, "the reward model needs its tokenizer to score text")
        self.positive, self.negative = score_columns(model)
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.batch_size = batch_size
        align_padding(model, tokenizer)
        self.model.requires_grad_(False)
        self.model.eval()

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | Path, trust_remote_code: bool = False, tokenizer: Any = None, **kwargs: Any
    ) -> "RewardModel":
        """Load a sequence classifier (one output, or two classes with POSITIVE) and its tokenizer by hub id or path."""
        from tnd_core.models.loading import load_sequence_classifier, load_tokenizer

        model = load_sequence_classifier(name_or_path, trust_remote_code=trust_remote_code, **kwargs)
        tokenizer = (
            tokenizer if tokenizer is not None else load_tokenizer(name_or_path, trust_remote_code=trust_remote_code)
        )
        return cls(model, tokenizer)

    def train(self, mode: bool = True) -> "RewardModel":
        # The reward model is frozen during PPO.
        return super().train(False)

    @torch.no_grad()
    def score_texts(self, texts: list[str]) -> torch.Tensor:
        """One float score per text, on the model's device."""
        device = next(self.model.parameters()).device
        scores = []
        for start in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(
                list(texts[start : start + self.batch_size]),
                padding=True,
                truncation=True,
                max_length=self.max_length,
                padding_side="right",
                return_tensors="pt",
            ).to(device)
            enc.pop("token_type_ids", None)
            logits = self.model(**enc).logits.float()
            score = logits[:, self.positive]
            scores.append(score if self.negative is None else score - logits[:, self.negative])
        return torch.cat(scores) if scores else torch.zeros(0, device=device)


def score_columns(model: nn.Module) -> tuple[int, int | None]:
    """Which logits make the score: (0, None) for one output; for a two-class classifier with a label named
    POSITIVE (a sentiment model), (positive, negative), whose difference is the log-odds of POSITIVE."""
    config = getattr(model, "config", None)
    num_labels = getattr(config, "num_labels", 1)
    if num_labels == 1:
        return 0, None
    labels = {int(i): str(name) for i, name in (getattr(config, "id2label", None) or {}).items()}
    positive = [i for i, name in labels.items() if name.upper() == "POSITIVE"]
    if num_labels == 2 and len(positive) == 1:
        return positive[0], 1 - positive[0]
    names = ", ".join(labels.values()) or "none"
    raise ConfigError(
        "reward_model",
        type(model).__name__,
        "must be a sequence classifier with one output (num_labels=1), or a two-class classifier with a label "
        f"named POSITIVE; this one has {num_labels} labels ({names}): convert it with classifier_to_reward_model",
    )


def align_padding(model: nn.Module, tokenizer: Any) -> None:
    """Give the tokenizer a pad token (its EOS when it has none) and the model the same pad id.

    Decoder classifiers (GPT-2, Llama, Qwen2 ...ForSequenceClassification) read the score at the last
    token that is not `config.pad_token_id`: with no pad id they refuse batches, and with an id other
    than the one the tokenizer pads with they score a pad token of every padded row.
    """
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is None:
            raise ConfigError(
                "reward_model", type(tokenizer).__name__, "its tokenizer needs a pad or EOS token to score batches"
            )
        tokenizer.pad_token = tokenizer.eos_token
    config = model.config
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    for part in {id(config): config, id(text_config): text_config}.values():
        part.pad_token_id = tokenizer.pad_token_id
