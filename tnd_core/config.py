"""CustomPPOConfig: every option of a TnD run, with the metadata that generates the CLI, the YAML
schema and the UI form.

Each field carries `help`, `group` and either `choices` or numeric bounds in its dataclass metadata.
`field_specs()` exposes them; nothing else in the project lists the options by hand.
"""

from __future__ import annotations

import argparse
import json
import math
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from tnd_core.errors import ConfigError

GROUPS: dict[str, str] = {
    "models": "Models",
    "data": "Data",
    "ppo": "PPO",
    "optimizer": "Optimizer",
    "scheduler": "Scheduler",
    "early_stopping": "Early stopping",
    "score": "Score processing",
    "distillation": "Distillation",
    "tnd": "TnD",
    "generation": "Generation",
    "run": "Run",
}

OPTIMIZER_NAMES = ("adamw", "adam", "sgd", "adafactor")
SCHEDULER_NAMES = (
    "constant",
    "constant_with_warmup",
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "inverse_sqrt",
)
FIELD_ALIASES = {"optimize_cuda_cache": "optimize_device_cache"}


def _opt(
    default: Any,
    help: str,
    group: str,
    *,
    choices: tuple[str, ...] | None = None,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> Any:
    metadata = {"help": help, "group": group, "choices": choices, "ge": ge, "gt": gt, "le": le, "lt": lt}
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class FieldSpec:
    """What a form, a CLI flag or a schema needs to know about one option."""

    name: str
    type: str  # "int" | "float" | "bool" | "str" | "dict"
    optional: bool
    default: Any
    help: str
    group: str
    choices: tuple[str, ...] | None
    ge: float | None
    gt: float | None
    le: float | None
    lt: float | None

    def bounds_text(self) -> str:
        """Human-readable allowed range, e.g. '> 0' or 'in [0, 1]'."""
        parts = []
        if self.gt is not None:
            parts.append(f"> {self.gt:g}")
        if self.ge is not None:
            parts.append(f">= {self.ge:g}")
        if self.lt is not None:
            parts.append(f"< {self.lt:g}")
        if self.le is not None:
            parts.append(f"<= {self.le:g}")
        return " and ".join(parts)


@dataclass
class CustomPPOConfig:
    """Options for `CustomPPOTrainer`: classic PPO (TRL 0.11 names), distillation and TnD."""

    # --- models: sources the CLI and the app load; the Python API takes model objects instead
    teacher_name_or_path: str = _opt("bundle", "Teacher: 'bundle' for the embedded baby-language teacher, a hub id or a local path.", "models")
    student_name_or_path: str = _opt("bundle", "Student: 'bundle' for the embedded from-scratch student, a hub id or a local path.", "models")
    reward_model_name_or_path: str = _opt("bundle", "Reward model (sequence classifier, one output): 'bundle', 'bundle:grammar', a hub id or a local path.", "models")
    trust_remote_code: bool = _opt(False, "Allow custom modelling code from the hub when loading models.", "models")

    # --- data
    dataset_name_or_path: str = _opt("bundle", "Prompts: 'bundle', a hub dataset id, or a local CSV/JSONL file.", "data")
    prompt_column: str = _opt("prompt", "Column of the dataset that holds the prompt text.", "data")
    max_prompt_length: int = _opt(64, "Prompts longer than this many tokens are truncated from the left.", "data", ge=1)

    # --- PPO
    steps: int = _opt(200, "Number of training steps: PPO steps (one batch of prompts each) plus any interleaved CLM steps.", "ppo", ge=1)
    batch_size: int = _opt(16, "Prompts per PPO step.", "ppo", ge=1)
    mini_batch_size: int = _opt(4, "Samples per mini-batch inside a PPO epoch.", "ppo", ge=1)
    gradient_accumulation_steps: int = _opt(1, "Mini-batches accumulated per optimizer step.", "ppo", ge=1)
    ppo_epochs: int = _opt(4, "Optimisation passes over each batch.", "ppo", ge=1)
    gamma: float = _opt(1.0, "Discount factor of the GAE.", "ppo", ge=0.0, le=1.0)
    lam: float = _opt(0.95, "Lambda of the GAE.", "ppo", ge=0.0, le=1.0)
    cliprange: float = _opt(0.2, "Clip range of the policy ratio.", "ppo", gt=0.0)
    cliprange_value: float = _opt(0.2, "Clip range of the value prediction.", "ppo", gt=0.0)
    vf_coef: float = _opt(0.1, "Weight of the value loss.", "ppo", ge=0.0)
    entropy_coef: float = _opt(0.0, "Weight of the entropy bonus; > 0 raises the policy's entropy.", "ppo", ge=0.0)
    kl_penalty: str = _opt("kl", "Per-token KL estimate in the reward: kl, abs, mse or full (whole vocabulary).", "ppo", choices=("kl", "abs", "mse", "full"))
    kl_reference: str = _opt("teacher", "Reference model of the KL penalty: the teacher, or a frozen copy of the initial student.", "ppo", choices=("teacher", "initial_student"))
    init_kl_coef: float = _opt(0.2, "Initial KL penalty coefficient (beta).", "ppo", ge=0.0)
    adap_kl_ctrl: bool = _opt(True, "Adapt the KL coefficient towards `target`.", "ppo")
    target: float = _opt(6.0, "Target KL of the adaptive KL controller.", "ppo", gt=0.0)
    horizon: float = _opt(10000.0, "Horizon of the adaptive KL controller.", "ppo", gt=0.0)
    whiten_rewards: bool = _opt(False, "Whiten per-token rewards (keeping their mean) before the GAE.", "ppo")
    ratio_threshold: float = _opt(10.0, "Skip a mini-batch whose mean policy ratio exceeds this.", "ppo", gt=0.0)

    # --- optimizer
    learning_rate: float = _opt(1.41e-5, "Learning rate.", "optimizer", gt=0.0)
    optimizer_name: str = _opt("adamw", "adamw, adam, sgd, adafactor, or the name of any torch.optim class. adamw and adam use the fused kernel unless optimizer_kwargs sets fused or foreach.", "optimizer")
    optimizer_kwargs: dict = _opt({}, "Extra keyword arguments of the optimizer (JSON object), e.g. {\"weight_decay\": 0.01}.", "optimizer")
    max_grad_norm: float | None = _opt(1.0, "Clip gradients to this norm; empty for no clipping.", "optimizer", gt=0.0)
    optimize_device_cache: bool = _opt(False, "Free the accelerator's cache between phases of a step (alias: optimize_cuda_cache).", "optimizer")

    # --- scheduler
    scheduler_name: str = _opt("constant", "Learning-rate schedule (transformers' get_scheduler).", "scheduler", choices=SCHEDULER_NAMES)
    scheduler_kwargs: dict = _opt({}, "Extra keyword arguments of the scheduler (JSON object), e.g. {\"power\": 2.0}.", "scheduler")
    warmup: int = _opt(0, "Optimizer steps of linear learning-rate warmup.", "scheduler", ge=0)

    # --- early stopping
    early_stopping: bool = _opt(False, "Stop a batch's remaining PPO epochs once the policy KL exceeds 1.5 * target_kl.", "early_stopping")
    target_kl: float = _opt(1.0, "Policy-KL threshold of early stopping.", "early_stopping", gt=0.0)
    patience: int = _opt(0, "Stop the run after this many logged steps without a new best mean reward; 0 turns it off.", "early_stopping", ge=0)
    patience_min_delta: float = _opt(0.0, "Improvement in mean reward that counts as new best for `patience`.", "early_stopping", ge=0.0)

    # --- score processing
    use_score_scaling: bool = _opt(False, "Divide scores by their running std.", "score")
    use_score_norm: bool = _opt(False, "With score scaling, also subtract the running mean.", "score")
    score_clip: float | None = _opt(None, "Clip processed scores to [-score_clip, score_clip]; empty for no clipping.", "score", gt=0.0)

    # --- distillation
    distill_coef: float = _opt(1.0, "Weight of the logit-distillation loss; 0 turns distillation off.", "distillation", ge=0.0)
    distill_temperature: float = _opt(1.0, "Softmax temperature T of distillation (loss scaled by T^2).", "distillation", gt=0.0)
    divergence: str = _opt("forward_kl", "Divergence between teacher and student: forward_kl, reverse_kl or jsd.", "distillation", choices=("forward_kl", "reverse_kl", "jsd"))
    jsd_beta: float = _opt(0.5, "Interpolation beta of the generalised JSD.", "distillation", ge=0.0, le=1.0)

    # --- TnD
    use_teacher_demos: bool = _opt(True, "Add teacher demonstrations for the same prompts to each PPO batch.", "tnd")
    demo_score: str = _opt("reward_model", "Score of a demo: 'reward_model' to score it, or a fixed number.", "tnd")
    reward_shaping: str = _opt("none", "Shape scores against a baseline b: none, sub (s - b), div (s / b), bin (-1 if s < b else s).", "tnd", choices=("none", "sub", "div", "bin"))
    shaping_baseline: float = _opt(0.0, "Constant baseline b of reward shaping.", "tnd")
    shaping_baseline_text: str = _opt("", "If set, b is the reward model's score of this text instead of the constant.", "tnd")
    clm_coef: float = _opt(0.0, "Weight of a causal-LM loss on trials and demos inside the PPO step.", "tnd", ge=0.0)
    clm_per_step: int = _opt(0, "Plain CLM steps on corpus text per cycle (the paper's code: 3); 0 turns them off.", "tnd", ge=0)
    ppo_per_step: int = _opt(1, "PPO steps per cycle; 0 turns PPO off.", "tnd", ge=0)

    # --- generation (trials and demos)
    max_new_tokens: int = _opt(16, "Tokens generated per trial or demo.", "generation", ge=1)
    temperature: float = _opt(1.0, "Sampling temperature of trials and demos.", "generation", gt=0.0)
    top_k: int = _opt(0, "Sample from the k most likely tokens; 0 turns it off.", "generation", ge=0)
    top_p: float = _opt(1.0, "Nucleus sampling probability mass.", "generation", gt=0.0, le=1.0)
    do_sample: bool = _opt(True, "Sample trials (greedy trials make the KL estimate wrong).", "generation")

    # --- run control
    output_dir: str = _opt("outputs/tnd-run", "Folder for checkpoints, metrics and logs.", "run")
    save_steps: int = _opt(50, "Save a checkpoint every this many steps; 0 saves only at the end.", "run", ge=0)
    save_total_limit: int = _opt(2, "Checkpoints kept on disk (oldest removed first); 0 keeps all.", "run", ge=0)
    logging_steps: int = _opt(1, "Emit step statistics every this many steps.", "run", ge=1)
    eval_steps: int = _opt(0, "Run the evaluator every this many steps; 0 turns it off.", "run", ge=0)
    resume_from_checkpoint: str = _opt("", "Resume from a checkpoint folder, or 'latest' in output_dir; empty starts fresh.", "run")
    mixed_precision: str = _opt("no", "Mixed precision through accelerate: no, fp16 or bf16.", "run", choices=("no", "fp16", "bf16"))
    report_to: str = _opt("none", "Experiment tracker through accelerate: none, tensorboard, wandb, trackio or all.", "run", choices=("none", "tensorboard", "wandb", "trackio", "all"))
    seed: int = _opt(0, "Random seed of the run.", "run", ge=0)

    def __post_init__(self) -> None:
        errors = self.errors()
        if errors:
            raise errors[0]

    # ------------------------------------------------------------------ validation
    def errors(self) -> list[ConfigError]:
        """Every problem with the current values, field by field, then across fields."""
        problems = [e for spec in field_specs() if (e := _check_field(spec, getattr(self, spec.name)))]
        if problems:
            return problems
        return _check_combinations(self)

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every option."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "CustomPPOConfig":
        """Build from a dict; unknown keys raise ConfigError naming the key and listing the known ones."""
        return cls(**_normalise_keys(values))

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_json(cls, text: str) -> "CustomPPOConfig":
        return cls.from_dict(_load_mapping(text, json.loads, "JSON"))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str) -> "CustomPPOConfig":
        return cls.from_dict(_load_mapping(text, yaml.safe_load, "YAML"))

    def save(self, path: str | Path) -> None:
        """Write as YAML (or JSON when the path ends in .json)."""
        path = Path(path)
        path.write_text(self.to_json(indent=2) if path.suffix == ".json" else self.to_yaml())

    @classmethod
    def load(cls, path: str | Path) -> "CustomPPOConfig":
        """Read a YAML or JSON config file."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError("config", str(path), "no such file")
        text = path.read_text()
        return cls.from_json(text) if path.suffix == ".json" else cls.from_yaml(text)

    def replace(self, **changes: Any) -> "CustomPPOConfig":
        """A copy with some options changed (validated)."""
        return type(self).from_dict({**self.to_dict(), **changes})


# ---------------------------------------------------------------------- field metadata
def _type_of(annotation: Any) -> tuple[str, bool]:
    optional = False
    args = typing.get_args(annotation)
    if args and type(None) in args:
        optional = True
        annotation = next(a for a in args if a is not type(None))
    name = {int: "int", float: "float", bool: "bool", str: "str", dict: "dict"}[typing.get_origin(annotation) or annotation]
    return name, optional


def field_specs() -> list[FieldSpec]:
    """Metadata of every CustomPPOConfig option, in declaration order."""
    hints = typing.get_type_hints(CustomPPOConfig)
    specs = []
    for f in fields(CustomPPOConfig):
        kind, optional = _type_of(hints[f.name])
        default = f.default if f.default is not MISSING else f.default_factory()
        m = f.metadata
        specs.append(FieldSpec(f.name, kind, optional, default, m["help"], m["group"], m["choices"], m["ge"], m["gt"], m["le"], m["lt"]))
    return specs


def field_spec(name: str) -> FieldSpec:
    """Metadata of one option by name (aliases accepted)."""
    name = FIELD_ALIASES.get(name, name)
    for spec in field_specs():
        if spec.name == name:
            return spec
    raise ConfigError(name, None, f"unknown option; known options: {', '.join(s.name for s in field_specs())}")


def specs_by_group() -> dict[str, list[FieldSpec]]:
    """Field specs grouped by their group key, groups in display order."""
    grouped: dict[str, list[FieldSpec]] = {g: [] for g in GROUPS}
    for spec in field_specs():
        grouped[spec.group].append(spec)
    return grouped


def _check_field(spec: FieldSpec, value: Any) -> ConfigError | None:
    if value is None:
        return None if spec.optional else ConfigError(spec.name, value, f"required {spec.type}")
    if spec.type == "bool" and not isinstance(value, bool):
        return ConfigError(spec.name, value, "must be true or false")
    if spec.type == "int" and (isinstance(value, bool) or not isinstance(value, int)):
        return ConfigError(spec.name, value, f"must be an integer {spec.bounds_text()}".strip())
    if spec.type == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return ConfigError(spec.name, value, f"must be a finite number {spec.bounds_text()}".strip())
    if spec.type == "str" and not isinstance(value, str):
        return ConfigError(spec.name, value, "must be a string")
    if spec.type == "dict" and not isinstance(value, dict):
        return ConfigError(spec.name, value, "must be a mapping (JSON object)")
    if spec.choices is not None and value not in spec.choices:
        return ConfigError(spec.name, value, f"must be one of {', '.join(spec.choices)}")
    if spec.type in ("int", "float"):
        bad = (
            (spec.gt is not None and not value > spec.gt)
            or (spec.ge is not None and not value >= spec.ge)
            or (spec.lt is not None and not value < spec.lt)
            or (spec.le is not None and not value <= spec.le)
        )
        if bad:
            return ConfigError(spec.name, value, f"must be {spec.bounds_text()}")
    return None


def is_known_optimizer(name: str) -> bool:
    """True for the built-in names and for any torch.optim optimizer class name."""
    if name in OPTIMIZER_NAMES:
        return True
    import torch

    cls = getattr(torch.optim, name, None)
    return isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)


def _check_combinations(c: CustomPPOConfig) -> list[ConfigError]:
    problems = []
    per_update = c.mini_batch_size * c.gradient_accumulation_steps
    if c.batch_size % per_update:
        problems.append(ConfigError("batch_size", c.batch_size, f"must be a multiple of mini_batch_size * gradient_accumulation_steps = {c.mini_batch_size} * {c.gradient_accumulation_steps} = {per_update}"))
    if not is_known_optimizer(c.optimizer_name):
        problems.append(ConfigError("optimizer_name", c.optimizer_name, f"must be one of {', '.join(OPTIMIZER_NAMES)} or the name of a torch.optim optimizer class (e.g. RMSprop)"))
    if c.use_score_norm and not c.use_score_scaling:
        problems.append(ConfigError("use_score_norm", True, "requires use_score_scaling=true (normalisation is part of scaling)"))
    if c.demo_score != "reward_model":
        try:
            if not math.isfinite(float(c.demo_score)):
                raise ValueError
        except ValueError:
            problems.append(ConfigError("demo_score", c.demo_score, "must be 'reward_model' or a finite number"))
    if c.reward_shaping == "div" and not c.shaping_baseline_text and c.shaping_baseline == 0:
        problems.append(ConfigError("shaping_baseline", 0.0, "must be non-zero when reward_shaping=div"))
    if c.clm_per_step == 0 and c.ppo_per_step == 0:
        problems.append(ConfigError("ppo_per_step", 0, "clm_per_step and ppo_per_step cannot both be 0"))
    if c.patience_min_delta > 0 and c.patience == 0:
        problems.append(ConfigError("patience_min_delta", c.patience_min_delta, "has no effect unless patience > 0"))
    return problems


def _normalise_keys(values: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(values, dict):
        raise ConfigError("config", values, "must be a mapping of option names to values")
    known = {s.name for s in field_specs()}
    out = {}
    for key, value in values.items():
        name = FIELD_ALIASES.get(key, key)
        if name not in known:
            raise ConfigError(str(key), value, f"unknown option; known options: {', '.join(sorted(known))}")
        out[name] = value
    return out


def _load_mapping(text: str, loader: Any, fmt: str) -> dict[str, Any]:
    try:
        values = loader(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigError("config", text[:80], f"must be valid {fmt}: {exc}") from exc
    return values or {}


# ---------------------------------------------------------------------- coercion from text (CLI, forms)
def parse_value(spec: FieldSpec, raw: Any) -> Any:
    """Convert a text or loosely typed value to the option's type, raising ConfigError on failure."""
    if isinstance(raw, str):
        text = raw.strip()
        if spec.optional and text.lower() in ("", "none", "null"):
            return None
        try:
            if spec.type == "bool":
                lowered = text.lower()
                if lowered in ("true", "1", "yes", "on"):
                    return True
                if lowered in ("false", "0", "no", "off"):
                    return False
                raise ValueError
            if spec.type == "int":
                return int(text)
            if spec.type == "float":
                return float(text)
            if spec.type == "dict":
                value = json.loads(text) if text else {}
                if not isinstance(value, dict):
                    raise ValueError
                return value
        except ValueError:
            allowed = {"bool": "true or false", "int": "an integer", "float": "a number", "dict": "a JSON object"}[spec.type]
            raise ConfigError(spec.name, raw, f"must be {allowed}") from None
        return raw
    if spec.type == "float" and isinstance(raw, int) and not isinstance(raw, bool):
        return float(raw)
    if spec.type == "int" and isinstance(raw, float) and raw.is_integer():
        return int(raw)
    return raw


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one `--name` flag per option; unset flags stay absent from the parsed namespace."""
    for group_key, specs in specs_by_group().items():
        group = parser.add_argument_group(GROUPS[group_key])
        for spec in specs:
            flags = [f"--{spec.name}"] + [f"--{alias}" for alias, target in FIELD_ALIASES.items() if target == spec.name]
            extra = f" Choices: {', '.join(spec.choices)}." if spec.choices else ""
            group.add_argument(
                *flags,
                dest=spec.name,
                default=argparse.SUPPRESS,
                metavar=spec.type.upper(),
                help=f"{spec.help}{extra} (default: {spec.default!r})",
            )


def config_from_arguments(namespace: argparse.Namespace, base: CustomPPOConfig | None = None) -> CustomPPOConfig:
    """Apply the flags present in `namespace` on top of `base` (or the defaults)."""
    values = (base or CustomPPOConfig()).to_dict()
    for spec in field_specs():
        if spec.name in vars(namespace):
            values[spec.name] = parse_value(spec, getattr(namespace, spec.name))
    return CustomPPOConfig.from_dict(values)


def json_schema() -> dict[str, Any]:
    """JSON schema of the config file (YAML or JSON), generated from the field metadata."""
    json_types = {"int": "integer", "float": "number", "bool": "boolean", "str": "string", "dict": "object"}
    properties = {}
    for spec in field_specs():
        prop: dict[str, Any] = {"description": spec.help, "default": spec.default, "x-group": spec.group}
        prop["type"] = [json_types[spec.type], "null"] if spec.optional else json_types[spec.type]
        if spec.choices:
            prop["enum"] = list(spec.choices)
        for key, schema_key in (("ge", "minimum"), ("gt", "exclusiveMinimum"), ("le", "maximum"), ("lt", "exclusiveMaximum")):
            if getattr(spec, key) is not None:
                prop[schema_key] = getattr(spec, key)
        properties[spec.name] = prop
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "CustomPPOConfig",
        "type": "object",
        "additionalProperties": False,
        "properties": properties,
    }
