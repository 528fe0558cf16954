"""The teacher: a frozen causal LM that writes demonstrations and supplies logits for distillation."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class TeacherLike(Protocol):
    """What the trainer needs from a teacher; `TeacherModel` is the reference implementation."""

    tokenizer: Any

    def get_teacher_logits(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        logits_to_keep: int = 0,
    ) -> torch.Tensor: ...

    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kwargs: Any) -> torch.Tensor: ...


class TeacherModel(nn.Module):
    """Frozen causal LM: no gradients, always in eval mode."""

    def __init__(self, model: nn.Module, tokenizer: Any = None):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.model.requires_grad_(False)
        self.model.eval()
        self._keeps_logits = "logits_to_keep" in inspect.signature(model.forward).parameters

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | Path, trust_remote_code: bool = False, tokenizer: Any = None, **kwargs: Any
    ) -> "TeacherModel":
        """Load a causal LM and its tokenizer by hub id or local path."""
        from tnd_core.models.loading import load_causal_lm, load_tokenizer

        model = load_causal_lm(name_or_path, trust_remote_code=trust_remote_code, **kwargs)
        tokenizer = (
            tokenizer if tokenizer is not None else load_tokenizer(name_or_path, trust_remote_code=trust_remote_code)
        )
        return cls(model, tokenizer)

    def train(self, mode: bool = True) -> "TeacherModel":
        # A frozen teacher never leaves eval mode, whatever its container asks.
        return super().train(False)

    @torch.no_grad()
    def get_teacher_logits(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        logits_to_keep: int = 0,
    ) -> torch.Tensor:
        """Next-token logits [B, T, V] (the last `logits_to_keep` positions when it is > 0)."""
        if position_ids is None:
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        extra = {"logits_to_keep": logits_to_keep} if self._keeps_logits and logits_to_keep else {}
        logits = self.model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False, **extra
        ).logits
        return logits[:, -logits_to_keep:] if logits_to_keep else logits

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return self.model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
