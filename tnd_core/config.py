"""Option dataclasses described by their field metadata, and CustomPPOConfig: every option of a TnD run.

Each field is declared with `option(...)`: a default, a help text, a display group, tags, and either
choices or numeric bounds. From that metadata alone come the validation (`errors()`), the CLI flags
(`add_config_arguments`), the config file's schema (`json_schema`) and the app's form: nothing in the
project lists options by hand. The functions below take the config class and default to CustomPPOConfig;
the other such class is `tnd_core.trainers.reward_trainer.config.RewardTrainingConfig`.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, TypeVar

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
# Every other field of TRL 0.11.4's PPOConfig, with what to do instead; the shared names are CustomPPOConfig fields.
TRL_FIELDS_REPLACED = {
    name: f"TRL 0.11's {name} has no counterpart here: {advice}"
    for name, advice in {
        "exp_name": "runs are named by output_dir",
        "log_with": "use report_to (none, tensorboard, wandb, trackio or all)",
        "task_name": "it only labelled TRL's tracker runs; drop it",
        "model_name": "set the student with student_name_or_path, or pass the model object to the trainer",
        "query_dataset": "set the prompts with dataset_name_or_path",
        "reward_model": "set the reward model with reward_model_name_or_path, or pass the model object to the trainer",
        "remove_unused_columns": "only prompt_column is read from the dataset; drop it",
        "tracker_kwargs": "choose the tracker with report_to and set it up through its environment (e.g. WANDB_ENTITY)",
        "accelerator_kwargs": "configure accelerate with `accelerate config` or `accelerate launch` flags "
        "(mixed_precision is an option here)",
        "project_kwargs": "logs and checkpoints go under output_dir",
        "tracker_project_name": "runs are tracked under the project 'tnd'; choose the tracker with report_to",
        "push_to_hub_if_best_kwargs": "pushing to the hub during training is not supported; upload output_dir after it",
        "forward_batch_size": "use mini_batch_size (TRL 0.11 deprecated forward_batch_size in its favour)",
        "world_size": "the number of processes is set at launch (accelerate launch --num_processes)",
        "compare_steps": "TRL used it only with push_to_hub_if_best_kwargs; to stop on a stalled reward use patience",
        "gradient_checkpointing": "gradient checkpointing is not supported; drop it",
        "is_encoder_decoder": "the student is a decoder-only causal LM; drop it",
        "is_peft_model": "TRL filled it in at run time; drop it",
        "backward_batch_size": "it is mini_batch_size * gradient_accumulation_steps; drop it",
        "global_backward_batch_size": "it is mini_batch_size * gradient_accumulation_steps * processes; drop it",
        "global_batch_size": "it is batch_size * processes; drop it",
        "dataset_num_proc": "prompts are tokenised in the main process; drop it",
    }.items()
}

C = TypeVar("C", bound="ConfigBase")


def option(
    default: Any,
    help: str,
    group: str,
    *,
    choices: tuple[str, ...] | None = None,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    tags: tuple[str, ...] = (),
) -> Any:
    """A config field with its metadata: `help` text, display `group` (a key of the class's GROUPS), `tags`
    that let a caller select fields (e.g. 'generation'), and either `choices` or numeric bounds."""
    metadata = {"help": help, "group": group, "choices": choices, "ge": ge, "gt": gt, "le": le, "lt": lt, "tags": tags}
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
    tags: tuple[str, ...] = ()

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


class ConfigBase:
    """What every option dataclass shares: validation from its field metadata, and dict/JSON/YAML I/O.

    Subclasses are declared with `@config_dataclass`, give their fields with `option(...)`, set GROUPS
    (group key -> display title, in display order), and may set ALIASES (other name -> field name,
    accepted everywhere), REPLACED (names refused with advice on what to use instead) and override
    `_combination_errors` for checks across fields.
    """

    GROUPS: ClassVar[dict[str, str]] = {}
    ALIASES: ClassVar[dict[str, str]] = {}
    REPLACED: ClassVar[dict[str, str]] = {}

    def __post_init__(self) -> None:
        errors = self.errors()
        if errors:
            raise errors[0]

    # ------------------------------------------------------------------ validation
    def errors(self) -> list[ConfigError]:
        """Every problem with the current values, field by field, then across fields."""
        problems = [e for spec in field_specs(type(self)) if (e := _check_field(spec, getattr(self, spec.name)))]
        if problems:
            return problems
        return self._combination_errors()

    def _combination_errors(self) -> list[ConfigError]:
        """Problems across fields, checked once every field is valid on its own."""
        return []

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every option."""
        return asdict(self)

    @classmethod
    def from_dict(cls: type[C], values: dict[str, Any]) -> C:
        """Build from a dict; unknown keys raise ConfigError naming the key and listing the known ones."""
        return cls(**_normalise_keys(cls, values))

    def to_json(self, **kwargs: Any) -> str:
        """JSON text of every option; `kwargs` go to json.dumps."""
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_json(cls: type[C], text: str) -> C:
        """Build from JSON text."""
        return cls.from_dict(_load_mapping(text, json.loads, "JSON"))

    def to_yaml(self) -> str:
        """YAML text of every option, in declaration order."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls: type[C], text: str) -> C:
        """Build from YAML text."""
        return cls.from_dict(_load_mapping(text, yaml.safe_load, "YAML"))

    def save(self, path: str | Path) -> None:
        """Write as YAML (or JSON when the path ends in .json)."""
        path = Path(path)
        path.write_text(self.to_json(indent=2) if path.suffix == ".json" else self.to_yaml())

    @classmethod
    def load(cls: type[C], path: str | Path) -> C:
        """Read a YAML or JSON config file."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError("config", str(path), "no such file")
        text = path.read_text()
        return cls.from_json(text) if path.suffix == ".json" else cls.from_yaml(text)

    def replace(self: C, **changes: Any) -> C:
        """A copy with some options changed (validated)."""
        return type(self).from_dict({**self.to_dict(), **changes})


def config_dataclass(cls: type[C]) -> type[C]:
    """`@dataclass` for a ConfigBase subclass, whose constructor also takes the class's ALIASES and
    raises ConfigError (not TypeError) for REPLACED and unknown keywords."""
    cls = dataclass(cls)
    generated_init = cls.__init__

    @functools.wraps(generated_init)
    def __init__(self: C, **values: Any) -> None:
        generated_init(self, **_normalise_keys(cls, values))

    cls.__init__ = __init__
    return cls


@config_dataclass
class CustomPPOConfig(ConfigBase):
    """Options for `CustomPPOTrainer`: classic PPO (TRL 0.11 names), distillation and TnD.

    The constructor takes every field name of TRL 0.11.4's PPOConfig: most are fields here too,
    optimize_cuda_cache sets optimize_device_cache, and the rest raise a ConfigError saying what to use instead.
    """

    GROUPS = GROUPS
    ALIASES = FIELD_ALIASES
    REPLACED = TRL_FIELDS_REPLACED

    # --- models: sources the CLI and the app load; the Python API takes model objects instead
    teacher_name_or_path: str = option(
        "bundle",
        "Teacher: 'bundle' for the embedded baby-language teacher, a hub id or a local path.",
        "models",
        tags=("model_source",),
    )
    student_name_or_path: str = option(
        "bundle",
        "Student: 'bundle' for the embedded from-scratch student, a hub id or a local path.",
        "models",
        tags=("model_source",),
    )
    reward_model_name_or_path: str = option(
        "bundle",
        "Reward model (sequence classifier, one output): 'bundle', 'bundle:grammar', a hub id or a local path.",
        "models",
        tags=("model_source",),
    )
    trust_remote_code: bool = option(
        False, "Allow custom modelling code from the hub when loading models.", "models", tags=("model_source",)
    )

    # --- data
    dataset_name_or_path: str = option(
        "bundle", "Prompts: 'bundle', a hub dataset id, or a local CSV/JSONL file.", "data"
    )
    prompt_column: str = option("prompt", "Column of the dataset that holds the prompt text.", "data")
    max_prompt_length: int = option(
        64, "Prompts longer than this many tokens are truncated from the left.", "data", ge=1, tags=("generation",)
    )

    # --- PPO
    steps: int = option(
        200,
        "Number of training steps: PPO steps (one batch of prompts each) plus any interleaved CLM steps.",
        "ppo",
        ge=1,
    )
    batch_size: int = option(16, "Prompts per PPO step.", "ppo", ge=1)
    mini_batch_size: int = option(4, "Samples per mini-batch inside a PPO epoch.", "ppo", ge=1)
    gradient_accumulation_steps: int = option(1, "Mini-batches accumulated per optimizer step.", "ppo", ge=1)
    ppo_epochs: int = option(4, "Optimisation passes over each batch.", "ppo", ge=1)
    gamma: float = option(1.0, "Discount factor of the GAE.", "ppo", ge=0.0, le=1.0)
    lam: float = option(0.95, "Lambda of the GAE.", "ppo", ge=0.0, le=1.0)
    cliprange: float = option(0.2, "Clip range of the policy ratio.", "ppo", gt=0.0)
    cliprange_value: float = option(0.2, "Clip range of the value prediction.", "ppo", gt=0.0)
    vf_coef: float = option(0.1, "Weight of the value loss.", "ppo", ge=0.0)
    entropy_coef: float = option(0.0, "Weight of the entropy bonus; > 0 raises the policy's entropy.", "ppo", ge=0.0)
    kl_penalty: str = option(
        "kl",
        "Per-token KL estimate in the reward: kl, abs, mse or full (whole vocabulary).",
        "ppo",
        choices=("kl", "abs", "mse", "full"),
    )
    kl_reference: str = option(
        "teacher",
        "Reference model of the KL penalty: the teacher, or a frozen copy of the initial student.",
        "ppo",
        choices=("teacher", "initial_student"),
    )
    init_kl_coef: float = option(0.2, "Initial KL penalty coefficient (beta).", "ppo", ge=0.0)
    adap_kl_ctrl: bool = option(True, "Adapt the KL coefficient towards `target`.", "ppo")
    target: float = option(6.0, "Target KL of the adaptive KL controller.", "ppo", gt=0.0)
    horizon: float = option(10000.0, "Horizon of the adaptive KL controller.", "ppo", gt=0.0)
    whiten_rewards: bool = option(False, "Whiten per-token rewards (keeping their mean) before the GAE.", "ppo")
    ratio_threshold: float = option(10.0, "Skip a mini-batch whose mean policy ratio exceeds this.", "ppo", gt=0.0)

    # --- optimizer
    learning_rate: float = option(1.41e-5, "Learning rate.", "optimizer", gt=0.0)
    optimizer_name: str = option(
        "adamw",
        "adamw, adam, sgd, adafactor, or the name of any torch.optim class. "
        "adamw and adam use the fused kernel unless optimizer_kwargs sets fused or foreach.",
        "optimizer",
    )
    optimizer_kwargs: dict = option(
        {}, 'Extra keyword arguments of the optimizer (JSON object), e.g. {"weight_decay": 0.01}.', "optimizer"
    )
    max_grad_norm: float | None = option(
        1.0, "Clip gradients to this norm; empty for no clipping.", "optimizer", gt=0.0
    )
    optimize_device_cache: bool = option(
        False,
        "Free the accelerator's cache between phases of a step (TRL's older name: optimize_cuda_cache).",
        "optimizer",
    )

    # --- scheduler
    scheduler_name: str = option(
        "constant", "Learning-rate schedule (transformers' get_scheduler).", "scheduler", choices=SCHEDULER_NAMES
    )
    scheduler_kwargs: dict = option(
        {}, 'Extra keyword arguments of the scheduler (JSON object), e.g. {"power": 2.0}.', "scheduler"
    )
    warmup: int = option(0, "Optimizer steps of linear learning-rate warmup.", "scheduler", ge=0)

    # --- early stopping
    early_stopping: bool = option(
        False, "Stop a batch's remaining PPO epochs once the policy KL exceeds 1.5 * target_kl.", "early_stopping"
    )
    target_kl: float = option(1.0, "Policy-KL threshold of early stopping.", "early_stopping", gt=0.0)
    patience: int = option(
        0,
        "Stop the run after this many PPO steps in a row without a new best mean reward "
        "(CLM steps do not count); 0 turns it off.",
        "early_stopping",
        ge=0,
    )
    patience_min_delta: float = option(
        0.0, "Improvement in mean reward that counts as new best for `patience`.", "early_stopping", ge=0.0
    )

    # --- score processing
    use_score_scaling: bool = option(False, "Divide scores by their running std.", "score")
    use_score_norm: bool = option(False, "With score scaling, also subtract the running mean.", "score")
    score_clip: float | None = option(
        None, "Clip processed scores to [-score_clip, score_clip]; empty for no clipping.", "score", gt=0.0
    )

    # --- distillation
    distill_coef: float = option(
        1.0, "Weight of the logit-distillation loss; 0 turns distillation off.", "distillation", ge=0.0
    )
    distill_temperature: float = option(
        1.0, "Softmax temperature T of distillation (loss scaled by T^2).", "distillation", gt=0.0
    )
    divergence: str = option(
        "forward_kl",
        "Divergence between teacher and student: forward_kl, reverse_kl or jsd.",
        "distillation",
        choices=("forward_kl", "reverse_kl", "jsd"),
    )
    jsd_beta: float = option(0.5, "Interpolation beta of the generalised JSD.", "distillation", ge=0.0, le=1.0)

    # --- TnD
    use_teacher_demos: bool = option(True, "Add teacher demonstrations for the same prompts to each PPO batch.", "tnd")
    demo_score: str = option("reward_model", "Score of a demo: 'reward_model' to score it, or a fixed number.", "tnd")
    reward_shaping: str = option(
        "none",
        "Shape scores against a baseline b: none, sub (s - b), div (s / b), bin (-1 if s < b else s).",
        "tnd",
        choices=("none", "sub", "div", "bin"),
    )
    shaping_baseline: float = option(0.0, "Constant baseline b of reward shaping.", "tnd")
    shaping_baseline_text: str = option(
        "", "If set, b is the reward model's score of this text instead of the constant.", "tnd"
    )
    clm_coef: float = option(0.0, "Weight of a causal-LM loss on trials and demos inside the PPO step.", "tnd", ge=0.0)
    clm_per_step: int = option(
        0, "Plain CLM steps on corpus text per cycle (the paper's code: 3); 0 turns them off.", "tnd", ge=0
    )
    ppo_per_step: int = option(1, "PPO steps per cycle; 0 turns PPO off.", "tnd", ge=0)

    # --- generation (trials and demos)
    max_new_tokens: int = option(16, "Tokens generated per trial or demo.", "generation", ge=1, tags=("generation",))
    temperature: float = option(
        1.0, "Sampling temperature of trials and demos.", "generation", gt=0.0, tags=("generation",)
    )
    top_k: int = option(
        0, "Sample from the k most likely tokens; 0 turns it off.", "generation", ge=0, tags=("generation",)
    )
    top_p: float = option(1.0, "Nucleus sampling probability mass.", "generation", gt=0.0, le=1.0, tags=("generation",))
    do_sample: bool = option(
        True, "Sample trials (greedy trials make the KL estimate wrong).", "generation", tags=("generation",)
    )

    # --- run control
    output_dir: str = option("outputs/tnd-run", "Folder for checkpoints, metrics and logs.", "run")
    save_steps: int = option(50, "Save a checkpoint every this many steps; 0 saves only at the end.", "run", ge=0)
    save_total_limit: int = option(2, "Checkpoints kept on disk (oldest removed first); 0 keeps all.", "run", ge=0)
    logging_steps: int = option(1, "Emit step statistics every this many steps.", "run", ge=1)
    eval_steps: int = option(0, "Run the evaluator every this many steps; 0 turns it off.", "run", ge=0)
    resume_from_checkpoint: str = option(
        "", "Resume from a checkpoint folder, or 'latest' in output_dir; empty starts fresh.", "run"
    )
    mixed_precision: str = option(
        "no", "Mixed precision through accelerate: no, fp16 or bf16.", "run", choices=("no", "fp16", "bf16")
    )
    report_to: str = option(
        "none",
        "Experiment tracker through accelerate: none, tensorboard, wandb, trackio or all.",
        "run",
        choices=("none", "tensorboard", "wandb", "trackio", "all"),
    )
    seed: int = option(0, "Random seed of the run.", "run", ge=0)

    @property
    def needs_teacher(self) -> bool:
        """Whether the run uses the teacher at all: as the KL reference, for distillation or for demos."""
        return self.kl_reference == "teacher" or self.distill_coef > 0 or self.use_teacher_demos

    def _combination_errors(self) -> list[ConfigError]:
        problems = []
        per_update = self.mini_batch_size * self.gradient_accumulation_steps
        if self.batch_size % per_update:
            problems.append(
                ConfigError(
                    "batch_size",
                    self.batch_size,
                    "must be a multiple of mini_batch_size * gradient_accumulation_steps = "
                    f"{self.mini_batch_size} * {self.gradient_accumulation_steps} = {per_update}",
                )
            )
        if not is_known_optimizer(self.optimizer_name):
            problems.append(
                ConfigError(
                    "optimizer_name",
                    self.optimizer_name,
                    f"must be one of {', '.join(OPTIMIZER_NAMES)} or the name of a torch.optim optimizer class "
                    "(e.g. RMSprop)",
                )
            )
        if self.use_score_norm and not self.use_score_scaling:
            problems.append(
                ConfigError(
                    "use_score_norm", True, "requires use_score_scaling=true (normalisation is part of scaling)"
                )
            )
        if self.demo_score != "reward_model":
            try:
                if not math.isfinite(float(self.demo_score)):
                    raise ValueError
            except ValueError:
                problems.append(ConfigError("demo_score", self.demo_score, "must be 'reward_model' or a finite number"))
        if self.reward_shaping == "div" and not self.shaping_baseline_text and self.shaping_baseline == 0:
            problems.append(ConfigError("shaping_baseline", 0.0, "must be non-zero when reward_shaping=div"))
        if self.clm_per_step == 0 and self.ppo_per_step == 0:
            problems.append(ConfigError("ppo_per_step", 0, "clm_per_step and ppo_per_step cannot both be 0"))
        if self.patience_min_delta > 0 and self.patience == 0:
            problems.append(
                ConfigError("patience_min_delta", self.patience_min_delta, "has no effect unless patience > 0")
            )
        return problems


def is_known_optimizer(name: str) -> bool:
    """True for the built-in names and for any torch.optim optimizer class name."""
    if name in OPTIMIZER_NAMES:
        return True
    import torch

    cls = getattr(torch.optim, name, None)
    return isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)


# ---------------------------------------------------------------------- field metadata
def _type_of(annotation: Any) -> tuple[str, bool]:
    optional = False
    args = typing.get_args(annotation)
    if args and type(None) in args:
        optional = True
        annotation = next(a for a in args if a is not type(None))
    kinds = {int: "int", float: "float", bool: "bool", str: "str", dict: "dict"}
    return kinds[typing.get_origin(annotation) or annotation], optional


def field_specs(cls: type[ConfigBase] = CustomPPOConfig) -> list[FieldSpec]:
    """Metadata of every option of `cls`, in declaration order."""
    hints = typing.get_type_hints(cls)
    specs = []
    for f in fields(cls):
        kind, optional = _type_of(hints[f.name])
        default = f.default if f.default is not MISSING else f.default_factory()
        specs.append(FieldSpec(name=f.name, type=kind, optional=optional, default=default, **f.metadata))
    return specs


def field_spec(name: str, cls: type[ConfigBase] = CustomPPOConfig) -> FieldSpec:
    """Metadata of one option of `cls` by name (aliases accepted)."""
    if name in cls.REPLACED:
        raise ConfigError(name, None, cls.REPLACED[name])
    name = cls.ALIASES.get(name, name)
    specs = field_specs(cls)
    for spec in specs:
        if spec.name == name:
            return spec
    raise ConfigError(name, None, f"unknown option; known options: {', '.join(s.name for s in specs)}")


def specs_tagged(tag: str, cls: type[ConfigBase] = CustomPPOConfig) -> list[FieldSpec]:
    """Metadata of the options of `cls` carrying `tag` (e.g. 'generation', 'model_source'), in declaration order."""
    return [spec for spec in field_specs(cls) if tag in spec.tags]


def specs_by_group(cls: type[ConfigBase] = CustomPPOConfig) -> dict[str, list[FieldSpec]]:
    """Field specs of `cls` grouped by their group key, groups in `cls.GROUPS` display order."""
    grouped: dict[str, list[FieldSpec]] = {g: [] for g in cls.GROUPS}
    for spec in field_specs(cls):
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


def _normalise_keys(cls: type[ConfigBase], values: dict[str, Any]) -> dict[str, Any]:
    """`values` keyed by field names: aliases mapped, replaced and unknown names refused with a ConfigError."""
    if not isinstance(values, dict):
        raise ConfigError("config", values, "must be a mapping of option names to values")
    known = {f.name for f in fields(cls)}
    out: dict[str, Any] = {}
    given_as: dict[str, str] = {}
    for key, value in values.items():
        if key in cls.REPLACED:
            raise ConfigError(key, value, cls.REPLACED[key])
        name = cls.ALIASES.get(key, key)
        if name not in known:
            raise ConfigError(str(key), value, f"unknown option; known options: {', '.join(sorted(known))}")
        if name in out:
            raise ConfigError(key, value, f"{given_as[name]} and {key} name the same option; give one of them")
        out[name] = value
        given_as[name] = key
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
            allowed = {"bool": "true or false", "int": "an integer", "float": "a number", "dict": "a JSON object"}
            raise ConfigError(spec.name, raw, f"must be {allowed[spec.type]}") from None
        return raw
    if spec.type == "float" and isinstance(raw, int) and not isinstance(raw, bool):
        return float(raw)
    if spec.type == "int" and isinstance(raw, float) and raw.is_integer():
        return int(raw)
    return raw


def add_config_arguments(parser: argparse.ArgumentParser, cls: type[ConfigBase] = CustomPPOConfig) -> None:
    """Add one `--name` flag per option of `cls` (and per alias); unset flags stay absent from the parsed namespace."""
    for group_key, specs in specs_by_group(cls).items():
        group = parser.add_argument_group(cls.GROUPS[group_key])
        for spec in specs:
            flags = [f"--{spec.name}"] + [f"--{alias}" for alias, target in cls.ALIASES.items() if target == spec.name]
            choices = f" Choices: {', '.join(spec.choices)}." if spec.choices else ""
            # An empty default goes unsaid: the help text says what empty means, or that the option is required.
            default = "" if spec.default in ("", None) else f" (default: {spec.default!r})"
            group.add_argument(
                *flags,
                dest=spec.name,
                default=argparse.SUPPRESS,
                metavar=spec.type.upper(),
                help=f"{spec.help}{choices}{default}",
            )


def config_from_arguments(
    namespace: argparse.Namespace, base: ConfigBase | None = None, cls: type[C] | None = None
) -> C:
    """Apply the flags present in `namespace` on top of `base` (or the defaults of `cls`).

    `cls` defaults to the class of `base`, else CustomPPOConfig.
    """
    cls = cls or (type(base) if base is not None else CustomPPOConfig)
    specs = field_specs(cls)
    values = base.to_dict() if base is not None else {spec.name: spec.default for spec in specs}
    for spec in specs:
        if spec.name in vars(namespace):
            values[spec.name] = parse_value(spec, getattr(namespace, spec.name))
    return cls.from_dict(values)


def json_schema(cls: type[ConfigBase] = CustomPPOConfig) -> dict[str, Any]:
    """JSON schema of `cls`'s config file (YAML or JSON), generated from the field metadata."""
    json_types = {"int": "integer", "float": "number", "bool": "boolean", "str": "string", "dict": "object"}
    bounds = (("ge", "minimum"), ("gt", "exclusiveMinimum"), ("le", "maximum"), ("lt", "exclusiveMaximum"))
    properties = {}
    for spec in field_specs(cls):
        prop: dict[str, Any] = {"description": spec.help, "default": spec.default, "x-group": spec.group}
        prop["type"] = [json_types[spec.type], "null"] if spec.optional else json_types[spec.type]
        if spec.choices:
            prop["enum"] = list(spec.choices)
        for key, schema_key in bounds:
            if getattr(spec, key) is not None:
                prop[schema_key] = getattr(spec, key)
        properties[spec.name] = prop
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": cls.__name__,
        "type": "object",
        "additionalProperties": False,
        "properties": properties,
    }
