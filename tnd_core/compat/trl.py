"""The classic TRL 0.x PPO loop, unchanged, on CustomPPOTrainer.

Code written for TRL 0.11's `PPOTrainer` (removed from TRL since) keeps its calls and names:

    from tnd_core.compat.trl import AutoModelForCausalLMWithValueHead, PPOConfig, PPOTrainer

    config = PPOConfig(model_name="my-model", learning_rate=1.41e-5, batch_size=16, mini_batch_size=4)
    model = AutoModelForCausalLMWithValueHead.from_pretrained(config.model_name)
    trainer = PPOTrainer(config, model, None, tokenizer, dataset=dataset, data_collator=collator)
    for batch in trainer.dataloader:
        responses = trainer.generate(batch["input_ids"], return_prompt=False, **generation_kwargs)
        scores = [...]  # one number (or 0-d tensor) per response
        stats = trainer.step(batch["input_ids"], responses, scores)
        trainer.log_stats(stats, batch, scores)

Nothing here computes PPO: `PPOTrainer` is a CustomPPOTrainer whose defaults are TRL's (plain PPO against a
frozen copy of the initial model, Adam, no gradient clipping, batches of 128), and `step` is
CustomPPOTrainer.step, which reproduces TRL 0.11.4's update under the conditions in docs/ALGORITHM.md. What
behaves differently is refused with a TndError that says what to do instead; docs/MIGRATING_FROM_TRL.md maps
every name.
"""

from __future__ import annotations

import copy
import inspect
import math
import random
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from safetensors import safe_open
from torch import nn

from tnd_core import stats as S
from tnd_core.config import CustomPPOConfig
from tnd_core.errors import ConfigError, TndError
from tnd_core.events import RolloutSample
from tnd_core.models import StudentModel, ValueHead
from tnd_core.models.student import VALUE_HEAD_FILE, hidden_size_of
from tnd_core.trainers.ppo_trainer.batch import left_pad
from tnd_core.trainers.ppo_trainer.ppo import CustomPPOTrainer
from tnd_core.trainers.ppo_trainer.rollout import SAMPLES_SHOWN
from tnd_core.trainers.ppo_trainer.sharded_generation import unwrapped_for_generation

__all__ = [
    "AutoModelForCausalLMWithValueHead",
    "LengthSampler",
    "PPOConfig",
    "PPOTrainer",
    "create_reference_model",
    "respond_to_batch",
]

# TRL 0.11.4's PPOConfig defaults where they differ from CustomPPOConfig's: plain PPO (no teacher) against a
# frozen copy of the initial model, torch's Adam without gradient clipping, and TRL's batch sizes.
CLASSIC_DEFAULTS: dict[str, Any] = {
    "steps": 20000,
    "batch_size": 128,
    "mini_batch_size": 128,
    "optimizer_name": "adam",
    "max_grad_norm": None,
    "kl_reference": "initial_student",
    "distill_coef": 0.0,
    "use_teacher_demos": False,
}
# Fields TRL 0.11's trainer only read to label tracker runs, or that the user's script read back
# (`config.model_name`): kept as attributes with TRL's defaults, used by nothing here.
LABELS: dict[str, Any] = {
    "exp_name": "tnd",
    "task_name": None,
    "model_name": "gpt2",
    "query_dataset": "imdb",
    "reward_model": "sentiment-analysis:lvwerra/distilbert-imdb",
    "tracker_project_name": "trl",
}
# Values of TRL-only fields that change nothing (TRL's defaults, or what TRL filled in for a decoder-only
# model); other values are left for CustomPPOConfig to refuse with its advice.
NO_OP_VALUES: dict[str, tuple[Any, ...]] = {
    "tracker_kwargs": ({},),
    "accelerator_kwargs": ({},),
    "project_kwargs": ({},),
    "push_to_hub_if_best_kwargs": ({},),
    "forward_batch_size": (None,),
    "world_size": (None,),
    "compare_steps": (1,),
    "is_encoder_decoder": (None, False),
    "is_peft_model": (None, False),
    "backward_batch_size": (None,),
    "global_backward_batch_size": (None,),
    "global_batch_size": (None,),
    "dataset_num_proc": (None,),
}
TRACKERS = {None: "none", "wandb": "wandb", "tensorboard": "tensorboard", "trackio": "trackio", "all": "all"}
# The value head's options of TRL's AutoModelForCausalLMWithValueHead.from_pretrained.
VALUE_HEAD_OPTIONS = ("summary_dropout_prob", "v_head_initializer_range", "v_head_init_strategy")


class PPOConfig(CustomPPOConfig):
    """CustomPPOConfig with TRL 0.11's defaults, taking TRL's field names.

    `log_with` sets `report_to`; `model_name`, `query_dataset`, `reward_model`, `exp_name`, `task_name` and
    `tracker_project_name` are kept as labels; `remove_unused_columns` acts on the trainer's dataloader as in
    TRL; TRL-only fields at values that change nothing are accepted; everything else is CustomPPOConfig's.
    """

    def __init__(self, **values: Any) -> None:
        values = dict(values)
        labels = {name: values.pop(name, default) for name, default in LABELS.items()}
        remove_unused_columns = values.pop("remove_unused_columns", True)
        if not isinstance(remove_unused_columns, bool):
            raise ConfigError("remove_unused_columns", remove_unused_columns, "must be true or false")
        if "log_with" in values:
            log_with = values.pop("log_with")
            if "report_to" in values:
                raise ConfigError("log_with", log_with, "log_with and report_to name the same option; give one")
            if log_with not in TRACKERS:
                allowed = "must be None, 'wandb', 'tensorboard', 'trackio' or 'all' (the trackers supported here)"
                raise ConfigError("log_with", log_with, allowed)
            values["report_to"] = TRACKERS[log_with]
        for name, no_ops in NO_OP_VALUES.items():
            if name in values and name in CustomPPOConfig.REPLACED and any(values[name] == v for v in no_ops):
                del values[name]
        super().__init__(**{**CLASSIC_DEFAULTS, **values})
        for name, value in labels.items():
            setattr(self, name, value)
        self.remove_unused_columns = remove_unused_columns

    def replace(self, **changes: Any) -> "PPOConfig":
        """A copy with some options changed (validated); the labels and remove_unused_columns carry over."""
        kept = {name: getattr(self, name) for name in (*LABELS, "remove_unused_columns") if name not in changes}
        return type(self)(**{**self.to_dict(), **kept, **changes})


class AutoModelForCausalLMWithValueHead(StudentModel):
    """A causal LM with a value head: TRL's class name, tnd_core's StudentModel.

    `from_pretrained` loads a causal LM by path or hub id (transformers' keyword arguments pass through) and
    the value head saved beside it, by tnd_core (`value_head.safetensors`) or by TRL (`v_head.*` weights in
    `model.safetensors`). The call returns `(logits, values)`, not TRL's `(logits, loss, values)`.
    """

    def __init__(self, pretrained_model: nn.Module, tokenizer: Any = None, **value_head_options: Any):
        super().__init__(pretrained_model, tokenizer, _value_head(pretrained_model, value_head_options))

    @classmethod
    def from_pretrained(  # type: ignore[override]
        cls, pretrained_model_name_or_path: str | Path | nn.Module, *model_args: Any, **kwargs: Any
    ) -> "AutoModelForCausalLMWithValueHead":
        """Load (or wrap) a causal LM and give it a value head, as TRL's `from_pretrained` did."""
        if model_args:
            raise TndError("AutoModelForCausalLMWithValueHead.from_pretrained: pass model options as keywords")
        if kwargs.pop("peft_config", None) is not None:
            raise TndError(
                "peft_config: LoRA is configured on the trainer here, not on the model; drop peft_config and set "
                "use_lora (with lora_r, lora_alpha, lora_dropout, lora_target_modules) in the config"
            )
        if any(kwargs.get(flag) for flag in ("load_in_8bit", "load_in_4bit")):
            raise TndError("load_in_8bit / load_in_4bit: quantised students are not supported; load in bf16 instead")
        head_options = {name: kwargs.pop(name) for name in VALUE_HEAD_OPTIONS if name in kwargs}
        if isinstance(pretrained_model_name_or_path, nn.Module):
            return cls(pretrained_model_name_or_path, kwargs.pop("tokenizer", None), **head_options)
        student = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        head = _value_head(student.pretrained_model, head_options)
        folder = Path(pretrained_model_name_or_path)
        if not (folder / VALUE_HEAD_FILE).is_file():  # a head saved by tnd_core was loaded; else TRL's, or new
            student.v_head = head
            saved_by_trl = _saved_value_head(folder)
            if saved_by_trl:
                student.v_head.load_state_dict(saved_by_trl)
        return student

    @torch.no_grad()
    def generate(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any
    ) -> torch.Tensor:
        """The causal LM's `generate`; without an attention mask every token counts, as in TRL's wrapper."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        return super().generate(input_ids, attention_mask, **kwargs)


def _value_head(model: nn.Module, options: dict[str, Any]) -> ValueHead:
    """A value head over `model`'s hidden size, initialised as TRL's `v_head_init_strategy` asks."""
    dropout = options.get("summary_dropout_prob")
    if dropout:
        raise TndError(
            f"summary_dropout_prob={dropout}: the value head has no dropout here (PPO's ratios and values need a "
            "deterministic model); drop the option or set it to 0"
        )
    strategy = options.get("v_head_init_strategy")
    head = ValueHead(hidden_size_of(model))
    if strategy == "normal":
        nn.init.normal_(head.summary.weight, std=float(options.get("v_head_initializer_range", 0.2)))
        nn.init.zeros_(head.summary.bias)
    elif strategy is not None:
        raise ConfigError("v_head_init_strategy", strategy, "must be None (a small normal init) or 'normal'")
    return head


def _saved_value_head(folder: Path) -> dict[str, torch.Tensor]:
    """The value head TRL saved inside `model.safetensors` (keys `v_head.summary.*`), if the folder has one."""
    weights = folder / "model.safetensors"
    if not weights.is_file():
        return {}
    with safe_open(str(weights), framework="pt") as f:
        return {key.removeprefix("v_head."): f.get_tensor(key) for key in f.keys() if key.startswith("v_head.")}


def create_reference_model(
    model: nn.Module, num_shared_layers: int | None = None, pattern: str | None = None
) -> nn.Module:
    """A frozen copy of `model` in eval mode: the reference of the KL penalty."""
    if num_shared_layers is not None or pattern is not None:
        raise TndError(
            "create_reference_model: sharing layers with the reference is not supported; call it without "
            "num_shared_layers/pattern (a full frozen copy), or pass ref_model=None to PPOTrainer, which makes one"
        )
    reference = copy.deepcopy(model)
    reference.requires_grad_(False)
    return reference.eval()


class LengthSampler:
    """A response length drawn uniformly from [min_value, max_value) for each generate call (TRL's)."""

    def __init__(self, min_value: int, max_value: int):
        if not 0 < min_value < max_value:
            raise ConfigError("LengthSampler", (min_value, max_value), "needs 0 < min_value < max_value")
        self.values = list(range(min_value, max_value))

    def __call__(self) -> int:
        return random.choice(self.values)


@torch.no_grad()
def respond_to_batch(
    model: nn.Module, queries: torch.Tensor, txt_len: int = 20, top_k: int = 0, top_p: float = 1.0
) -> torch.Tensor:
    """Sample exactly `txt_len` tokens after each row of `queries` [B, T] (no stop at EOS), as TRL's helper."""
    from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

    lm = getattr(model, "pretrained_model", model)
    warpers = ([TopKLogitsWarper(top_k)] if top_k else []) + ([TopPLogitsWarper(top_p)] if top_p < 1.0 else [])
    input_ids = queries
    for _ in range(txt_len):
        logits = lm(input_ids=input_ids).logits[:, -1, :]
        for warp in warpers:
            logits = warp(input_ids, logits)
        next_token = torch.multinomial(torch.softmax(logits.float(), dim=-1), num_samples=1)
        input_ids = torch.cat([input_ids, next_token], dim=-1)
    return input_ids[:, -txt_len:]


class _ScheduleEachStep:
    """A user's learning-rate scheduler stepped once per `step()` call, as TRL did, instead of per update.

    The engine calls `step()` after every optimizer update: that is a no-op here; PPOTrainer.step calls
    `step_once()`.
    """

    def __init__(self, scheduler: Any):
        self.scheduler = scheduler

    def step(self) -> None:
        """Nothing: the engine's per-update call."""

    def step_once(self) -> None:
        """One step of the user's scheduler (once per PPO step)."""
        self.scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scheduler.load_state_dict(state)

    def get_last_lr(self) -> list[float]:
        return self.scheduler.get_last_lr()


class PPOTrainer(CustomPPOTrainer):
    """TRL 0.11's `PPOTrainer(config, model, ref_model, tokenizer, dataset, optimizer, data_collator, ...)`.

    `generate`, `step`, `log_stats`, `save_pretrained`, `dataloader`, `prepare_dataloader`, `current_device`, `model`,
    `ref_model`, `tokenizer`, `optimizer`, `lr_scheduler`, `accelerator` and `kl_ctl` behave as TRL's did;
    `step` is CustomPPOTrainer.step. `log_stats` emits a StepEvent and a RolloutEvent to the trainer's
    callbacks and `output_dir/metrics.jsonl`, and logs to the tracker `log_with` names.
    """

    def __init__(
        self,
        config: CustomPPOConfig | None = None,
        model: Any = None,
        ref_model: Any = None,
        tokenizer: Any = None,
        dataset: Any = None,
        optimizer: torch.optim.Optimizer | None = None,
        data_collator: Callable | None = None,
        num_shared_layers: int | None = None,
        lr_scheduler: Any = None,
        training_data_collator: Callable | None = None,
        **tnd_options: Any,
    ):
        if num_shared_layers is not None:
            raise TndError(
                "num_shared_layers: sharing layers with the reference is not supported; drop it "
                "(the reference is a full frozen copy of the initial model)"
            )
        if training_data_collator is not None:
            raise TndError(
                "training_data_collator: step() pads queries and responses itself (left-padded queries, "
                "right-padded responses, position ids from the first real token); drop it"
            )
        if model is None:
            raise ConfigError("model", None, "is required: an AutoModelForCausalLMWithValueHead or a causal LM")
        if tokenizer is not None and isinstance(model, StudentModel):
            model.tokenizer = tokenizer  # the tokenizer given here wins over one loaded with the model, as in TRL
        self._user_optimizer = optimizer
        self._user_scheduler = _ScheduleEachStep(lr_scheduler) if lr_scheduler is not None else None
        super().__init__(student=model, config=config or PPOConfig(), tokenizer=tokenizer, **tnd_options)
        if ref_model is not None:
            self.ref_model = _as_reference(ref_model, self.tokenizer).to(self.accelerator.device)
        self.dataset = dataset
        self.data_collator = data_collator
        self.dataloader = self.prepare_dataloader(dataset, data_collator) if dataset is not None else None
        self._started: float | None = None
        if self.config.report_to != "none":
            flat = {k: v for k, v in self.config.to_dict().items() if not isinstance(v, dict)}
            project = getattr(self.config, "tracker_project_name", "tnd")
            self.accelerator.init_trackers(project, config=flat)

    # ------------------------------------------------------------------ what TRL's constructor took
    def _setup_optimizer(self) -> torch.optim.Optimizer:
        if self._user_optimizer is not None:
            return self._user_optimizer
        return super()._setup_optimizer()

    def _setup_scheduler(self, optimizer: torch.optim.Optimizer) -> Any:
        if self._user_scheduler is not None:
            return self._user_scheduler
        return super()._setup_scheduler(optimizer)

    @property
    def current_device(self) -> torch.device:
        """The device this process trains on."""
        return self.accelerator.device

    @property
    def current_step(self) -> int:
        """PPO steps taken through `step()`."""
        return self.global_step

    def prepare_dataloader(self, dataset: Any, data_collator: Callable | None = None) -> Any:
        """Shuffled batches of `batch_size` items (the last incomplete one dropped), split across processes."""
        if getattr(self.config, "remove_unused_columns", False) and hasattr(dataset, "remove_columns"):
            dataset = self._remove_unused_columns(dataset)
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=self.config.batch_size, collate_fn=data_collator, shuffle=True, drop_last=True
        )
        return self.accelerator.prepare(loader)

    def _remove_unused_columns(self, dataset: Any) -> Any:
        """The dataset without the columns the model's forward does not take (but 'label', 'query', 'response')."""
        lm = getattr(self.engine.unwrapped(), "pretrained_model", self.engine.unwrapped())
        keep = set(inspect.signature(lm.forward).parameters) | {"label", "query", "response"}
        unused = [name for name in dataset.column_names if name not in keep]
        return dataset.remove_columns(unused) if unused else dataset

    # ------------------------------------------------------------------ the loop's calls
    @torch.no_grad()
    def generate(
        self,
        query_tensor: torch.Tensor | Sequence[torch.Tensor],
        length_sampler: Callable[[], int] | None = None,
        batch_size: int = 4,
        return_prompt: bool = True,
        generate_ref_response: bool = False,
        remove_padding: bool = True,
        **generation_kwargs: Any,
    ) -> Any:
        """Continue one query (a 1-D tensor: returns [1, L]) or a list of them (returns a list of 1-D tensors).

        Lists are generated `batch_size` at a time, left-padded; each response is cut after its first EOS when
        `remove_padding`. `return_prompt=False` returns the responses only. `generate_ref_response=True` also
        returns the reference model's responses.
        """
        single = isinstance(query_tensor, torch.Tensor)
        if single and query_tensor.ndim != 1:
            raise ConfigError("query_tensor", tuple(query_tensor.shape), "must be a 1-D tensor or a list of them")
        queries = [query_tensor] if single else list(query_tensor)
        bad = next((i for i, q in enumerate(queries) if not isinstance(q, torch.Tensor) or q.ndim != 1), None)
        if bad is not None or not queries:
            raise ConfigError("query_tensor", f"item {bad}", "must be a non-empty list of 1-D tensors of token ids")
        if generate_ref_response and not hasattr(self.ref_model, "generate"):
            raise TndError(
                "generate_ref_response: the reference here does not generate (with kl_reference=teacher there is "
                "none; with use_lora it is the model with its adapters switched off); drop generate_ref_response"
            )
        if single:
            batch_size, remove_padding = 1, False  # TRL generated a single query unpadded and uncut
        options = (length_sampler, batch_size, return_prompt, remove_padding, generation_kwargs)
        with unwrapped_for_generation(self.accelerator, self.model) as student:
            outputs = [self._generate(student, queries, *options)]
        if generate_ref_response:
            outputs.append(self._generate(self.ref_model, queries, *options))
        if single:
            outputs = [out[0].unsqueeze(0) for out in outputs]
        return (outputs[0], outputs[1]) if generate_ref_response else outputs[0]

    def _generate(
        self,
        model: Any,
        queries: list[torch.Tensor],
        length_sampler: Callable[[], int] | None,
        batch_size: int,
        return_prompt: bool,
        remove_padding: bool,
        generation_kwargs: dict[str, Any],
    ) -> list[torch.Tensor]:
        pad, eos, device = self.rollouts.pad_token_id, self.rollouts.eos_token_id, self.accelerator.device
        kwargs = {"pad_token_id": pad, **generation_kwargs}
        was_training = self.model.training
        self.model.eval()
        outputs = []
        for start in range(0, len(queries), batch_size):
            chunk = [q.to(device) for q in queries[start : start + batch_size]]
            if length_sampler is not None:
                kwargs["max_new_tokens"] = int(length_sampler())
            ids, attn = left_pad(chunk, pad, device)
            with self.accelerator.autocast():
                generated = model.generate(ids, attn, **kwargs)
            for query, row in zip(chunk, generated):
                response = row[ids.shape[1] :]
                if remove_padding and eos is not None and bool((response == eos).any()):
                    response = response[: int((response == eos).nonzero()[0, 0]) + 1]
                outputs.append(torch.cat([query, response]) if return_prompt else response)
        self.model.train(was_training)
        return outputs

    def step(  # type: ignore[override]
        self,
        queries: Sequence[torch.Tensor],
        responses: Sequence[torch.Tensor],
        scores: Any,
        response_masks: Sequence[torch.Tensor] | None = None,
    ) -> dict[str, float]:
        """One PPO step on the samples (CustomPPOTrainer.step), with TRL's extra token statistics."""
        if response_masks is not None:
            raise TndError(
                "response_masks: not supported; step() trains on each response up to and including its first EOS. "
                "Cut the responses to the tokens you want trained on and drop response_masks"
            )
        started = time.perf_counter()
        if self._started is None:
            self._started = started
        stats = super().step(queries, responses, scores)
        self.global_step += 1
        if self._user_scheduler is not None:
            self._user_scheduler.step_once()
        stats.update(_length_stats(queries, responses, self.engine.reduce_mean, self.accelerator.device))
        stats["time/ppo/total"] = time.perf_counter() - started
        return stats

    def log_stats(
        self,
        stats: dict[str, Any],
        batch: dict[str, Any],
        rewards: Any,
        columns_to_log: Sequence[str] = ("query", "response"),
    ) -> None:
        """Emit the step's statistics, with the rewards' mean and std over all processes, and a few samples."""
        if len(columns_to_log) != 2:
            raise ConfigError("columns_to_log", columns_to_log, "must name two columns: the prompt and the response")
        if isinstance(rewards, torch.Tensor):
            local = rewards.detach().float().flatten()
        else:
            local = torch.stack([torch.as_tensor(r, dtype=torch.float32).reshape(()) for r in rewards])
        everyone = self.accelerator.gather(local.to(self.accelerator.device)).flatten()
        logged = {name: number for name, value in stats.items() if (number := _scalar(value)) is not None}
        logged[S.REWARD_MEAN] = float(everyone.mean())
        logged[S.REWARD_STD] = float(everyone.std()) if len(everyone) > 1 else 0.0
        prompt_column, response_column = columns_to_log
        samples = []
        if prompt_column in batch and response_column in batch:
            rows = zip(batch[prompt_column], batch[response_column], local.tolist())
            samples = [RolloutSample(str(p), str(r), score) for p, r, score in list(rows)[:SAMPLES_SHOWN]]
        started = self._started if self._started is not None else time.perf_counter()
        self._log_step(logged, samples, time.perf_counter() - started)

    def save_pretrained(self, save_directory: str | Path) -> None:
        """The model, its value head and the tokenizer, saved by the main process (TRL's call; for a checkpoint
        that resumes exactly, use `save_checkpoint`)."""
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            student = self.engine.unwrapped()
            student.save_pretrained(save_directory)
            if self.tokenizer is not None and getattr(student, "tokenizer", None) is None:
                self.tokenizer.save_pretrained(save_directory)


def _as_reference(model: Any, tokenizer: Any) -> nn.Module:
    """A frozen reference that returns (logits, values), as the update calls it."""
    if not isinstance(model, nn.Module):
        raise TndError(f"ref_model: {type(model).__name__} is not a model; pass a causal LM, or None for a copy")
    reference = model if isinstance(model, StudentModel) else StudentModel(model, tokenizer)
    reference.requires_grad_(False)
    return reference.eval()


def _length_stats(
    queries: Sequence[torch.Tensor], responses: Sequence[torch.Tensor], reduce_mean: Callable, device: Any
) -> dict[str, float]:
    """TRL's token statistics: mean and std of the given query and response lengths (all tokens given)."""
    lengths = [torch.tensor([float(len(q)) for q in queries]), torch.tensor([float(len(r)) for r in responses])]
    spread = [(x.mean(), x.std() if len(x) > 1 else x.new_zeros(())) for x in lengths]
    values = reduce_mean(torch.stack([v for pair in spread for v in pair]).to(device)).tolist()
    names = ("queries_len_mean", "queries_len_std", "responses_len_mean", "responses_len_std")
    return {f"tokens/{name}": value for name, value in zip(names, values)}


def _scalar(value: Any) -> float | None:
    """`value` as a finite float when it is one number (TRL's stats also held arrays, left out of the log)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif hasattr(value, "ndim") and value.ndim == 0:
        number = float(value.item())
    else:
        return None
    return number if math.isfinite(number) else None
