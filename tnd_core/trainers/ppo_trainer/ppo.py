"""CustomPPOTrainer: PPO with teacher-student distillation (Trial-and-Demonstration learning).

`train()` loops rollout (student trials, teacher demos) -> scoring -> `step()`; `step(queries,
responses, scores)` is one PPO update, TRL 0.11's when distillation, demos, CLM and entropy are off.
The math lives in `losses.py`; this file orchestrates models, accelerate, events and checkpoints.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import random
import shutil
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from accelerate.utils.memory import clear_device_cache

from tnd_core.config import OPTIMIZER_NAMES, CustomPPOConfig
from tnd_core.errors import ConfigError, TndError
from tnd_core.events import (
    CheckpointEvent,
    ErrorEvent,
    EvalEvent,
    Event,
    RolloutEvent,
    RolloutSample,
    StatusEvent,
    StepEvent,
    Subscriber,
    TrainingControl,
)
from tnd_core.models import as_reward_model, as_student, as_teacher
from tnd_core.trainers.ppo_trainer import checkpoint
from tnd_core.trainers.ppo_trainer.early_stopping import EarlyStopping
from tnd_core.trainers.ppo_trainer.kl_control import make_kl_controller
from tnd_core.trainers.ppo_trainer.losses import (
    clm_loss,
    compute_advantages,
    compute_rewards,
    entropy_from_logits,
    kd_divergence,
    kd_loss,
    kl_penalty,
    masked_mean,
    policy_loss,
    selective_log_softmax,
    value_loss,
)
from tnd_core.trainers.ppo_trainer.rollout import (
    PPOBatch,
    batch_from_lists,
    decode_rows,
    generation_kwargs,
    left_pad,
    make_batch,
    pad_width,
    read_prompts,
    sample,
)
from tnd_core.trainers.ppo_trainer.score_processing import ScoreProcessor, shape_scores

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
# Order of the per-mini-batch statistics packed into one tensor (one device sync per step).
_MINIBATCH_STATS = (
    "ppo/loss/policy",
    "ppo/loss/value",
    "ppo/loss/distill",
    "ppo/loss/clm",
    "ppo/loss/total",
    "ppo/policy/entropy",
    "ppo/policy/approxkl",
    "ppo/policy/policykl",
    "ppo/policy/clipfrac",
    "ppo/val/vpred",
    "ppo/val/error",
    "ppo/val/clipfrac",
    "ppo/returns/mean",
    "ppo/skipped_minibatches",
)


class TrainingDiverged(TndError):
    """The loss became NaN or infinite; training stops and the last good checkpoint is kept."""


class CustomPPOTrainer:
    """PPO on student trials and teacher demos, with logit distillation from the teacher.

    Models may be wrappers from `tnd_core.models`, any objects with their methods, plain
    transformers models (give `tokenizer`, and `reward_tokenizer` if the reward model's differs),
    or paths / hub ids.
    """

    def __init__(
        self,
        teacher: Any = None,
        student: Any = None,
        reward_model: Any = None,
        config: CustomPPOConfig | None = None,
        train_dataset: Any = None,
        *,
        tokenizer: Any = None,
        reward_tokenizer: Any = None,
        clm_dataset: Any = None,
        evaluator: Callable[[Any, Any], dict[str, float]] | None = None,
        callbacks: Sequence[Subscriber] = (),
        control: TrainingControl | None = None,
        accelerator: Accelerator | None = None,
    ):
        if config is None:
            config = CustomPPOConfig()
        if not isinstance(config, CustomPPOConfig):
            raise ConfigError("config", type(config).__name__, "must be a CustomPPOConfig")
        if student is None:
            raise ConfigError("student", None, "is required: a StudentModel, a causal LM with its tokenizer, or a path")
        self.config = config
        self.callbacks: list[Subscriber] = list(callbacks)
        self.control = control or TrainingControl()
        self.evaluator = evaluator
        self.accelerator = accelerator or self._make_accelerator()
        set_seed(config.seed, device_specific=True)

        self.student = as_student(student, tokenizer)
        self.tokenizer = getattr(self.student, "tokenizer", None) or tokenizer
        if self.tokenizer is None:
            raise ConfigError("tokenizer", None, "is required: the student's tokenizer (pass tokenizer=... or a StudentModel with one)")
        self.eos_token_id = self.tokenizer.eos_token_id
        self.pad_token_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_token_id
        if self.pad_token_id is None:
            raise ConfigError("tokenizer", type(self.tokenizer).__name__, "needs a pad or EOS token")

        self.teacher = as_teacher(teacher, self.tokenizer) if teacher is not None else None
        self._check_teacher()
        self.reward_model = as_reward_model(reward_model, reward_tokenizer or self.tokenizer) if reward_model is not None else None
        self.ref_model = self._frozen_copy(self.student) if config.kl_reference == "initial_student" else None
        device = self.accelerator.device
        for frozen in (self.teacher, self.reward_model, self.ref_model):
            if hasattr(frozen, "to"):
                frozen.to(device)

        self.train_prompts = read_prompts(train_dataset, config.prompt_column) if train_dataset is not None else None
        self.clm_texts = _read_texts(clm_dataset, config.prompt_column) if clm_dataset is not None else None

        self.optimizer = self._setup_optimizer()
        self.lr_scheduler = self._setup_scheduler(self.optimizer)
        self.model, self.optimizer, self.lr_scheduler = self.accelerator.prepare(self.student, self.optimizer, self.lr_scheduler)
        self.kl_ctl = make_kl_controller(config)
        self.score_processor = self._setup_score_processing()
        self.early_stopping = self._setup_early_stopping()

        lm_config = getattr(getattr(self.student, "pretrained_model", None), "config", None)
        self.max_positions: int | None = getattr(lm_config, "max_position_embeddings", None)
        self.global_step = 0
        self.last_checkpoint: str | None = None
        self._perm_cache: dict[tuple[str, int], torch.Tensor] = {}
        self._baseline: float | None = None

    # ------------------------------------------------------------------ setup (overridable)
    def _make_accelerator(self) -> Accelerator:
        from accelerate.state import AcceleratorState, GradientState

        # Several trainers may be built one after another in one process (tests, the app);
        # accelerate keeps process-wide singletons that would otherwise pin the first one's settings.
        AcceleratorState._reset_state(reset_partial_state=False)
        GradientState._reset_state()
        trackers = self._trackers()
        try:
            return Accelerator(
                mixed_precision=self.config.mixed_precision,
                gradient_accumulation_steps=self.config.gradient_accumulation_steps,
                log_with=trackers,
                project_dir=self.config.output_dir,
                step_scheduler_with_optimizer=False,
            )
        except ValueError as exc:
            raise ConfigError("mixed_precision", self.config.mixed_precision, f"is not available on this machine ({exc})") from exc

    def _trackers(self) -> list[str] | None:
        from accelerate.utils import is_tensorboard_available, is_trackio_available, is_wandb_available

        report_to = self.config.report_to
        if report_to == "none":
            return None
        available = {"tensorboard": is_tensorboard_available(), "wandb": is_wandb_available(), "trackio": is_trackio_available()}
        if report_to == "all":
            chosen = [name for name, ok in available.items() if ok]
            if not chosen:
                raise ConfigError("report_to", report_to, "found no tracker installed: pip install tensorboard, wandb or trackio")
            return chosen
        if not available[report_to]:
            raise ConfigError("report_to", report_to, f"needs the {report_to} package: pip install {report_to}")
        return [report_to]

    def _setup_optimizer(self) -> torch.optim.Optimizer:
        """adamw (default), adam, sgd, adafactor, or any torch.optim class by name, with optimizer_kwargs."""
        name, kwargs, lr = self.config.optimizer_name, dict(self.config.optimizer_kwargs), self.config.learning_rate
        params = [p for p in self.student.parameters() if p.requires_grad]
        builtin = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}
        try:
            if name == "adafactor":
                from transformers.optimization import Adafactor

                options = {"scale_parameter": False, "relative_step": False, "warmup_init": False, **kwargs}
                return Adafactor(params, lr=lr, **options)
            cls = builtin.get(name) or getattr(torch.optim, name)
            if name in ("adamw", "adam") and not {"fused", "foreach"} & kwargs.keys():
                # As transformers' Trainer (adamw_torch_fused): on small models the per-tensor loop
                # of the default implementation costs several times the update itself.
                kwargs["fused"] = True
            return cls(params, lr=lr, **kwargs)
        except (TypeError, ValueError) as exc:
            raise ConfigError("optimizer_kwargs", kwargs, f"not accepted by optimizer {name!r}: {exc}") from exc
        except AttributeError as exc:
            raise ConfigError("optimizer_name", name, f"must be one of {', '.join(OPTIMIZER_NAMES)} or a torch.optim class") from exc

    def _setup_scheduler(self, optimizer: torch.optim.Optimizer) -> Any:
        """transformers' get_scheduler over the run's optimizer steps, `warmup` of them warming up."""
        from transformers import get_scheduler

        try:
            return get_scheduler(
                self.config.scheduler_name,
                optimizer,
                num_warmup_steps=self.config.warmup,
                num_training_steps=self.total_optimizer_steps(),
                scheduler_specific_kwargs=dict(self.config.scheduler_kwargs),
            )
        except (TypeError, ValueError) as exc:
            raise ConfigError("scheduler_kwargs", self.config.scheduler_kwargs, f"not accepted by scheduler {self.config.scheduler_name!r}: {exc}") from exc

    def _setup_early_stopping(self) -> EarlyStopping:
        """Epoch-level target_kl test and run-level patience on the mean reward."""
        c = self.config
        return EarlyStopping(c.early_stopping, c.target_kl, c.patience, c.patience_min_delta)

    def _setup_score_processing(self) -> ScoreProcessor:
        """Running moments with scaling, normalisation and clipping of scores (TND_SPEC 2.4)."""
        c = self.config
        return ScoreProcessor(c.use_score_scaling, c.use_score_norm, c.score_clip, gather=self.accelerator.gather)

    def _check_teacher(self) -> None:
        c = self.config
        if self.teacher is None:
            if c.kl_reference == "teacher" or c.distill_coef > 0 or c.use_teacher_demos:
                raise ConfigError(
                    "teacher", None,
                    "is required with kl_reference=teacher, distill_coef > 0 or use_teacher_demos=true "
                    "(plain PPO: kl_reference=initial_student, distill_coef=0, use_teacher_demos=false)",
                )
            return
        teacher_tok = getattr(self.teacher, "tokenizer", None)
        if teacher_tok is not None and teacher_tok is not self.tokenizer and teacher_tok.get_vocab() != self.tokenizer.get_vocab():
            raise TndError("teacher: its tokenizer differs from the student's; token-level demos, KL and distillation need one shared vocabulary")

    @staticmethod
    def _frozen_copy(student: Any) -> Any:
        ref = copy.deepcopy(student)
        ref.requires_grad_(False)
        ref.eval()
        return ref

    def add_callback(self, callback: Subscriber) -> None:
        """Subscribe a callable to every event."""
        self.callbacks.append(callback)

    # ------------------------------------------------------------------ schedule
    @property
    def samples_per_batch(self) -> int:
        """Samples in one PPO batch: the trials, and as many demos when demos are on."""
        return self.config.batch_size * (2 if self.config.use_teacher_demos else 1)

    def step_kind(self, step: int) -> str:
        """'clm' or 'ppo' for 0-based step `step`: each cycle is clm_per_step CLM steps then ppo_per_step PPO steps."""
        c = self.config
        return "clm" if step % (c.clm_per_step + c.ppo_per_step) < c.clm_per_step else "ppo"

    def _steps_of_kind_before(self, step: int, kind: str) -> int:
        c = self.config
        cycle = c.clm_per_step + c.ppo_per_step
        full, pos = divmod(step, cycle)
        if kind == "clm":
            return full * c.clm_per_step + min(pos, c.clm_per_step)
        return full * c.ppo_per_step + max(0, pos - c.clm_per_step)

    def total_optimizer_steps(self) -> int:
        """Optimizer updates of the whole run if no batch stops early."""
        c = self.config
        per_update = c.mini_batch_size * c.gradient_accumulation_steps
        ppo_steps = self._steps_of_kind_before(c.steps, "ppo")
        clm_steps = c.steps - ppo_steps
        return max(1, ppo_steps * c.ppo_epochs * (self.samples_per_batch // per_update) + clm_steps * (c.batch_size // per_update))

    # ------------------------------------------------------------------ events
    def _emit(self, event: Event) -> None:
        if not self.accelerator.is_main_process:
            return
        for callback in list(self.callbacks):
            try:
                callback(event)
            except Exception:
                logger.exception("event subscriber %r failed on %s; training continues", callback, type(event).__name__)

    # ------------------------------------------------------------------ helpers
    def _unwrapped(self) -> Any:
        return self.accelerator.unwrap_model(self.model)

    def _timer(self) -> float:
        if self.accelerator.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    def _free_cache(self) -> None:
        if self.config.optimize_device_cache:
            clear_device_cache(garbage_collection=True)

    def _reduce_mean(self, values: torch.Tensor) -> torch.Tensor:
        if self.accelerator.num_processes > 1:
            return self.accelerator.reduce(values, reduction="mean")
        return values

    def _any_process(self, flag: bool) -> bool:
        """True if `flag` is true on any process (stop requests come from the main process's UI)."""
        if self.accelerator.num_processes == 1:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.accelerator.device)
        return bool(self.accelerator.reduce(t, reduction="sum").item() > 0)

    def _reference_logits(self, chunk: PPOBatch, keep: int) -> torch.Tensor:
        if self.ref_model is None:
            return self.teacher.get_teacher_logits(chunk.input_ids, chunk.attention_mask, chunk.position_ids, logits_to_keep=keep)
        return self.ref_model(chunk.input_ids, chunk.attention_mask, chunk.position_ids, logits_to_keep=keep)[0]

    # ------------------------------------------------------------------ PPO step
    def step(self, queries: Sequence[torch.Tensor], responses: Sequence[torch.Tensor], scores: Any) -> dict[str, float]:
        """One PPO step on given samples: lists of 1-D token tensors and one score per sample.

        With distillation, demos, CLM and entropy off this is TRL 0.11's `PPOTrainer.step`.
        """
        if not (len(queries) == len(responses) == len(scores)):
            raise ConfigError("queries", len(queries), f"queries, responses and scores must have the same length (got {len(queries)}, {len(responses)}, {len(scores)})")
        for name, seqs in (("queries", queries), ("responses", responses)):
            bad = next((i for i, s in enumerate(seqs) if not isinstance(s, torch.Tensor) or s.ndim != 1 or len(s) == 0), None)
            if bad is not None:
                raise ConfigError(name, f"item {bad}", "must be non-empty 1-D tensors of token ids")
        per_update = self.config.mini_batch_size * self.config.gradient_accumulation_steps
        if len(queries) % per_update:
            raise ConfigError("queries", len(queries), f"the number of samples must be a multiple of mini_batch_size * gradient_accumulation_steps = {per_update}")
        device = self.accelerator.device
        scores = torch.stack([torch.as_tensor(s, dtype=torch.float32).reshape(()) for s in scores]).to(device)
        self._check_finite_scores(scores, "scores")
        batch = batch_from_lists(queries, responses, self.pad_token_id, self.eos_token_id, device)
        stats = self._optimize(batch, scores, is_demo=torch.zeros(len(batch), dtype=torch.bool, device=device))
        reward = self._reduce_mean(torch.stack([scores.mean(), scores.std() if len(scores) > 1 else scores.new_zeros(())])).tolist()
        stats["env/reward_mean"], stats["env/reward_std"] = reward
        return stats

    @torch.no_grad()
    def _rollout_forward(self, batch: PPOBatch) -> tuple[dict[str, torch.Tensor], float]:
        """One no-grad pass per model over the batch: old log-probs and values, reference log-probs,
        per-token KL, and the teacher's logits (kept for the KD loss of every PPO epoch).

        Returns the tensors and the seconds spent in the teacher.
        """
        c = self.config
        keep = batch.response_len + 1
        need_teacher_logits = self.teacher is not None
        parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("logprobs", "values", "ref_logprobs", "kls", "ts_kl", "teacher_logits")}
        teacher_s = 0.0
        chunk_size = 4 * c.mini_batch_size * c.gradient_accumulation_steps  # no-grad passes hold no activations
        for chunk in batch.chunks(chunk_size):
            tokens = chunk.responses
            logits, values = self.model(chunk.input_ids, chunk.attention_mask, chunk.position_ids, logits_to_keep=keep)
            logits, values = logits[:, :-1].float(), values[:, :-1].float()
            policy_logits = logits / c.temperature
            logprobs = selective_log_softmax(policy_logits, tokens)
            teacher_logits = None
            if need_teacher_logits:
                t0 = self._timer()
                with self.accelerator.autocast():
                    teacher_logits = self.teacher.get_teacher_logits(chunk.input_ids, chunk.attention_mask, chunk.position_ids, logits_to_keep=keep)[:, :-1]
                teacher_s += self._timer() - t0
            if self.ref_model is None:
                ref_logits = teacher_logits.float()
            else:
                with self.accelerator.autocast():
                    ref_logits = self._reference_logits(chunk, keep)[:, :-1].float()
            ref_policy_logits = ref_logits / c.temperature
            ref_logprobs = selective_log_softmax(ref_policy_logits, tokens)
            if c.kl_penalty == "full":
                kls = kl_penalty(logprobs, ref_logprobs, "full", policy_logits.log_softmax(-1), ref_policy_logits.log_softmax(-1))
            else:
                kls = kl_penalty(logprobs, ref_logprobs, c.kl_penalty)
            parts["logprobs"].append(logprobs)
            parts["values"].append(values)
            parts["ref_logprobs"].append(ref_logprobs)
            parts["kls"].append(kls)
            if teacher_logits is not None:
                parts["ts_kl"].append(kd_divergence(logits, teacher_logits, "forward_kl"))
                if c.distill_coef > 0:
                    parts["teacher_logits"].append(teacher_logits)
        return {k: torch.cat(v) for k, v in parts.items() if v}, teacher_s

    def _optimize(self, batch: PPOBatch, scores: torch.Tensor, is_demo: torch.Tensor) -> dict[str, float]:
        """Rewards, advantages and `ppo_epochs` passes of clipped PPO (+ KD, entropy, CLM) over `batch`."""
        c = self.config
        t_start = self._timer()
        self.model.train()
        mask = batch.mask
        processed = self.score_processor(scores)
        old, teacher_s = self._rollout_forward(batch)
        kl_coef = self.kl_ctl.value
        rewards, non_score_rewards = compute_rewards(processed, old["kls"], mask, kl_coef)
        values, advantages, returns = compute_advantages(old["values"], rewards, mask, c.gamma, c.lam, c.whiten_rewards)
        teacher_logits = old.get("teacher_logits")

        n = len(batch)
        minibatch_stats: list[torch.Tensor] = []
        epochs_run, early_stopped = 0, False
        for _ in range(c.ppo_epochs):
            order = torch.from_numpy(np.random.permutation(n)).to(mask.device)
            epoch_losses = []
            for start in range(0, n, c.mini_batch_size):
                idx = order[start : start + c.mini_batch_size]
                with self.accelerator.accumulate(self.model):
                    row = self._minibatch_update(
                        batch.select(idx), old["logprobs"][idx], values[idx], advantages[idx], returns[idx],
                        teacher_logits[idx] if teacher_logits is not None else None,
                    )
                minibatch_stats.append(row)
                epoch_losses.append(row[4])
            epochs_run += 1
            # One sync per epoch: the last mini-batch's policy KL (TRL 0.11's early-stop test) and a NaN check.
            check = torch.stack([minibatch_stats[-1][7], (~torch.isfinite(torch.stack(epoch_losses))).any().float()])
            policykl, nonfinite = self._reduce_mean(check).tolist()
            if nonfinite > 0:
                raise TrainingDiverged(
                    f"training diverged: the loss became NaN or infinite at step {self.global_step + 1}. "
                    f"Try a lower learning_rate, a smaller max_grad_norm, or score_clip. Last good checkpoint: {self.last_checkpoint or 'none'}"
                )
            if self.early_stopping.stop_epochs(policykl):
                self.optimizer.zero_grad()
                early_stopped = True
                break

        trials = (~is_demo).float()
        response_len = mask.sum(-1)
        rollout = {
            "objective/kl": (old["kls"] * mask).sum(-1).mean(),
            "objective/kl_coef": torch.tensor(kl_coef, device=mask.device),
            "objective/entropy": (-old["logprobs"] * mask).sum(-1).mean(),
            "ppo/mean_non_score_reward": masked_mean(non_score_rewards, mask),
            "ppo/mean_scores": processed.mean(),
            "tokens/response_len_mean": response_len.float().mean(),
        }
        if "ts_kl" in old:
            trial_mask = mask * trials.unsqueeze(1)
            rollout["distill/teacher_student_kl"] = masked_mean(old["ts_kl"], trial_mask) if trials.any() else masked_mean(old["ts_kl"], mask)
        names = list(rollout) + list(_MINIBATCH_STATS)
        packed = torch.cat([torch.stack([v.float() for v in rollout.values()]), torch.stack(minibatch_stats).mean(0)])
        stats = dict(zip(names, self._reduce_mean(packed).tolist()))
        n_tokens = stats["tokens/response_len_mean"] * n

        self.kl_ctl.update(stats["objective/kl"], n * self.accelerator.num_processes)
        elapsed = self._timer() - t_start
        stats.update({
            "ppo/learning_rate": self.optimizer.param_groups[0]["lr"],
            "ppo/early_stopped": float(early_stopped),
            "ppo/epochs_run": float(epochs_run),
            "time/teacher": teacher_s,
            "time/optimize": elapsed - teacher_s,
            "perf/samples_per_s": n / max(elapsed, 1e-9),
            "perf/tokens_per_s": n_tokens / max(elapsed, 1e-9),
        })
        self._free_cache()
        return stats

    def _minibatch_update(
        self,
        mb: PPOBatch,
        old_logprobs: torch.Tensor,
        old_values: torch.Tensor,
        advantages: torch.Tensor,
        returns: torch.Tensor,
        teacher_logits: torch.Tensor | None,
    ) -> torch.Tensor:
        """Forward, loss, backward and (when accumulation allows) an optimizer step; returns the stats row."""
        c = self.config
        mask = mb.mask
        logits, vpreds = self.model(mb.input_ids, mb.attention_mask, mb.position_ids, logits_to_keep=mb.response_len + 1)
        logits, vpreds = logits[:, :-1].float(), vpreds[:, :-1].float()
        tokens = mb.responses
        policy_logits = logits / c.temperature
        logprobs = selective_log_softmax(policy_logits, tokens)

        pg_loss, pg_clipfrac, ratio = policy_loss(logprobs, old_logprobs, advantages, mask, c.cliprange)
        vf_loss, vf_clipfrac = value_loss(vpreds, old_values, returns, mask, c.cliprange_value)
        loss = pg_loss + c.vf_coef * vf_loss
        with torch.set_grad_enabled(c.entropy_coef > 0):
            entropy = masked_mean(entropy_from_logits(policy_logits), mask)
        if c.entropy_coef > 0:
            loss = loss - c.entropy_coef * entropy  # minus: a positive coefficient raises entropy
        distill = torch.zeros((), device=loss.device)
        if teacher_logits is not None:
            distill = kd_loss(logits, teacher_logits, mask, c.divergence, c.distill_temperature, c.jsd_beta)
            loss = loss + c.distill_coef * distill
        clm = torch.zeros((), device=loss.device)
        if c.clm_coef > 0:
            lm_logprobs = logprobs if c.temperature == 1.0 else selective_log_softmax(logits, tokens)
            clm = clm_loss(lm_logprobs, mask)
            loss = loss + c.clm_coef * clm

        # ratio_threshold (TRL 0.11): a mini-batch whose mean ratio is too large contributes nothing.
        keep = (masked_mean(ratio, mask).detach() <= c.ratio_threshold).float()
        loss, pg_loss, vf_loss = loss * keep, pg_loss * keep, vf_loss * keep
        self.accelerator.backward(loss)
        if self.accelerator.sync_gradients:
            if c.max_grad_norm is not None:
                self.accelerator.clip_grad_norm_(self.model.parameters(), c.max_grad_norm)
        self.optimizer.step()
        if self.accelerator.sync_gradients:
            self.lr_scheduler.step()
        self.optimizer.zero_grad()

        with torch.no_grad():
            return torch.stack([
                pg_loss.detach(), vf_loss.detach(), distill.detach(), clm.detach(), loss.detach(), entropy.detach(),
                0.5 * masked_mean((logprobs - old_logprobs) ** 2, mask),
                masked_mean(old_logprobs - logprobs, mask),
                pg_clipfrac, masked_mean(vpreds, mask), masked_mean((vpreds - returns) ** 2, mask), vf_clipfrac,
                masked_mean(returns, mask), 1.0 - keep,
            ]).float()

    # ------------------------------------------------------------------ rollout
    def _stream(self, name: str, n_items: int, stream_step: int) -> list[int]:
        """Indices of this process's batch number `stream_step` in an endless, per-epoch shuffled stream."""
        c, w, r = self.config, self.accelerator.num_processes, self.accelerator.process_index
        start = (stream_step * w + r) * c.batch_size
        out = []
        for pos in range(start, start + c.batch_size):
            epoch, offset = divmod(pos, n_items)
            key = (name, epoch)
            if key not in self._perm_cache:
                self._perm_cache = {k: v for k, v in self._perm_cache.items() if k[0] != name}
                seed = c.seed * 1_000_003 + epoch * 7919 + (1 if name == "clm" else 0)
                self._perm_cache[key] = torch.randperm(n_items, generator=torch.Generator().manual_seed(seed))
            out.append(int(self._perm_cache[key][offset]))
        return out

    def _encode_prompts(self, prompts: list[str]) -> list[torch.Tensor]:
        """Token ids of each prompt, truncated from the left to max_prompt_length."""
        first = self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None else self.eos_token_id
        encoded = self.tokenizer(prompts, add_special_tokens=True)["input_ids"]
        out = []
        for ids in encoded:
            ids = ids[-self.config.max_prompt_length :] or [first]
            out.append(torch.tensor(ids, dtype=torch.long))
        return out

    def _score(self, texts: list[str]) -> torch.Tensor:
        with self.accelerator.autocast():
            scores = self.reward_model.score_texts(texts)
        return torch.as_tensor(scores, dtype=torch.float32).reshape(-1).to(self.accelerator.device)

    def _check_finite_scores(self, scores: torch.Tensor, what: str) -> None:
        bad = int((~torch.isfinite(scores)).sum().item())
        if bad:
            raise TrainingDiverged(f"{what}: {bad} of {len(scores)} scores are NaN or infinite; check the reward model")

    def _shaping_baseline(self) -> float:
        if self._baseline is None:
            c = self.config
            self._baseline = float(self._score([c.shaping_baseline_text])[0]) if c.shaping_baseline_text else c.shaping_baseline
            if c.reward_shaping == "div" and self._baseline == 0:
                raise ConfigError("shaping_baseline_text", c.shaping_baseline_text, "scores 0 under the reward model; reward_shaping=div needs a non-zero baseline")
        return self._baseline

    def _ppo_train_step(self, prompts: list[str]) -> tuple[dict[str, float], list[RolloutSample]]:
        """Rollout of trials (and demos), scoring, shaping, then `_optimize`."""
        c = self.config
        device = self.accelerator.device
        stream_step = self._steps_of_kind_before(self.global_step, "ppo")
        batch_prompts = [prompts[i] for i in self._stream("ppo", len(prompts), stream_step)]
        q_ids, q_attn = left_pad(self._encode_prompts(batch_prompts), self.pad_token_id, device)
        if self.max_positions and q_ids.shape[1] + c.max_new_tokens > self.max_positions:
            raise ConfigError(
                "max_new_tokens", c.max_new_tokens,
                f"prompts of {q_ids.shape[1]} tokens plus max_new_tokens exceed the student's {self.max_positions} positions; "
                "lower max_prompt_length or max_new_tokens",
            )

        t0 = self._timer()
        gen = generation_kwargs(c, self.pad_token_id, self.eos_token_id)
        self.model.eval()
        with self.accelerator.autocast():
            trial_ids, trial_valid = sample(self._unwrapped(), q_ids, q_attn, gen, self.pad_token_id, self.eos_token_id)
            if c.use_teacher_demos:
                demo_ids, demo_valid = sample(self.teacher, q_ids, q_attn, gen, self.pad_token_id, self.eos_token_id)
        t_rollout = self._timer() - t0

        t0 = self._timer()
        trial_texts = decode_rows(self.tokenizer, torch.cat([q_ids, trial_ids], 1), torch.cat([q_attn, trial_valid], 1))
        trial_scores = self._score(trial_texts)
        scores, is_demo = trial_scores, torch.zeros(len(trial_scores), dtype=torch.bool, device=device)
        demo_scores = None
        if c.use_teacher_demos:
            if c.demo_score == "reward_model":
                demo_texts = decode_rows(self.tokenizer, torch.cat([q_ids, demo_ids], 1), torch.cat([q_attn, demo_valid], 1))
                demo_scores = self._score(demo_texts)
            else:
                demo_scores = torch.full_like(trial_scores, float(c.demo_score))
            scores = torch.cat([trial_scores, demo_scores])
            is_demo = torch.cat([is_demo, torch.ones_like(is_demo)])
        self._check_finite_scores(scores, "reward_model")
        shaped = shape_scores(scores, c.reward_shaping, self._shaping_baseline()) if c.reward_shaping != "none" else scores
        t_score = self._timer() - t0

        if c.use_teacher_demos:
            width = max(trial_ids.shape[1], demo_ids.shape[1])
            trial_ids, trial_valid = pad_width(trial_ids, trial_valid, width, self.pad_token_id)
            demo_ids, demo_valid = pad_width(demo_ids, demo_valid, width, self.pad_token_id)
            batch = make_batch(torch.cat([q_ids, q_ids]), torch.cat([q_attn, q_attn]), torch.cat([trial_ids, demo_ids]), torch.cat([trial_valid, demo_valid]), self.eos_token_id)
        else:
            batch = make_batch(q_ids, q_attn, trial_ids, trial_valid, self.eos_token_id)
        self._free_cache()

        stats = self._optimize(batch, shaped, is_demo)
        env = [trial_scores.mean(), trial_scores.std() if len(trial_scores) > 1 else trial_scores.new_zeros(())]
        if demo_scores is not None:
            env.append(demo_scores.mean())
        env_values = self._reduce_mean(torch.stack(env)).tolist()
        stats["env/reward_mean"], stats["env/reward_std"] = env_values[:2]
        if demo_scores is not None:
            stats["env/demo_reward_mean"] = env_values[2]
        total = t_rollout + t_score + stats["time/teacher"] + stats["time/optimize"]
        n_tokens = stats["tokens/response_len_mean"] * len(batch)
        stats.update({
            "time/rollout": t_rollout,
            "time/score": t_score,
            "time/step": total,
            "perf/samples_per_s": len(batch) / max(total, 1e-9),
            "perf/tokens_per_s": n_tokens / max(total, 1e-9),
        })

        samples = []
        if self.accelerator.is_main_process:
            shown = min(4, c.batch_size)
            trial_text = decode_rows(self.tokenizer, trial_ids[:shown], trial_valid[:shown])
            demo_text = decode_rows(self.tokenizer, demo_ids[:shown], demo_valid[:shown]) if c.use_teacher_demos else [None] * shown
            t_scores = trial_scores[:shown].tolist()
            d_scores = demo_scores[:shown].tolist() if demo_scores is not None else [None] * shown
            samples = [RolloutSample(batch_prompts[i], trial_text[i], t_scores[i], demo_text[i], d_scores[i]) for i in range(shown)]
        return stats, samples

    def _clm_train_step(self, texts: list[str]) -> dict[str, float]:
        """A plain causal-LM update on corpus text (the schedule's CLM steps)."""
        c = self.config
        device = self.accelerator.device
        t0 = self._timer()
        stream_step = self._steps_of_kind_before(self.global_step, "clm")
        # Each text ends with EOS, as the bundle's teacher learned it: a student that never sees EOS never stops.
        eos = self.tokenizer.eos_token or ""
        batch_texts = [texts[i] + eos for i in self._stream("clm", len(texts), stream_step)]
        max_length = min(c.max_prompt_length + c.max_new_tokens, self.max_positions or math.inf)
        enc = self.tokenizer(batch_texts, truncation=True, max_length=max_length, padding=True, padding_side="right", return_tensors="pt")
        ids, attn = enc["input_ids"].to(device), enc["attention_mask"].to(device)
        pos = (attn.cumsum(-1) - 1).clamp(min=0)
        self.model.train()
        losses = []
        for start in range(0, len(ids), c.mini_batch_size):
            sl = slice(start, start + c.mini_batch_size)
            with self.accelerator.accumulate(self.model):
                logits, values = self.model(ids[sl], attn[sl], pos[sl])
                logprobs = selective_log_softmax(logits[:, :-1].float(), ids[sl, 1:])
                target_mask = attn[sl, 1:].float()
                loss = (-logprobs * target_mask).sum() / target_mask.sum().clamp(min=1)
                # The value head takes no part here; a zero-weighted term keeps DDP's gradient buckets complete.
                self.accelerator.backward(loss + 0.0 * values.sum())
                if self.accelerator.sync_gradients and c.max_grad_norm is not None:
                    self.accelerator.clip_grad_norm_(self.model.parameters(), c.max_grad_norm)
                self.optimizer.step()
                if self.accelerator.sync_gradients:
                    self.lr_scheduler.step()
                self.optimizer.zero_grad()
            losses.append(loss.detach())
        mean_loss = self._reduce_mean(torch.stack(losses).mean().reshape(1))
        if not torch.isfinite(mean_loss).all():
            raise TrainingDiverged(f"training diverged: the CLM loss became NaN or infinite at step {self.global_step + 1}. Last good checkpoint: {self.last_checkpoint or 'none'}")
        return {"clm/loss": float(mean_loss.item()), "ppo/learning_rate": self.optimizer.param_groups[0]["lr"], "time/optimize": self._timer() - t0}

    # ------------------------------------------------------------------ training loop
    def train(
        self,
        train_dataset: Any = None,
        *,
        clm_dataset: Any = None,
        evaluator: Callable[[Any, Any], dict[str, float]] | None = None,
        resume_from_checkpoint: str | None = None,
    ) -> dict[str, Any]:
        """Train for `config.steps` steps; returns {'state', 'step', 'last_checkpoint', 'stats'}."""
        c = self.config
        prompts = read_prompts(train_dataset, c.prompt_column) if train_dataset is not None else self.train_prompts
        if prompts is None:
            raise ConfigError("train_dataset", None, "is required: pass it to CustomPPOTrainer(...) or train(...)")
        clm_texts = _read_texts(clm_dataset, c.prompt_column) if clm_dataset is not None else (self.clm_texts or prompts)
        evaluator = evaluator or self.evaluator
        if self.reward_model is None and c.ppo_per_step > 0:
            raise ConfigError("reward_model", None, "is required by train(): a RewardModel, a sequence classifier with one output, or any object with score_texts(texts)")
        state, last_stats = "completed", {}
        self._emit(StatusEvent(self.global_step, "started"))
        try:
            resume = checkpoint.resolve(resume_from_checkpoint if resume_from_checkpoint is not None else c.resume_from_checkpoint, c.output_dir)
            if resume is not None:
                self.load_checkpoint(resume)
                logger.info("resumed from %s at step %d", resume, self.global_step)
            saved_step = self.global_step if resume is not None else None
            if self.accelerator.is_main_process:
                Path(c.output_dir).mkdir(parents=True, exist_ok=True)
            if c.report_to != "none":
                self.accelerator.init_trackers("tnd", config={k: v for k, v in c.to_dict().items() if not isinstance(v, dict)})
            started = time.perf_counter()
            while self.global_step < c.steps:
                if self.control.paused and self.accelerator.is_main_process:
                    self._emit(StatusEvent(self.global_step, "paused"))
                    self.control.wait_while_paused()
                    if not self.control.stop_requested:
                        self._emit(StatusEvent(self.global_step, "resumed"))
                if self._any_process(self.control.stop_requested):
                    state = "stopped"
                    break
                kind = self.step_kind(self.global_step)
                samples: list[RolloutSample] = []
                if kind == "ppo":
                    stats, samples = self._ppo_train_step(prompts)
                else:
                    stats = self._clm_train_step(clm_texts)
                self.global_step += 1
                step = self.global_step
                last_stats = stats
                if step % c.logging_steps == 0 or step == c.steps:
                    self._log_step(stats, samples, time.perf_counter() - started)
                if evaluator is not None and c.eval_steps and step % c.eval_steps == 0:
                    self._evaluate(evaluator)
                if c.save_steps and step % c.save_steps == 0:
                    self.save_checkpoint()
                    saved_step = step
                if kind == "ppo" and self.early_stopping.stop_run(stats["env/reward_mean"]):
                    state = "early_stopped"
                    break
            if saved_step != self.global_step:
                self.save_checkpoint()
        except Exception as exc:
            self._fail(exc)
            raise
        finally:
            if c.report_to != "none":
                self.accelerator.end_training()
        self._emit(StatusEvent(self.global_step, state))
        return {"state": state, "step": self.global_step, "last_checkpoint": self.last_checkpoint, "stats": last_stats}

    def _log_step(self, stats: dict[str, float], samples: list[RolloutSample], elapsed: float) -> None:
        step = self.global_step
        self._emit(StepEvent(step, self.config.steps, dict(stats), elapsed))
        if samples:
            self._emit(RolloutEvent(step, samples))
        if self.config.report_to != "none":
            self.accelerator.log(stats, step=step)
        if self.accelerator.is_main_process:
            with open(Path(self.config.output_dir) / METRICS_FILE, "a") as f:
                f.write(json.dumps({"step": step, **stats}) + "\n")
            if "env/reward_mean" in stats:
                logger.info("step %d/%d reward %.4f kl %.4f teacher-student kl %.4f", step, self.config.steps, stats["env/reward_mean"], stats["objective/kl"], stats.get("distill/teacher_student_kl", float("nan")))
            else:
                logger.info("step %d/%d clm loss %.4f", step, self.config.steps, stats["clm/loss"])

    def _evaluate(self, evaluator: Callable[[Any, Any], dict[str, float]]) -> None:
        if not self.accelerator.is_main_process:
            return
        was_training = self.model.training
        self.model.eval()
        with torch.no_grad():
            metrics = {k: float(v) for k, v in evaluator(self._unwrapped(), self.teacher).items()}
        self.model.train(was_training)
        self._emit(EvalEvent(self.global_step, metrics))
        with open(Path(self.config.output_dir) / METRICS_FILE, "a") as f:
            row = {k if k.startswith("eval/") else f"eval/{k}": v for k, v in metrics.items()}
            f.write(json.dumps({"step": self.global_step, **row}) + "\n")

    def _fail(self, exc: BaseException) -> None:
        message = str(exc) if isinstance(exc, TndError) else f"{type(exc).__name__}: {exc}"
        self._emit(ErrorEvent(self.global_step, message, type(exc).__name__, traceback.format_exc(), self.last_checkpoint))
        self._emit(StatusEvent(self.global_step, "failed", message))

    # ------------------------------------------------------------------ checkpoints
    def _trainer_state(self) -> dict[str, Any]:
        return {
            "step": self.global_step,
            "num_processes": self.accelerator.num_processes,
            "kl_controller": self.kl_ctl.state_dict(),
            "score_processing": self.score_processor.state_dict(),
            "early_stopping": self.early_stopping.state_dict(),
            "shaping_baseline": self._baseline,
        }

    def save_checkpoint(self) -> Path:
        """Write `output_dir/checkpoint-<step>` atomically; every process adds its RNG state."""
        acc, c = self.accelerator, self.config
        step = self.global_step
        if acc.is_main_process:
            checkpoint.begin(c.output_dir, step)
        acc.wait_for_everyone()
        tmp = checkpoint.temp_dir(c.output_dir, step)
        torch.save(_rng_state(), tmp / f"rng_state_{acc.process_index}.pt")
        path = checkpoint.checkpoint_dir(c.output_dir, step)
        if acc.is_main_process:
            with _quiet_progress_bars():
                self._unwrapped().save_pretrained(tmp / "student")
            c.save(tmp / "config.yaml")
            torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
            torch.save(self.lr_scheduler.state_dict(), tmp / "scheduler.pt")
            metrics = Path(c.output_dir) / METRICS_FILE
            if metrics.is_file():
                shutil.copyfile(metrics, tmp / METRICS_FILE)
        acc.wait_for_everyone()
        if acc.is_main_process:
            checkpoint.write_state(tmp, self._trainer_state())
            checkpoint.commit(c.output_dir, step, c.save_total_limit)
        acc.wait_for_everyone()
        self.last_checkpoint = str(path)
        self._emit(CheckpointEvent(step, str(path)))
        return path

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore everything `save_checkpoint` wrote, so that training continues as if never stopped."""
        path = Path(path)
        state = checkpoint.read_state(path)
        student = self._unwrapped()
        if not hasattr(student, "load_weights"):
            raise TndError(f"resume_from_checkpoint: the student ({type(student).__name__}) has no load_weights(path) method")
        with _quiet_progress_bars():
            student.load_weights(path / "student")
        device = self.accelerator.device
        self.optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location=device))
        self.lr_scheduler.load_state_dict(torch.load(path / "scheduler.pt"))
        self.kl_ctl.load_state_dict(state["kl_controller"])
        self.score_processor.load_state_dict(state["score_processing"])
        self.early_stopping.load_state_dict(state["early_stopping"])
        self._baseline = state.get("shaping_baseline")
        self.global_step = state["step"]
        self.last_checkpoint = str(path)
        if self.accelerator.is_main_process:
            Path(self.config.output_dir).mkdir(parents=True, exist_ok=True)
            saved_metrics = path / METRICS_FILE
            target = Path(self.config.output_dir) / METRICS_FILE
            if saved_metrics.is_file():
                if saved_metrics.resolve() != target.resolve():
                    shutil.copyfile(saved_metrics, target)
            elif target.is_file():
                target.unlink()
        rng_file = path / f"rng_state_{self.accelerator.process_index}.pt"
        if not rng_file.is_file():
            rng_file = path / "rng_state_0.pt"
        _set_rng_state(torch.load(rng_file))


@contextlib.contextmanager
def _quiet_progress_bars() -> Iterator[None]:
    # transformers draws a progress bar for every save and load; one per checkpoint is noise in the log.
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def _read_texts(dataset: Any, prompt_column: str) -> list[str]:
    column = "text" if "text" in (getattr(dataset, "column_names", None) or ()) else prompt_column
    return read_prompts(dataset, column)


def _rng_state() -> dict[str, Any]:
    """Every random generator the run draws from, as tensors and plain values (loadable with weights_only)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
