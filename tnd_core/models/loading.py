"""`from_pretrained` for causal LMs, sequence classifiers and tokenizers, with errors that name the config field.

The model wrappers load through these; `tnd_core.models.roles` loads and wraps a model per role."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from tnd_core.errors import ConfigError


def _from_pretrained(loader: Any, name_or_path: str | Path, field: str, **kwargs: Any) -> Any:
    try:
        return loader.from_pretrained(str(name_or_path), **kwargs)
    except (OSError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        allowed = f"must be a local model folder or a reachable hub id ({first_line})"
        raise ConfigError(field, str(name_or_path), allowed) from exc


def load_causal_lm(
    name_or_path: str | Path, trust_remote_code: bool = False, field: str = "model", **kwargs: Any
) -> nn.Module:
    """`AutoModelForCausalLM.from_pretrained` with a user-facing error."""
    from transformers import AutoModelForCausalLM

    return _from_pretrained(AutoModelForCausalLM, name_or_path, field, trust_remote_code=trust_remote_code, **kwargs)


def load_sequence_classifier(
    name_or_path: str | Path, trust_remote_code: bool = False, field: str = "reward_model_name_or_path", **kwargs: Any
) -> nn.Module:
    """`AutoModelForSequenceClassification.from_pretrained` with a user-facing error."""
    from transformers import AutoModelForSequenceClassification

    return _from_pretrained(
        AutoModelForSequenceClassification, name_or_path, field, trust_remote_code=trust_remote_code, **kwargs
    )


def load_tokenizer(name_or_path: str | Path, trust_remote_code: bool = False, field: str = "tokenizer") -> Any:
    """`AutoTokenizer.from_pretrained`; a missing pad token becomes the EOS token."""
    from transformers import AutoTokenizer

    tokenizer = _from_pretrained(AutoTokenizer, name_or_path, field, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
