"""The reward model: a frozen sequence classifier with one output that scores decoded text."""

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
        num_labels = getattr(getattr(model, "config", None), "num_labels", 1)
        if num_labels != 1:
            raise ConfigError(
                "reward_model",
                type(model).__name__,
                f"must be a sequence classifier with one output (num_labels=1); this one has {num_labels}",
            )
        if tokenizer is None:
            raise ConfigError("reward_tokenizer", None, "the reward model needs its tokenizer to score text")
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.batch_size = batch_size
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        if getattr(model.config, "pad_token_id", None) is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        self.model.requires_grad_(False)
        self.model.eval()

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | Path, trust_remote_code: bool = False, tokenizer: Any = None, **kwargs: Any
    ) -> "RewardModel":
        """Load a sequence classifier with one output and its tokenizer by hub id or local path."""
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
            scores.append(self.model(**enc).logits[:, 0].float())
        return torch.cat(scores) if scores else torch.zeros(0, device=device)
