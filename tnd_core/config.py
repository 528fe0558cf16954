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
import inspect
import json
import math
import re
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml

from tnd_core.errors import ConfigError, short_repr, short_text

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
    "lora": "LoRA",
    "memory": "Memory",
    "run": "Run",
}

OPTIMIZER_NAMES = ("adamw", "adam", "sgd", "adafactor")
LORA_TARGET_KEYWORDS = ("auto", "all-linear")
# A module name in lora_target_modules: what peft matches against the ends of the model's module names.
LORA_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
FROZEN_DTYPES = ("auto", "float32", "bfloat16", "float16")
# torch.optim classes that cannot train the student although their step() needs no closure.
SPARSE_ONLY_OPTIMIZERS = ("SparseAdam",)
SCHEDULER_NAMES = (
    "constant",
    "constant_with_warmup",
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "inverse_sqrt",
)
# Upper bounds: generous sanity limits that keep every value within what the code and its libraries handle
# (no overflow, no unbounded loop or allocation from a typo). A hosted app sets its own, lower limits.
MAX_STEPS = 10_000_000
MAX_BATCH = 65_536
MAX_TOKENS_PROMPT = 131_072
MAX_TOKENS_NEW = 32_768
MAX_PER_CYCLE = 10_000
MAX_COEF = 1e6
MAX_SCORE = 1e12
MAX_TEMPERATURE = 1e3
MAX_SEED = 2**32 - 1  # what numpy's and transformers' set_seed accept
# Text options (paths, hub ids, texts) and the JSON objects of the *_kwargs options.
MAX_TEXT_CHARS = 10_000
MAX_KWARGS_ITEMS = 1_000
MAX_KWARGS_DEPTH = 8
MAX_KWARGS_INT = 2**63 - 1
# Config files and texts (YAML or JSON): refused beyond these before anything is built from them.
MAX_CONFIG_CHARS = 1_000_000
MAX_CONFIG_DEPTH = 20
# transformers' get_scheduler passes scheduler_specific_kwargs on to every schedule but these two; the arguments
# below are set by the trainer (warmup, the run's length) or would break resuming (last_epoch).
SCHEDULERS_WITHOUT_KWARGS = ("constant", "constant_with_warmup")
SCHEDULER_ARGUMENTS_SET_HERE = ("optimizer", "num_warmup_steps", "num_training_steps", "last_epoch")
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
        "is_encoder_decoder": "the student is a decoder-only causal LM; drop it",
        "is_peft_model": "TRL filled it in at run time; to train LoRA adapters set use_lora=true",
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
            parts.append(f"> {_bound_text(self.gt)}")
        if self.ge is not None:
            parts.append(f">= {_bound_text(self.ge)}")
        if self.lt is not None:
            parts.append(f"< {_bound_text(self.lt)}")
        if self.le is not None:
            parts.append(f"<= {_bound_text(self.le)}")
        return " and ".join(parts)


def _bound_text(bound: float) -> str:
    """A bound as people write it: integers in full (4294967295, not 4.29497e+09), other numbers short (1e+06)."""
    if isinstance(bound, int) or (bound.is_integer() and abs(bound) < 1e6):
        return str(int(bound))
    return f"{bound:g}"


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
        """Build from a dict; unknown keys raise ConfigError naming the key and listing the known ones,
        anything but a dict with string keys raises ConfigError naming 'config'."""
        return cls(**_normalise_keys(cls, values))

    def to_json(self, **kwargs: Any) -> str:
        """JSON text of every option; `kwargs` go to json.dumps."""
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_json(cls: type[C], text: str) -> C:
        """Build from JSON text (see `parse_config_text` for what is refused)."""
        return cls.from_dict(parse_config_text(text, "json"))

    def to_yaml(self) -> str:
        """YAML text of every option, in declaration order."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls: type[C], text: str) -> C:
        """Build from YAML text (see `parse_config_text` for what is refused)."""
        return cls.from_dict(parse_config_text(text, "yaml"))

    def save(self, path: str | Path) -> None:
        """Write as YAML (or JSON when the path ends in .json)."""
        path = Path(path)
        path.write_text(self.to_json(indent=2) if path.suffix == ".json" else self.to_yaml())

    @classmethod
    def load(cls: type[C], path: str | Path) -> C:
        """Read a YAML or JSON (.json) config file: UTF-8 text of at most MAX_CONFIG_CHARS bytes."""
        return cls.from_dict(read_config_file(path))

    def replace(self: C, **changes: Any) -> C:
        """A copy with some options changed (validated)."""
        return type(self).from_dict({**self.to_dict(), **changes})


def config_dataclass(cls: type[C]) -> type[C]:
    """`@dataclass` for a ConfigBase subclass, whose constructor also takes the class's ALIASES and
    raises ConfigError (not TypeError) for REPLACED and unknown keywords."""
    cls = dataclass(cls)
    generated_init = cls.__init__

    @functools.wraps(generated_init)
    def __init__(self: C, *positional: Any, **values: Any) -> None:
        if positional:
            raise ConfigError(
                "config", positional, f"{cls.__name__} takes keyword arguments only (e.g. steps=100), not positional"
            )
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
        64,
        "Prompts longer than this many tokens are truncated from the left.",
        "data",
        ge=1,
        le=MAX_TOKENS_PROMPT,
        tags=("generation",),
    )

    # --- PPO
    steps: int = option(
        200,
        "Number of training steps: PPO steps (one batch of prompts each) plus any interleaved CLM steps.",
        "ppo",
        ge=1,
        le=MAX_STEPS,
    )
    batch_size: int = option(16, "Prompts per PPO step.", "ppo", ge=1, le=MAX_BATCH)
    mini_batch_size: int = option(4, "Samples per mini-batch inside a PPO epoch.", "ppo", ge=1, le=MAX_BATCH)
    gradient_accumulation_steps: int = option(
        1, "Mini-batches accumulated per optimizer step.", "ppo", ge=1, le=MAX_BATCH
    )
    ppo_epochs: int = option(4, "Optimisation passes over each batch.", "ppo", ge=1, le=100)
    gamma: float = option(1.0, "Discount factor of the GAE.", "ppo", ge=0.0, le=1.0)
    lam: float = option(0.95, "Lambda of the GAE.", "ppo", ge=0.0, le=1.0)
    cliprange: float = option(0.2, "Clip range of the policy ratio.", "ppo", gt=0.0, le=10.0)
    cliprange_value: float = option(0.2, "Clip range of the value prediction.", "ppo", gt=0.0, le=MAX_COEF)
    vf_coef: float = option(0.1, "Weight of the value loss.", "ppo", ge=0.0, le=MAX_COEF)
    entropy_coef: float = option(
        0.0, "Weight of the entropy bonus; > 0 raises the policy's entropy.", "ppo", ge=0.0, le=MAX_COEF
    )
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
    init_kl_coef: float = option(0.2, "Initial KL penalty coefficient (beta).", "ppo", ge=0.0, le=MAX_COEF)
    adap_kl_ctrl: bool = option(True, "Adapt the KL coefficient towards `target`.", "ppo")
    target: float = option(6.0, "Target KL of the adaptive KL controller.", "ppo", gt=0.0, le=MAX_COEF)
    horizon: float = option(10000.0, "Horizon of the adaptive KL controller.", "ppo", gt=0.0, le=1e12)
    whiten_rewards: bool = option(False, "Whiten per-token rewards (keeping their mean) before the GAE.", "ppo")
    ratio_threshold: float = option(
        10.0, "Skip a mini-batch whose mean policy ratio exceeds this.", "ppo", gt=0.0, le=MAX_COEF
    )

    # --- optimizer
    learning_rate: float = option(1.41e-5, "Learning rate.", "optimizer", gt=0.0, le=10.0)
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
        1.0, "Clip gradients to this norm; empty for no clipping.", "optimizer", gt=0.0, le=MAX_COEF
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
    warmup: int = option(0, "Optimizer steps of linear learning-rate warmup.", "scheduler", ge=0, le=MAX_STEPS)

    # --- early stopping
    early_stopping: bool = option(
        False, "Stop a batch's remaining PPO epochs once the policy KL exceeds 1.5 * target_kl.", "early_stopping"
    )
    target_kl: float = option(1.0, "Policy-KL threshold of early stopping.", "early_stopping", gt=0.0, le=MAX_COEF)
    patience: int = option(
        0,
        "Stop the run after this many PPO steps in a row without a new best mean reward "
        "(CLM steps do not count); 0 turns it off.",
        "early_stopping",
        ge=0,
        le=MAX_STEPS,
    )
    patience_min_delta: float = option(
        0.0,
        "Improvement in mean reward that counts as new best for `patience`.",
        "early_stopping",
        ge=0.0,
        le=MAX_SCORE,
    )

    # --- score processing
    use_score_scaling: bool = option(False, "Divide scores by their running std.", "score")
    use_score_norm: bool = option(False, "With score scaling, also subtract the running mean.", "score")
    score_clip: float | None = option(
        None,
        "Clip processed scores to [-score_clip, score_clip]; empty for no clipping.",
        "score",
        gt=0.0,
        le=MAX_SCORE,
    )

    # --- distillation
    distill_coef: float = option(
        1.0, "Weight of the logit-distillation loss; 0 turns distillation off.", "distillation", ge=0.0, le=MAX_COEF
    )
    distill_temperature: float = option(
        1.0, "Softmax temperature T of distillation (loss scaled by T^2).", "distillation", gt=0.0, le=MAX_TEMPERATURE
    )
    divergence: str = option(
        "forward_kl",
        "Divergence between teacher and student: forward_kl, reverse_kl or jsd.",
        "distillation",
        choices=("forward_kl", "reverse_kl", "jsd"),
    )
    jsd_beta: float = option(0.5, "Interpolation beta of the generalised JSD.", "distillation", ge=0.0, le=1.0)
    cross_tokenizer_distill: str = option(
        "off",
        "Distillation from a teacher with another tokenizer: off (refused; its demos only) or uld (its sorted "
        "probabilities matched to the student's position by position, as Universal Logit Distillation).",
        "distillation",
        choices=("off", "uld"),
    )

    # --- TnD
    use_teacher_demos: bool = option(True, "Add teacher demonstrations for the same prompts to each PPO batch.", "tnd")
    demo_score: str = option("reward_model", "Score of a demo: 'reward_model' to score it, or a fixed number.", "tnd")
    reward_shaping: str = option(
        "none",
        "Shape scores against a baseline b: none, sub (s - b), div (s / b), bin (-1 if s < b else s).",
        "tnd",
        choices=("none", "sub", "div", "bin"),
    )
    shaping_baseline: float = option(0.0, "Constant baseline b of reward shaping.", "tnd", ge=-MAX_SCORE, le=MAX_SCORE)
    shaping_baseline_text: str = option(
        "", "If set, b is the reward model's score of this text instead of the constant.", "tnd"
    )
    clm_coef: float = option(
        0.0, "Weight of a causal-LM loss on trials and demos inside the PPO step.", "tnd", ge=0.0, le=MAX_COEF
    )
    clm_per_step: int = option(
        0,
        "Plain CLM steps on corpus text per cycle (the paper's code: 3); 0 turns them off.",
        "tnd",
        ge=0,
        le=MAX_PER_CYCLE,
    )
    ppo_per_step: int = option(1, "PPO steps per cycle; 0 turns PPO off.", "tnd", ge=0, le=MAX_PER_CYCLE)

    # --- generation (trials and demos)
    max_new_tokens: int = option(
        16, "Tokens generated per trial or demo.", "generation", ge=1, le=MAX_TOKENS_NEW, tags=("generation",)
    )
    temperature: float = option(
        1.0, "Sampling temperature of trials and demos.", "generation", gt=0.0, le=MAX_TEMPERATURE, tags=("generation",)
    )
    top_k: int = option(
        0,
        "Sample from the k most likely tokens; 0 turns it off.",
        "generation",
        ge=0,
        le=1_000_000,
        tags=("generation",),
    )
    top_p: float = option(1.0, "Nucleus sampling probability mass.", "generation", gt=0.0, le=1.0, tags=("generation",))
    do_sample: bool = option(
        True, "Sample trials (greedy trials make the KL estimate wrong).", "generation", tags=("generation",)
    )

    # --- LoRA (peft): adapters on the student's causal LM; the value head trains alongside them
    use_lora: bool = option(
        False,
        "Train LoRA adapters (peft) instead of every weight of the student; the KL reference is then the student "
        "with its adapters disabled, and checkpoints hold the adapters and the value head.",
        "lora",
    )
    lora_r: int = option(16, "Rank of the LoRA adapters.", "lora", ge=1, le=4096)
    lora_alpha: int = option(32, "LoRA scaling alpha (the update is scaled by alpha / r).", "lora", ge=1, le=65_536)
    lora_dropout: float = option(0.05, "Dropout on the adapters' input during updates.", "lora", ge=0.0, lt=1.0)
    lora_target_modules: str = option(
        "auto",
        "Modules that get adapters: 'auto' (peft's default for the model family, else every linear layer), "
        "'all-linear', or a comma-separated list of module names (e.g. q_proj,v_proj).",
        "lora",
    )

    # --- memory
    gradient_checkpointing: bool = option(
        False,
        "Recompute the student's activations in the backward pass instead of keeping them (less memory, slower).",
        "memory",
    )
    frozen_dtype: str = option(
        "auto",
        "Precision of the frozen models (teacher, reward model): auto (the student's), float32, bfloat16 or float16.",
        "memory",
        choices=FROZEN_DTYPES,
    )
    memory_check: str = option(
        "refuse",
        "Before a run starts, estimate its memory against the device's: refuse a run that will not fit, warn, or off.",
        "memory",
        choices=("refuse", "warn", "off"),
    )

    # --- run control
    output_dir: str = option("outputs/tnd-run", "Folder for checkpoints, metrics and logs.", "run")
    save_steps: int = option(
        50, "Save a checkpoint every this many steps; 0 saves only at the end.", "run", ge=0, le=MAX_STEPS
    )
    save_total_limit: int = option(
        2, "Checkpoints kept on disk (oldest removed first); 0 keeps all.", "run", ge=0, le=100_000
    )
    logging_steps: int = option(1, "Emit step statistics every this many steps.", "run", ge=1, le=MAX_STEPS)
    eval_steps: int = option(0, "Run the evaluator every this many steps; 0 turns it off.", "run", ge=0, le=MAX_STEPS)
    eval_word_list: str = option(
        "", "Words to follow at each evaluation besides the bundle's vocabulary: a text file, one word a line.", "run"
    )
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
    seed: int = option(0, "Random seed of the run.", "run", ge=0, le=MAX_SEED)

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
        problems += optimizer_errors(self.optimizer_name, self.optimizer_kwargs)
        problems += scheduler_errors(self.scheduler_name, self.scheduler_kwargs)
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
        problems += lora_target_errors(self.lora_target_modules)
        if self.patience_min_delta > 0 and self.patience == 0:
            problems.append(
                ConfigError("patience_min_delta", self.patience_min_delta, "has no effect unless patience > 0")
            )
        return problems


def lora_module_names(value: str) -> list[str]:
    """The module names of a lora_target_modules list ('q_proj, v_proj' -> ['q_proj', 'v_proj'])."""
    return [name.strip() for name in value.split(",") if name.strip()]


def lora_target_errors(value: str) -> list[ConfigError]:
    """Problems with lora_target_modules found without the model: 'auto', 'all-linear' or module names.

    Whether the names exist in the student is checked when the adapters are added
    (tnd_core.models.student.add_lora_adapters)."""
    if value in LORA_TARGET_KEYWORDS:
        return []
    names = lora_module_names(value)
    bad = [name for name in names if not LORA_MODULE_NAME.match(name)]
    if not names or bad:
        allowed = (
            "must be 'auto', 'all-linear' or a comma-separated list of module names "
            f"(letters, digits, '_' and '.'; e.g. q_proj,v_proj){f'; {bad[0]!r} is not one' if bad else ''}"
        )
        return [ConfigError("lora_target_modules", value, allowed)]
    return []


def is_known_optimizer(name: str) -> bool:
    """True for the built-in names and for any torch.optim optimizer class name."""
    if name in OPTIMIZER_NAMES:
        return True
    import torch

    cls = getattr(torch.optim, name, None)
    return isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)


def _optimizer_class(name: str) -> Any:
    """The class the trainer builds for `name` (as engine.build_optimizer does); imported here, on demand,
    so that importing the config stays light."""
    if name == "adafactor":
        from transformers.optimization import Adafactor

        return Adafactor
    import torch

    return {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}.get(name) or getattr(
        torch.optim, name
    )


def _keyword_names(function: Any, skipped: tuple[str, ...]) -> list[str] | None:
    """The keyword arguments `function` takes, less `skipped`; None when it takes any (**kwargs)."""
    parameters = inspect.signature(function).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in parameters if p.kind in kinds and p.name not in skipped]


def _unknown_keys_error(field_name: str, given: dict, allowed: list[str] | None, owner: str) -> ConfigError | None:
    """A ConfigError naming the first key of `given` not in `allowed` (None: any key is allowed)."""
    unknown = [key for key in given if allowed is not None and key not in allowed]
    if not unknown:
        return None
    listed = ", ".join(allowed) if allowed else "none"
    return ConfigError(
        field_name, given, f"{short_repr(unknown[0])} is not an argument of {owner}; its arguments: {listed}"
    )


def optimizer_errors(name: str, kwargs: dict[str, Any]) -> list[ConfigError]:
    """Problems with an optimizer name and its keyword arguments, found without building it.

    The name must be a built-in name or a torch.optim class whose step() needs no closure (LBFGS's does: the
    PPO update calls step() without one). The keys of `kwargs` must be arguments of the class's constructor;
    `lr` is learning_rate's.
    """
    if not is_known_optimizer(name):
        allowed = (
            f"must be one of {', '.join(OPTIMIZER_NAMES)} or the name of a torch.optim optimizer class (e.g. RMSprop)"
        )
        return [ConfigError("optimizer_name", name, allowed)]
    if name not in OPTIMIZER_NAMES:
        import torch

        cls = getattr(torch.optim, name)
        if cls is torch.optim.Optimizer:
            return [ConfigError("optimizer_name", name, "is the abstract base class; name an optimizer (e.g. RMSprop)")]
        closure = inspect.signature(cls.step).parameters.get("closure")
        if closure is not None and closure.default is inspect.Parameter.empty:
            return [
                ConfigError(
                    "optimizer_name",
                    name,
                    "its step() needs a closure that re-evaluates the loss, which PPO updates do not provide; "
                    f"use one of {', '.join(OPTIMIZER_NAMES)} or another torch.optim class (e.g. RMSprop)",
                )
            ]
        if name in SPARSE_ONLY_OPTIMIZERS:
            return [ConfigError("optimizer_name", name, "needs sparse gradients; the student's gradients are dense")]
    if not kwargs:
        return []
    if "lr" in kwargs:
        return [ConfigError("optimizer_kwargs", kwargs, "must not set 'lr': set learning_rate instead")]
    allowed = _keyword_names(_optimizer_class(name).__init__, ("self", "params", "lr"))
    problem = _unknown_keys_error("optimizer_kwargs", kwargs, allowed, f"optimizer {name!r}")
    return [problem] if problem else []


def scheduler_errors(name: str, kwargs: dict[str, Any]) -> list[ConfigError]:
    """Problems with the keys of scheduler_kwargs: each must be an argument that transformers' get_scheduler
    passes on to the `name` schedule (constant and constant_with_warmup take none)."""
    if not kwargs or name not in SCHEDULER_NAMES:
        return []
    if name in SCHEDULERS_WITHOUT_KWARGS:
        allowed: list[str] | None = []
    else:
        from transformers.optimization import TYPE_TO_SCHEDULER_FUNCTION, SchedulerType

        allowed = _keyword_names(TYPE_TO_SCHEDULER_FUNCTION[SchedulerType(name)], SCHEDULER_ARGUMENTS_SET_HERE)
    problem = _unknown_keys_error("scheduler_kwargs", kwargs, allowed, f"scheduler {name!r}")
    return [problem] if problem else []


# ---------------------------------------------------------------------- field metadata
def _type_of(annotation: Any) -> tuple[str, bool]:
    optional = False
    args = typing.get_args(annotation)
    if args and type(None) in args:
        optional = True
        annotation = next(a for a in args if a is not type(None))
    kinds = {int: "int", float: "float", bool: "bool", str: "str", dict: "dict"}
    return kinds[typing.get_origin(annotation) or annotation], optional


@functools.cache
def _field_types(cls: type[ConfigBase]) -> dict[str, tuple[str, bool]]:
    # resolving the annotations costs milliseconds and every config construction asks: once per class
    hints = typing.get_type_hints(cls)
    return {f.name: _type_of(hints[f.name]) for f in fields(cls)}


def field_specs(cls: type[ConfigBase] = CustomPPOConfig) -> list[FieldSpec]:
    """Metadata of every option of `cls`, in declaration order."""
    types = _field_types(cls)
    specs = []
    for f in fields(cls):
        kind, optional = types[f.name]
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
    if spec.type == "float" and not _is_finite_number(value):
        return ConfigError(spec.name, value, f"must be a finite number {spec.bounds_text()}".strip())
    if spec.type == "str":
        if not isinstance(value, str):
            return ConfigError(spec.name, value, "must be a string")
        if len(value) > MAX_TEXT_CHARS:
            return ConfigError(spec.name, value, f"must be at most {MAX_TEXT_CHARS:,} characters long")
        if "\x00" in value:
            return ConfigError(spec.name, value, "must not contain NUL characters")
    if spec.type == "dict":
        if not isinstance(value, dict):
            return ConfigError(spec.name, value, "must be a mapping (JSON object)")
        problem = _json_like_problem(value)
        if problem:
            return ConfigError(spec.name, value, problem)
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


def _is_finite_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond float's range
        return False


def _json_like_problem(value: dict) -> str | None:
    """Why `value` is not a small JSON object (string keys; null, booleans, numbers, strings, lists and objects
    within the MAX_KWARGS_* limits), or None when it is one."""
    budget = MAX_KWARGS_ITEMS
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        budget -= 1
        if budget < 0:
            return f"must hold at most {MAX_KWARGS_ITEMS:,} values in all"
        if depth > MAX_KWARGS_DEPTH:
            return f"must nest at most {MAX_KWARGS_DEPTH} levels deep"
        if isinstance(item, dict):
            if not all(isinstance(key, str) for key in item):
                return "keys must be strings"
            pending.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            pending.extend((child, depth + 1) for child in item)
        elif isinstance(item, str):
            if len(item) > MAX_TEXT_CHARS:
                return f"strings in it must be at most {MAX_TEXT_CHARS:,} characters long"
        elif isinstance(item, int) and not isinstance(item, bool):
            if abs(item) > MAX_KWARGS_INT:
                return f"integers in it must be within ±{MAX_KWARGS_INT}"
        elif isinstance(item, float):
            if not math.isfinite(item):
                return "numbers in it must be finite"
        elif item is not None and not isinstance(item, bool):
            return (
                f"values must be JSON: null, true/false, numbers, strings, lists or objects, not {type(item).__name__}"
            )
    return None


def _normalise_keys(cls: type[ConfigBase], values: dict[str, Any]) -> dict[str, Any]:
    """`values` keyed by field names: aliases mapped, replaced and unknown names refused with a ConfigError."""
    if not isinstance(values, dict):
        raise ConfigError("config", values, "must be a mapping of option names to values")
    known = {f.name for f in fields(cls)}
    out: dict[str, Any] = {}
    given_as: dict[str, str] = {}
    for key, value in values.items():
        if not isinstance(key, str):
            raise ConfigError("config", key, "option names must be strings")
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


# libyaml's parser when PyYAML has it (ten times faster); both build only plain types.
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error in one line: what is wrong and where (PyYAML's own message spans lines with a snippet)."""
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None) or str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{problem}{where}"


def _yaml_document(text: str) -> Any:
    """The one YAML document of `text`, checked event by event (no aliases, depth, one document) before a
    node is built, so that no input makes the composer recurse deeply or expand aliases."""
    depth = documents = 0
    for event in yaml.parse(text, Loader=_SAFE_LOADER):
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            # A few hundred bytes of aliases can expand to billions of nodes ('billion laughs'),
            # and a config file never needs them.
            mark = event.start_mark
            raise ConfigError(
                "config",
                text,
                "anchors and aliases (&name, *name) are not accepted in config files "
                f"(line {mark.line + 1}, column {mark.column + 1})",
            )
        if isinstance(event, yaml.DocumentStartEvent):
            documents += 1
            if documents > 1:
                raise ConfigError("config", text, "must hold one YAML document, not several (no '---' between them)")
        elif isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_CONFIG_DEPTH:
                raise ConfigError("config", text, f"must nest at most {MAX_CONFIG_DEPTH} levels deep")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
    return yaml.load(text, Loader=_SAFE_LOADER)


def _depth(value: Any) -> int:
    """Nesting depth of lists and dicts in `value` (a scalar is 0), without recursion."""
    deepest, pending = 0, [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, (dict, list)):
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_CONFIG_DEPTH:
                return deepest
            pending.extend((child, depth) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def parse_config_text(text: str | bytes, fmt: str = "yaml") -> dict[str, Any]:
    """The mapping of options in config text (YAML, or JSON when `fmt` is 'json'), for any class's `from_dict`.

    Safe on text from strangers: refused with a ConfigError naming 'config' are text over MAX_CONFIG_CHARS
    characters, bytes that are not UTF-8, invalid YAML/JSON, YAML anchors and aliases, several YAML documents,
    nesting deeper than MAX_CONFIG_DEPTH, and documents that are not a mapping (`0`, `false`, `[]`, a string).
    An empty document (or `null`) is an empty mapping: every option at its default.
    """
    if fmt not in ("yaml", "json"):
        raise ConfigError("config", fmt, "format must be 'yaml' or 'json'")
    if isinstance(text, bytes):
        if len(text) > MAX_CONFIG_CHARS:
            raise ConfigError("config", f"{len(text):,} bytes", f"must be at most {MAX_CONFIG_CHARS:,} bytes")
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ConfigError("config", text, f"must be UTF-8 text: byte {exc.start} is not") from None
    if not isinstance(text, str):
        raise ConfigError("config", text, f"must be {fmt.upper()} text")
    if len(text) > MAX_CONFIG_CHARS:
        raise ConfigError("config", f"{len(text):,} characters", f"must be at most {MAX_CONFIG_CHARS:,} characters")
    try:
        if fmt == "json":
            values = json.loads(text)
        else:
            values = _yaml_document(text)
    except ConfigError:
        raise
    except yaml.YAMLError as exc:
        raise ConfigError("config", text, f"must be valid YAML: {_yaml_problem(exc)}") from None
    except RecursionError:
        raise ConfigError("config", text, f"must nest at most {MAX_CONFIG_DEPTH} levels deep") from None
    except ValueError as exc:  # JSON syntax, and values YAML cannot build (a date 2024-13-45, a 5000-digit int)
        problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "integer string conversion" in problem:
            problem = "it holds an integer too long to read (over 4300 digits), far beyond any option's range"
        raise ConfigError("config", text, f"must be valid {fmt.upper()}: {short_text(problem)}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        kind = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list"}
        found = kind.get(type(values), type(values).__name__)
        raise ConfigError("config", values, f"must be a mapping of option names to values, not {found}")
    if _depth(values) > MAX_CONFIG_DEPTH:
        raise ConfigError("config", text, f"must nest at most {MAX_CONFIG_DEPTH} levels deep")
    return values


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping of options in a YAML or JSON (.json) config file; refuses what `parse_config_text` refuses,
    files over MAX_CONFIG_CHARS bytes (without reading them) and unreadable files, naming 'config'."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("config", str(path), "no such file")
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_CHARS:
            raise ConfigError("config", str(path), f"is {size:,} bytes; config files are at most {MAX_CONFIG_CHARS:,}")
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError("config", str(path), f"cannot be read: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError("config", str(path), f"must be UTF-8 text: byte {exc.start} is not") from None
    return parse_config_text(text, "json" if path.suffix.lower() == ".json" else "yaml")


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
                return _parse_int(spec, text)
            if spec.type == "float":
                return float(text)
            if spec.type == "dict":
                value = json.loads(text) if text else {}
                if not isinstance(value, dict):
                    raise ValueError
                return value
        except ConfigError:
            raise
        except ValueError:
            allowed = {"bool": "true or false", "int": "an integer", "float": "a number", "dict": "a JSON object"}
            raise ConfigError(spec.name, raw, f"must be {allowed[spec.type]}") from None
        return raw
    if spec.type == "float" and isinstance(raw, int) and not isinstance(raw, bool):
        try:
            return float(raw)
        except OverflowError:  # beyond float's range: kept, so that validation refuses it as out of range
            return raw
    if spec.type == "int" and isinstance(raw, float) and raw.is_integer():
        return int(raw)
    return raw


def _parse_int(spec: FieldSpec, text: str) -> int:
    """int(text); a run of digits too long for int() (Python's 4300-digit limit) is out of range, not a typo."""
    try:
        return int(text)
    except ValueError:
        if re.fullmatch(r"[+-]?\d[\d_]*", text):
            raise ConfigError(spec.name, text, f"must be an integer {spec.bounds_text()}".strip()) from None
        raise


def add_config_arguments(parser: argparse.ArgumentParser, cls: type[ConfigBase] = CustomPPOConfig) -> None:
    """Add one `--name` flag per option of `cls` (and per alias); unset flags stay absent from the parsed namespace."""
    for group_key, specs in specs_by_group(cls).items():
        group = parser.add_argument_group(cls.GROUPS[group_key])
        for spec in specs:
            flags = [f"--{spec.name}"] + [f"--{alias}" for alias, target in cls.ALIASES.items() if target == spec.name]
            choices = f" Choices: {', '.join(spec.choices)}." if spec.choices else ""
            bounds = f" Allowed: {spec.bounds_text()}." if spec.bounds_text() else ""
            # An empty default goes unsaid: the help text says what empty means, or that the option is required.
            default = "" if spec.default in ("", None) else f" (default: {spec.default!r})"
            group.add_argument(
                *flags,
                dest=spec.name,
                default=argparse.SUPPRESS,
                metavar=spec.type.upper(),
                help=f"{spec.help}{choices}{bounds}{default}",
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
