"""The student: a causal LM (the policy) plus a scalar value head (the critic)."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from trl.trainer.utils import disable_dropout_in_model

VALUE_HEAD_FILE = "value_head.safetensors"


@runtime_checkable
class StudentLike(Protocol):
    """What the trainer needs from a student; `StudentModel` is the reference implementation."""

    tokenizer: Any

    def __call__(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        logits_to_keep: int = 0,
    ) -> tuple[torch.Tensor, torch.Tensor]: ...

    def get_student_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor: ...

    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kwargs: Any) -> torch.Tensor: ...

    def save_pretrained(self, path: str | Path) -> None: ...

    def parameters(self) -> Any: ...


def hidden_size_of(model: nn.Module) -> int:
    """Width of the last hidden state, read from the config or the output embeddings."""
    config = getattr(model, "config", None)
    if config is not None:
        text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
        size = getattr(text_config, "hidden_size", None)
        if isinstance(size, int):
            return size
    return model.get_output_embeddings().in_features


class ValueHead(nn.Module):
    """Linear map from the last hidden state to a scalar value; small init, no dropout (TRL #43)."""

    def __init__(self, hidden_size: int, init_std: float = 1e-2):
        super().__init__()
        self.summary = nn.Linear(hidden_size, 1)
        nn.init.normal_(self.summary.weight, std=init_std)
        nn.init.zeros_(self.summary.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.summary(hidden.to(self.summary.weight.dtype)).squeeze(-1)


class StudentModel(nn.Module):
    """Trainable causal LM with a value head. Dropout is switched off: PPO ratios need a deterministic policy."""

    def __init__(self, model: nn.Module, tokenizer: Any = None, value_head: ValueHead | None = None):
        super().__init__()
        self.pretrained_model = model
        self.tokenizer = tokenizer
        self.v_head = value_head or ValueHead(hidden_size_of(model))
        disable_dropout_in_model(self.pretrained_model)
        self._keeps_logits = "logits_to_keep" in inspect.signature(model.forward).parameters

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | Path, trust_remote_code: bool = False, tokenizer: Any = None, **kwargs: Any
    ) -> "StudentModel":
        """Load a causal LM (and its value head, if `value_head.safetensors` is there) by hub id or path."""
        from tnd_core.models.loading import load_causal_lm, load_tokenizer

        model = load_causal_lm(name_or_path, trust_remote_code=trust_remote_code, **kwargs)
        tokenizer = (
            tokenizer if tokenizer is not None else load_tokenizer(name_or_path, trust_remote_code=trust_remote_code)
        )
        student = cls(model, tokenizer)
        head_file = Path(name_or_path) / VALUE_HEAD_FILE
        if head_file.is_file():
            student.v_head.load_state_dict(load_file(str(head_file)))
        return student

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        logits_to_keep: int = 0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and values; with `logits_to_keep` = k only the last k positions of both."""
        extra = {"logits_to_keep": logits_to_keep} if self._keeps_logits and logits_to_keep else {}
        out = self.pretrained_model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            output_hidden_states=True,
            use_cache=False,
            **extra,
        )
        hidden = out.hidden_states[-1]
        logits = out.logits
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
            logits = logits[:, -logits_to_keep:]
        return logits, self.v_head(hidden)

    def get_student_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Next-token logits [B, T, V] of the policy."""
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        return self.pretrained_model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        ).logits

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return self.pretrained_model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)

    def save_pretrained(self, path: str | Path) -> None:
        """`save_pretrained` of the LM and tokenizer, plus `value_head.safetensors` beside them."""
        path = Path(path)
        self.pretrained_model.save_pretrained(path)
        if self.tokenizer is not None and hasattr(self.tokenizer, "save_pretrained"):
            self.tokenizer.save_pretrained(path)
        save_file(
            {k: v.detach().contiguous().cpu() for k, v in self.v_head.state_dict().items()}, str(path / VALUE_HEAD_FILE)
        )

    def load_weights(self, path: str | Path) -> None:
        """Copy weights saved by `save_pretrained` into this model (used by resume)."""
        saved = type(self.pretrained_model).from_pretrained(path)
        self.pretrained_model.load_state_dict(saved.state_dict())
        self.v_head.load_state_dict(load_file(str(Path(path) / VALUE_HEAD_FILE)))
