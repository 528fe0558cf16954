"""The student: a causal LM (the policy) plus a scalar value head (the critic)."""

from __future__ import annotations

import contextlib
import inspect
import warnings
from pathlib import Path
from typing import Any, Iterator, Protocol, runtime_checkable

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from trl.trainer.utils import disable_dropout_in_model

from tnd_core.config import CustomPPOConfig, lora_module_names
from tnd_core.errors import ConfigError

VALUE_HEAD_FILE = "value_head.safetensors"
# what peft's save_pretrained writes for an adapter (peft.utils.CONFIG_NAME)
ADAPTER_CONFIG_FILE = "adapter_config.json"


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
        """Copy weights saved by `save_pretrained` into this model (used by resume): the whole LM, or the
        LoRA adapters when the student has them; the value head either way."""
        if has_lora(self):
            from peft import load_peft_weights, set_peft_model_state_dict

            result = set_peft_model_state_dict(self.pretrained_model, load_peft_weights(str(path)))
            if result.unexpected_keys:
                raise ValueError(f"the saved adapters do not fit this student: {result.unexpected_keys[:3]}")
        else:
            saved = type(self.pretrained_model).from_pretrained(path)
            self.pretrained_model.load_state_dict(saved.state_dict())
        self.v_head.load_state_dict(load_file(str(Path(path) / VALUE_HEAD_FILE)))


# ---------------------------------------------------------------------- LoRA and memory options
def has_lora(student: Any) -> bool:
    """Whether the student's causal LM is a peft model (carries adapters)."""
    from peft import PeftModel

    return isinstance(getattr(student, "pretrained_model", None), PeftModel)


def _linear_module_names(model: nn.Module) -> list[str]:
    """Full names of the layers LoRA can adapt (nn.Linear and GPT-2's Conv1D)."""
    from transformers.pytorch_utils import Conv1D

    return [name for name, module in model.named_modules() if isinstance(module, (nn.Linear, Conv1D))]


def lora_targets(model_type: str | None, linear_names: list[str], spec: str) -> list[str] | str:
    """peft's `target_modules` for a lora_target_modules value, on a model of `model_type` whose linear
    layers have the full names `linear_names`.

    'auto' is peft's own default for the model family when it has one, else every linear layer;
    'all-linear' is passed on; a list of names is checked against the linear layers (ConfigError naming
    lora_target_modules when one matches none of them).
    """
    from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

    if spec == "auto":
        return list(TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(model_type, [])) or "all-linear"
    if spec == "all-linear":
        return spec
    names = lora_module_names(spec)
    for name in names:
        if not any(is_lora_target(full, [name]) for full in linear_names):
            leaves = sorted({full.rsplit(".", 1)[-1] for full in linear_names})
            allowed = f"{name!r} names no linear layer of the student; its linear layers: {', '.join(leaves)}"
            raise ConfigError("lora_target_modules", spec, allowed)
    return names


@contextlib.contextmanager
def _peft_deprecations_silenced() -> Iterator[None]:
    """peft 0.21 still asks transformers 5's deprecated is_gradient_checkpointing: nothing for users to act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def is_lora_target(module_name: str, targets: list[str] | str) -> bool:
    """Whether peft puts an adapter on the module called `module_name` (a full name) for `targets`: one of
    them is the name or its end after a dot; 'all-linear' adapts every linear layer."""
    if targets == "all-linear":
        return True
    return any(module_name == target or module_name.endswith("." + target) for target in targets)


def add_lora_adapters(student: "StudentModel", r: int, alpha: int, dropout: float, target_modules: str) -> None:
    """Wrap the student's causal LM in peft LoRA adapters: its own weights freeze, the adapters and the
    value head (outside the peft model) train."""
    from peft import LoraConfig, get_peft_model
    from transformers.pytorch_utils import Conv1D

    model = student.pretrained_model
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    targets = lora_targets(model_type, _linear_module_names(model), target_modules)
    # GPT-2's Conv1D stores its weight transposed; peft needs to be told (it warns and fixes it otherwise)
    fan_in_fan_out = any(isinstance(m, Conv1D) and is_lora_target(n, targets) for n, m in model.named_modules())
    lora = LoraConfig(
        task_type="CAUSAL_LM",
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=targets,
        fan_in_fan_out=fan_in_fan_out,
    )
    with _peft_deprecations_silenced():
        student.pretrained_model = get_peft_model(model, lora)


def apply_student_options(student: Any, config: CustomPPOConfig) -> None:
    """What the config asks of the student's memory: gradient checkpointing, then LoRA adapters.

    A student that already carries adapters keeps them. Checkpointing is non-reentrant, which needs no
    inputs that require grad, so frozen embeddings under LoRA are fine.
    """
    model = getattr(student, "pretrained_model", None)
    if (config.use_lora or config.gradient_checkpointing) and not isinstance(model, nn.Module):
        field = "use_lora" if config.use_lora else "gradient_checkpointing"
        allowed = f"needs a StudentModel (a causal LM with a value head), not {type(student).__name__}"
        raise ConfigError(field, True, allowed)
    if config.gradient_checkpointing:
        base = model.get_base_model() if has_lora(student) else model
        if not getattr(base, "supports_gradient_checkpointing", False):
            raise ConfigError("gradient_checkpointing", True, f"{type(base).__name__} does not support it")
        enable = getattr(base, "activation_checkpointing_enable", None)
        if enable is not None:  # transformers >= 5.2x; gradient_checkpointing_enable is its deprecated alias
            enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if config.use_lora and not has_lora(student):
        add_lora_adapters(student, config.lora_r, config.lora_alpha, config.lora_dropout, config.lora_target_modules)


class AdaptersDisabled:
    """The student with its LoRA adapters switched off: the initial policy, as a KL reference, without a
    copy of its weights. Called like the student; returns (logits, values) without gradients."""

    def __init__(self, student: StudentModel):
        self.student = student

    @torch.no_grad()
    def __call__(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        logits_to_keep: int = 0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        with self.student.pretrained_model.disable_adapter():
            return self.student(input_ids, attention_mask, position_ids, logits_to_keep)


def merge_adapters(adapter_folder: str | Path, output_folder: str | Path) -> Path:
    """A full model from a LoRA student folder (adapters, value head, tokenizer): the base model named in
    its adapter config is loaded, the adapters merged into a copy of it (peft's merge_and_unload) and the
    result saved with the tokenizer and value head, loadable with `from_pretrained` like any student."""
    import shutil

    from peft import AutoPeftModelForCausalLM

    adapter_folder, output_folder = Path(adapter_folder), Path(output_folder)
    if not (adapter_folder / ADAPTER_CONFIG_FILE).is_file():
        raise ConfigError("adapter folder", str(adapter_folder), f"must hold LoRA adapters ({ADAPTER_CONFIG_FILE})")
    with _peft_deprecations_silenced():
        merged = AutoPeftModelForCausalLM.from_pretrained(str(adapter_folder)).merge_and_unload()
    merged.save_pretrained(output_folder)
    for item in adapter_folder.iterdir():
        # the tokenizer and the value head travel with the merged weights; the adapters do not
        if item.is_file() and not item.name.startswith("adapter_") and not (output_folder / item.name).exists():
            shutil.copyfile(item, output_folder / item.name)
    return output_folder
