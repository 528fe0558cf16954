"""A memory plan: what a run will hold, in GB, against the device's memory, before anything loads.

`plan_memory(config, student_config, teacher_config, reward_config, device)` reads the three models'
transformers configs (no weights: parameters are counted on an empty 'meta' copy of each model) and the
run's options, and estimates each part of the peak:

- what stays for the whole run: the student's parameters, its gradients and optimizer states (of the
  trainable parameters only: the adapters and value head under LoRA), the KL reference (a frozen copy
  of the student with kl_reference=initial_student, none under LoRA), the teacher and the reward model;
- what one phase of a PPO step adds, the largest of: the update (activations of one mini-batch, with or
  without gradient checkpointing, its logits and loss terms, and the teacher's logits kept for every
  epoch's distillation loss), the no-grad pass over the batch before it, and generation (the KV cache).

The activation terms are first-principles counts of the tensors autograd keeps per token and layer;
`benchmarks/memory_plan.py` measures real peaks against them (docs/BENCHMARKS.md). `suggestions`
re-plans the run with each option that lowers memory, so what it proposes is what would fit.
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass, field
from typing import Any

import torch

from tnd_core.config import CustomPPOConfig
from tnd_core.errors import TndError

logger = logging.getLogger(__name__)

GB = 1024**3
# torch.optim state tensors per trainable parameter, each the parameter's size (adafactor: see _optimizer_bytes)
OPTIMIZER_STATES = {
    "adamw": 2,
    "adam": 2,
    "sgd": 0,
    "AdamW": 2,
    "Adam": 2,
    "NAdam": 2,
    "RAdam": 2,
    "Adamax": 2,
    "Adadelta": 2,
    "Rprop": 2,
    "ASGD": 2,
    "RMSprop": 1,
    "Adagrad": 1,
    "SGD": 0,
}
# Elements autograd keeps per token and layer of a decoder, in units of the hidden size h and the MLP
# width f: layer-norm inputs and outputs (4h), q, k, v and the attention output (4h), the two residual
# sums (2h), the MLP's input, inner activations and their nonlinearity (2f, 3f for gated MLPs).
ACTIVATION_H, ACTIVATION_F, ACTIVATION_F_GATED = 10, 2, 3
# Copies of the response logits [samples, R, V] alive at once in a pass: the logits and their tempered copy, the
# reference's and its tempered copy, log-softmax; with a teacher, its logits and the divergence's two
# log-probabilities, the probabilities and their difference (tnd_core.divergence): 9 in all, 4 without.
LOGIT_COPIES, LOGIT_COPIES_TEACHER = 4, 9
# CUDA context and the library's kernels' workspace, outside what torch allocates for tensors.
CUDA_RUNTIME_BYTES = int(0.6 * GB)


class MemoryPlanError(TndError):
    """A run refused because its memory plan does not fit the device; `plan` holds the numbers."""

    def __init__(self, plan: "MemoryPlan"):
        self.plan = plan
        super().__init__(
            f"memory_check: this run needs about {plan.total_gb:.2f} GB but {plan.device} has "
            f"{plan.available_gb:.2f} GB free; it would run out of memory. Set memory_check=warn to start it "
            f"anyway, or change the options below.\n\n{plan.table()}\n\n{plan.suggestions_text()}"
        )


@dataclass(frozen=True)
class ModelShape:
    """What the plan needs about one model: its parameter count and dtype, and its transformer sizes."""

    parameters: int
    dtype_bytes: int
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    mlp: int
    vocab: int
    gated_mlp: bool
    linear_shapes: tuple[tuple[str, int, int], ...] = ()  # (name, in, out) of each linear layer but the output one


@dataclass(frozen=True)
class Suggestion:
    """Options that lower the plan, and the plan's total with them."""

    changes: dict[str, Any]
    total_gb: float
    fits: bool

    def text(self) -> str:
        options = ", ".join(f"{name}={value}" for name, value in self.changes.items())
        return f"{options}: {self.total_gb:.2f} GB{' (fits)' if self.fits else ''}"


@dataclass
class MemoryPlan:
    """Estimated GB per part of a run's peak, against the device's free memory."""

    rows: dict[str, float]
    phases: dict[str, float]
    available_gb: float
    device: str
    suggestions: list[Suggestion] = field(default_factory=list)

    @property
    def total_gb(self) -> float:
        """What stays for the whole run plus the largest phase of a step."""
        return sum(self.rows.values()) + max(self.phases.values(), default=0.0)

    @property
    def fits(self) -> bool:
        return self.total_gb <= self.available_gb

    def table(self) -> str:
        """The plan as a Markdown table: each part, the peak phase, the total and the device's memory."""
        peak_phase = max(self.phases, key=self.phases.get) if self.phases else None
        lines = ["| part | GB |", "|---|---:|"]
        lines += [f"| {name} | {gb:.3f} |" for name, gb in self.rows.items()]
        for name, gb in self.phases.items():
            mark = " (peak phase)" if name == peak_phase else ""
            lines.append(f"| step phase: {name}{mark} | {gb:.3f} |")
        lines.append(f"| **total** | **{self.total_gb:.3f}** |")
        lines.append(f"| free on {self.device} | {self.available_gb:.3f} |")
        return "\n".join(lines)

    def suggestions_text(self) -> str:
        """The options that would make it fit, one per line (or why none is listed)."""
        if not self.suggestions:
            return "No option of the memory plan lowers this run further: a smaller model or a larger device."
        return "Options that lower it:\n" + "\n".join(f"- {s.text()}" for s in self.suggestions)

    def __str__(self) -> str:
        verdict = "fits" if self.fits else "does NOT fit"
        return f"Memory plan: {self.total_gb:.2f} GB of {self.available_gb:.2f} GB free ({verdict})\n{self.table()}"


# ---------------------------------------------------------------------- the models' shapes
def _text_config(config: Any) -> Any:
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def _dtype_bytes(config: Any) -> int:
    """Bytes per parameter as `from_pretrained` loads it: the config's dtype, else float32."""
    dtype = getattr(config, "dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    return dtype.itemsize if isinstance(dtype, torch.dtype) and dtype.is_floating_point else 4


@functools.lru_cache(maxsize=32)
def _shape_of(config_json: str, model_type: str, kind: str) -> ModelShape:
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification
    from transformers.pytorch_utils import Conv1D

    config = AutoConfig.for_model(model_type, **json.loads(config_json))
    auto = AutoModelForCausalLM if kind == "causal_lm" else AutoModelForSequenceClassification
    with init_empty_weights():  # counts parameters on 'meta' tensors: no memory, no initialisation
        model = auto.from_config(config)
    model.tie_weights()  # tied embeddings are one tensor, as in a loaded model
    output = model.get_output_embeddings() if kind == "causal_lm" else None
    linear: list[tuple[str, int, int]] = []
    for name, module in model.named_modules():
        if module is output:
            continue
        if isinstance(module, torch.nn.Linear):
            linear.append((name, module.in_features, module.out_features))
        elif isinstance(module, Conv1D):
            linear.append((name, module.nx, module.nf))
    text = _text_config(config)
    hidden = int(getattr(text, "hidden_size"))
    heads = int(getattr(text, "num_attention_heads", 1) or 1)
    mlp = getattr(text, "intermediate_size", None) or getattr(text, "n_inner", None) or getattr(text, "ffn_dim", None)
    activation = str(getattr(text, "hidden_act", "") or getattr(text, "activation_function", ""))
    return ModelShape(
        parameters=sum(p.numel() for p in model.parameters()),
        dtype_bytes=_dtype_bytes(config),
        layers=int(getattr(text, "num_hidden_layers")),
        hidden=hidden,
        heads=heads,
        kv_heads=int(getattr(text, "num_key_value_heads", None) or heads),
        mlp=int(mlp or 4 * hidden),
        vocab=int(getattr(text, "vocab_size")),
        gated_mlp=activation in ("silu", "swiglu") or "gate_proj" in {n.rsplit(".", 1)[-1] for n, _, _ in linear},
        linear_shapes=tuple(linear),
    )


def model_shape(config: Any, kind: str = "causal_lm") -> ModelShape:
    """The shape of the model a transformers config describes (`kind`: 'causal_lm' or 'classifier')."""
    values = config.to_dict()
    values.pop("model_type", None)
    return _shape_of(json.dumps(values, sort_keys=True, default=str), config.model_type, kind)


def lora_parameters(shape: ModelShape, model_type: str, r: int, target_modules: str) -> int:
    """Parameters of the LoRA adapters `target_modules` puts on a model: r * (in + out) per adapted layer."""
    from tnd_core.models.student import is_lora_target, lora_targets

    targets = lora_targets(model_type, [name for name, _, _ in shape.linear_shapes], target_modules)
    total = 0
    for name, fan_in, fan_out in shape.linear_shapes:
        if is_lora_target(name, targets):
            total += r * (fan_in + fan_out)
    return total


# ---------------------------------------------------------------------- the device
def available_memory(device: str | torch.device) -> float:
    """Free memory of `device` in GB: free GPU memory on CUDA, available RAM (psutil) on the CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free / GB
    import psutil

    return psutil.virtual_memory().available / GB


def default_device() -> torch.device:
    """The device accelerate gives a run in this process: the local GPU when there is one, else the CPU."""
    from accelerate import PartialState

    return PartialState().device


# ---------------------------------------------------------------------- the estimate
def _optimizer_bytes(config: CustomPPOConfig, trainable: int, shapes: list[tuple[int, int]], dtype_bytes: int) -> int:
    """Optimizer state of the trainable parameters (`shapes`: their matrices, for adafactor's factored state)."""
    name = config.optimizer_name
    if name == "adafactor":
        # a row and a column vector per matrix for the second moment, no first moment (beta1 off by default)
        return 4 * sum(rows + cols for rows, cols in shapes)
    states = OPTIMIZER_STATES.get(name, 2)
    if name in ("sgd", "SGD") and config.optimizer_kwargs.get("momentum"):
        states = 1
    if config.optimizer_kwargs.get("amsgrad"):
        states += 1
    return states * trainable * dtype_bytes


def _activation_bytes(shape: ModelShape, samples: int, length: int, checkpointing: bool, act_bytes: int) -> float:
    """What autograd keeps for a forward of `samples` sequences of `length` tokens through a decoder."""
    tokens = samples * length
    per_layer = ACTIVATION_H * shape.hidden + (ACTIVATION_F_GATED if shape.gated_mlp else ACTIVATION_F) * shape.mlp
    per_layer *= tokens * act_bytes
    # the hidden states of every layer are returned (output_hidden_states) and, checkpointed, are all it keeps
    kept_inputs = (shape.layers + 1) * tokens * shape.hidden * act_bytes
    if checkpointing:
        return kept_inputs + per_layer  # plus one layer's activations while it is recomputed
    return kept_inputs + shape.layers * per_layer


def plan_memory(
    config: CustomPPOConfig,
    student_config: Any,
    teacher_config: Any = None,
    reward_config: Any = None,
    device: str | torch.device | None = None,
    available_gb: float | None = None,
    suggest: bool = True,
) -> MemoryPlan:
    """Estimate the peak memory of a run of `config` with models of these transformers configs (the
    teacher's and reward model's may be None when the run does not load them) on `device` (default: the
    one accelerate gives this process), against `available_gb` (default: the device's free memory now).
    With `suggest`, the plan lists the options that lower it, each re-planned."""
    device = torch.device(device) if device is not None else default_device()
    if available_gb is None:
        available_gb = available_memory(device)
    student = model_shape(student_config)
    teacher = model_shape(teacher_config) if teacher_config is not None and config.needs_teacher else None
    reward = model_shape(reward_config, "classifier") if reward_config is not None and config.ppo_per_step else None
    p_bytes = student.dtype_bytes
    frozen_bytes = p_bytes if config.frozen_dtype == "auto" else getattr(torch, config.frozen_dtype).itemsize
    half = config.mixed_precision in ("bf16", "fp16")
    act_bytes = 2 if half or p_bytes == 2 else 4

    value_head = student.hidden + 1
    if config.use_lora:
        trainable = value_head + lora_parameters(
            student, student_config.model_type, config.lora_r, config.lora_target_modules
        )
        shapes = [(trainable, 1)]  # adapters are thin matrices: count adafactor's state as unfactored
    else:
        trainable = student.parameters + value_head
        shapes = [(fan_in, fan_out) for _, fan_in, fan_out in student.linear_shapes]
    rows = {
        "student parameters": (student.parameters + value_head) * p_bytes,
        "gradients": trainable * p_bytes,
        "optimizer states": _optimizer_bytes(config, trainable, shapes, p_bytes),
        "reference copy": student.parameters * p_bytes
        if config.kl_reference == "initial_student" and not config.use_lora
        else 0,
        "teacher": teacher.parameters * frozen_bytes if teacher else 0,
        "reward model": reward.parameters * frozen_bytes if reward else 0,
    }
    if device.type == "cuda":
        rows["CUDA context"] = CUDA_RUNTIME_BYTES

    length = config.max_prompt_length + config.max_new_tokens
    responses = config.max_new_tokens + 1
    samples = config.batch_size * (2 if config.use_teacher_demos and teacher else 1)
    mini = config.mini_batch_size
    distill = teacher is not None and config.distill_coef > 0
    kept_teacher_logits = samples * responses * student.vocab * frozen_bytes if distill else 0
    logit_copies = LOGIT_COPIES_TEACHER if teacher is not None else LOGIT_COPIES
    update = (
        _activation_bytes(student, mini, length, config.gradient_checkpointing, act_bytes)
        + logit_copies * mini * responses * student.vocab * 4
        + kept_teacher_logits
    )
    chunk = min(samples, 4 * mini * config.gradient_accumulation_steps)
    no_grad_pass = (
        (student.layers + 1) * chunk * length * student.hidden * act_bytes
        + logit_copies * chunk * responses * student.vocab * 4
        + kept_teacher_logits * (samples - chunk) / samples  # the earlier chunks' (this one's is among the copies)
    )
    generators = [(student, p_bytes)] + ([(teacher, frozen_bytes)] if teacher else [])
    generation = max(
        2 * m.layers * config.batch_size * length * m.hidden * m.kv_heads // m.heads * b
        + config.batch_size * m.vocab * 4 * 2
        for m, b in generators
    )
    phases = {"update": update, "old-policy pass": no_grad_pass, "generation": generation}
    plan = MemoryPlan(
        rows={name: value / GB for name, value in rows.items()},
        phases={name: value / GB for name, value in phases.items()},
        available_gb=available_gb,
        device=str(device),
    )
    if suggest and not plan.fits:
        plan.suggestions = _suggestions(config, student_config, teacher_config, reward_config, device, available_gb)
    return plan


def _suggestions(
    config: CustomPPOConfig,
    student_config: Any,
    teacher_config: Any,
    reward_config: Any,
    device: torch.device,
    available_gb: float,
) -> list[Suggestion]:
    """Each option that lowers the plan (LoRA, gradient checkpointing, a smaller mini-batch, bf16 frozen
    models), then all of them together, each re-planned; those that fit first, smallest total first."""

    def replan(changes: dict[str, Any]) -> MemoryPlan:
        changed = config.replace(**changes)
        return plan_memory(changed, student_config, teacher_config, reward_config, device, available_gb, False)

    candidates: list[dict[str, Any]] = []
    if not config.use_lora:
        candidates.append({"use_lora": True})
    if not config.gradient_checkpointing:
        candidates.append({"gradient_checkpointing": True})
    per_update = config.gradient_accumulation_steps
    smaller = [m for m in range(config.mini_batch_size - 1, 0, -1) if config.batch_size % (m * per_update) == 0]
    if smaller:
        # the largest mini-batch that fits, else the smallest there is
        fitting = next((m for m in smaller if replan({"mini_batch_size": m}).fits), smaller[-1])
        candidates.append({"mini_batch_size": fitting})
    if config.frozen_dtype in ("auto", "float32") and (teacher_config is not None or reward_config is not None):
        candidates.append({"frozen_dtype": "bfloat16"})
    if len(candidates) > 1:
        candidates.append({k: v for changes in candidates for k, v in changes.items()})
    current = replan({}).total_gb
    found = []
    for changes in candidates:
        plan = replan(changes)
        if plan.total_gb < current:
            found.append(Suggestion(changes, plan.total_gb, plan.fits))
    return sorted(found, key=lambda s: (not s.fits, s.total_gb))
