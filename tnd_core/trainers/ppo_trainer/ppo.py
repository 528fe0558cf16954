"""CustomPPOTrainer: PPO with teacher-student distillation (Trial-and-Demonstration learning).

`train()` runs the schedule (schedule.py): a PPO step collects trials and demos (rollout.py) and
updates the student on them (update.py); a CLM step trains on corpus text (clm.py). This file wires
the models, accelerate, events, requests between steps and checkpoints (checkpoint.py). What a step
computes, option by option, is docs/ALGORITHM.md.
"""

from __future__ import annotations

import copy
import logging
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from tnd_core import stats as S
from tnd_core.config import CustomPPOConfig
from tnd_core.errors import ConfigError, TndError, TrainingDiverged
from tnd_core.events import (
    CheckpointEvent,
    ErrorEvent,
    EvalEvent,
    Event,
    RolloutEvent,
    RolloutSample,
    RolloutTextsEvent,
    StatusEvent,
    StepEvent,
    Subscriber,
    TrainingControl,
    TrainingModels,
)
from tnd_core.models import as_reward_model, as_student, as_teacher
from tnd_core.models.cross_tokenizer import RankMatchedTeacher
from tnd_core.models.roles import same_vocabulary
from tnd_core.models.student import AdaptersDisabled, apply_student_options, has_lora
from tnd_core.trainers.ppo_trainer import checkpoint, schedule
from tnd_core.trainers.ppo_trainer.batch import batch_from_lists, check_samples
from tnd_core.trainers.ppo_trainer.clm import clm_step
from tnd_core.trainers.ppo_trainer.early_stopping import EarlyStopping
from tnd_core.trainers.ppo_trainer.engine import Engine, build_optimizer, build_scheduler, make_accelerator
from tnd_core.trainers.ppo_trainer.kl_control import make_kl_controller
from tnd_core.trainers.ppo_trainer.metrics_log import MetricsLog
from tnd_core.trainers.ppo_trainer.rollout import RolloutCollector, read_prompts, read_texts, rollout_stats
from tnd_core.trainers.ppo_trainer.score_processing import ScoreProcessor
from tnd_core.trainers.ppo_trainer.update import ppo_update

logger = logging.getLogger(__name__)

Evaluator = Callable[[Any, Any], dict[str, float]]


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
        evaluator: Evaluator | None = None,
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
        self.accelerator = accelerator or make_accelerator(config)
        set_seed(config.seed, device_specific=True)

        self.student = as_student(student, tokenizer)
        apply_student_options(self.student, config)
        self.tokenizer = getattr(self.student, "tokenizer", None) or tokenizer
        if self.tokenizer is None:
            raise ConfigError("tokenizer", None, "is required: pass tokenizer=... or a StudentModel with one")
        if self.tokenizer.pad_token_id is None and self.tokenizer.eos_token_id is None:
            raise ConfigError("tokenizer", type(self.tokenizer).__name__, "needs a pad or EOS token")
        self.teacher = as_teacher(teacher, self.tokenizer) if teacher is not None else None
        self._check_teacher()
        if reward_model is not None:
            reward_model = as_reward_model(reward_model, reward_tokenizer or self.tokenizer)
        self.reward_model = reward_model
        self.ref_model = self._setup_reference()
        frozen_dtype = self._frozen_dtype()
        for frozen in (self.teacher, self.reward_model):
            if isinstance(frozen, torch.nn.Module):
                frozen.to(self.accelerator.device, dtype=frozen_dtype)
        if hasattr(self.ref_model, "to"):
            self.ref_model.to(self.accelerator.device)

        tok, column = self.tokenizer, config.prompt_column
        self.train_prompts = read_prompts(train_dataset, column, tok) if train_dataset is not None else None
        self.clm_texts = read_texts(clm_dataset, column, tok) if clm_dataset is not None else None

        self.optimizer = self._setup_optimizer()
        self.lr_scheduler = self._setup_scheduler(self.optimizer)
        self.engine = Engine.prepare(self.accelerator, self.student, self.optimizer, self.lr_scheduler, config)
        self.model, self.optimizer, self.lr_scheduler = (
            self.engine.model,
            self.engine.optimizer,
            self.engine.lr_scheduler,
        )
        self.kl_ctl = make_kl_controller(config)
        self.score_processor = self._setup_score_processing()
        self.early_stopping = self._setup_early_stopping()

        lm_config = getattr(getattr(self.student, "pretrained_model", None), "config", None)
        self.max_positions: int | None = getattr(lm_config, "max_position_embeddings", None)
        models = (self.tokenizer, self.teacher, self.reward_model)
        self.rollouts = RolloutCollector(config, self.engine, *models, self.max_positions)
        self.logit_teacher = self._setup_logit_teacher()
        self.global_step = 0
        self.last_checkpoint: str | None = None
        self._streams: dict[tuple[str, int], schedule.ItemStream] = {}
        self.metrics_log = MetricsLog(config.output_dir)

    # ------------------------------------------------------------------ setup (overridable)
    def _setup_optimizer(self) -> torch.optim.Optimizer:
        """adamw (default), adam, sgd, adafactor, or any torch.optim class by name, with optimizer_kwargs."""
        return build_optimizer(self.config, [p for p in self.student.parameters() if p.requires_grad])

    def _setup_scheduler(self, optimizer: torch.optim.Optimizer) -> Any:
        """transformers' get_scheduler over the run's optimizer steps, `warmup` of them warming up."""
        return build_scheduler(self.config, optimizer, self.total_optimizer_steps())

    def _setup_reference(self) -> Any:
        """The KL reference when it is the initial student: the student with its LoRA adapters disabled, or a
        frozen copy of the student as it starts; None when the teacher is the reference."""
        if self.config.kl_reference != "initial_student":
            return None
        return AdaptersDisabled(self.student) if has_lora(self.student) else _frozen_copy(self.student)

    def _frozen_dtype(self) -> torch.dtype:
        """The dtype of the teacher and the reward model: frozen_dtype, or the student's for 'auto'."""
        if self.config.frozen_dtype == "auto":
            return next(iter(self.student.parameters())).dtype
        return getattr(torch, self.config.frozen_dtype)

    def _setup_early_stopping(self) -> EarlyStopping:
        """Epoch-level target_kl test and run-level patience on the mean reward."""
        c = self.config
        return EarlyStopping(c.early_stopping, c.target_kl, c.patience, c.patience_min_delta)

    def _setup_score_processing(self) -> ScoreProcessor:
        """Running moments with scaling, normalisation and clipping of scores (docs/ALGORITHM.md)."""
        c = self.config
        return ScoreProcessor(c.use_score_scaling, c.use_score_norm, c.score_clip, gather=self.accelerator.gather)

    def _check_teacher(self) -> None:
        if self.teacher is None:
            if self.config.needs_teacher:
                allowed = (
                    "is required with kl_reference=teacher, distill_coef > 0 or use_teacher_demos=true "
                    "(plain PPO: kl_reference=initial_student, distill_coef=0, use_teacher_demos=false)"
                )
                raise ConfigError("teacher", None, allowed)
            return
        teacher_tok, c = getattr(self.teacher, "tokenizer", None), self.config
        if teacher_tok is None or same_vocabulary(teacher_tok, self.tokenizer):
            return
        uld = c.cross_tokenizer_distill == "uld"
        if (c.distill_coef > 0 and not uld) or c.kl_reference == "teacher":
            field, value = (
                ("kl_reference", "teacher") if c.kl_reference == "teacher" else ("distill_coef", c.distill_coef)
            )
            allowed = (
                "needs distill_coef=0 (or cross_tokenizer_distill=uld) and kl_reference=initial_student with this "
                "teacher: its tokenizer differs from the student's, and distillation and the teacher as KL "
                "reference compare next-token distributions over one vocabulary (its demos travel as text and "
                "work with any tokenizer)"
            )
            raise ConfigError(field, value, allowed)

    def add_callback(self, callback: Subscriber) -> None:
        """Subscribe a callable to every event."""
        self.callbacks.append(callback)

    def total_optimizer_steps(self) -> int:
        """Optimizer updates of the whole run if no batch stops early."""
        return schedule.total_optimizer_steps(self.config)

    def item_stream(self, name: str, n_items: int) -> schedule.ItemStream:
        """The shuffled stream of item indices this process reads for steps of kind `name` ('ppo' or 'clm')."""
        key = (name, n_items)
        if key not in self._streams:
            acc, c = self.accelerator, self.config
            stream = schedule.ItemStream(name, n_items, c.batch_size, c.seed, acc.num_processes, acc.process_index)
            self._streams[key] = stream
        return self._streams[key]

    # ------------------------------------------------------------------ one step
    def step(self, queries: Sequence[torch.Tensor], responses: Sequence[torch.Tensor], scores: Any) -> dict[str, float]:
        """One PPO step on given samples: lists of 1-D token tensors and one score per sample.

        With distillation, demos, CLM and entropy off this is TRL 0.11's `PPOTrainer.step`.
        """
        check_samples(queries, responses, scores, self.config.mini_batch_size * self.config.gradient_accumulation_steps)
        device = self.accelerator.device
        scores = torch.stack([torch.as_tensor(s, dtype=torch.float32).reshape(()) for s in scores]).to(device)
        self._check_finite(scores, "the scores passed to step()")
        rollouts = self.rollouts
        batch = batch_from_lists(queries, responses, rollouts.pad_token_id, rollouts.eos_token_id, device)
        stats = self._update(batch, scores, torch.zeros(len(batch), dtype=torch.bool, device=device))
        reward = self.engine.reduce_mean(
            torch.stack([scores.mean(), scores.std() if len(scores) > 1 else scores.new_zeros(())])
        )
        stats[S.REWARD_MEAN], stats[S.REWARD_STD] = reward.tolist()
        return stats

    def _setup_logit_teacher(self) -> Any:
        """The teacher whose logits the update reads. One with another vocabulary has none over the student's
        tokens: its rank-matched view with cross_tokenizer_distill=uld (tnd_core.models.cross_tokenizer), else
        none (its demos are all it gives)."""
        if not self.rollouts.demos_as_text:
            return self.teacher
        if self.config.cross_tokenizer_distill == "uld" and self.config.distill_coef > 0:

            def student_logits(ids: Any, mask: Any, positions: Any, keep: int) -> torch.Tensor:
                return self.engine.model(ids, mask, positions, logits_to_keep=keep)[0]

            return RankMatchedTeacher(self.teacher, self.tokenizer, student_logits)
        return None

    def _update(self, batch: Any, scores: torch.Tensor, is_demo: torch.Tensor) -> dict[str, float]:
        models = {"teacher": self.logit_teacher, "reference": self.ref_model}
        controllers = {"kl_ctl": self.kl_ctl, "early_stopping": self.early_stopping}
        where = {"step": self.global_step + 1, "last_checkpoint": self.last_checkpoint}
        return ppo_update(
            self.engine, self.config, batch, self.score_processor(scores), is_demo, **models, **controllers, **where
        )

    def _ppo_step(self, prompts: list[str]) -> tuple[dict[str, float], list[RolloutSample]]:
        """Rollout of trials (and demos) for the next prompts of the stream, then the PPO update."""
        stream_step = schedule.steps_of_kind_before(self.config, self.global_step, "ppo")
        batch_prompts = [prompts[i] for i in self.item_stream("ppo", len(prompts)).batch(stream_step)]
        rollout = self.rollouts.collect(batch_prompts)
        self._check_finite(rollout.scores, "the scores of reward_model")
        stats = self._update(rollout.batch, rollout.scores, rollout.is_demo)
        stats.update(rollout_stats(rollout, self.engine, stats))
        self._emit(RolloutTextsEvent(self.global_step + 1, rollout.trial_responses, rollout.demo_responses))
        return stats, rollout.samples

    def _clm_step(self, texts: list[str]) -> dict[str, float]:
        stream_step = schedule.steps_of_kind_before(self.config, self.global_step, "clm")
        batch_texts = [texts[i] for i in self.item_stream("clm", len(texts)).batch(stream_step)]
        where = {"step": self.global_step + 1, "last_checkpoint": self.last_checkpoint}
        return clm_step(
            self.engine, self.config, self.tokenizer, batch_texts, max_positions=self.max_positions, **where
        )

    def _check_finite(self, scores: torch.Tensor, what: str) -> None:
        bad = int((~torch.isfinite(scores)).sum().item())
        if bad:
            what = f"{what} ({bad} of {len(scores)})"
            raise TrainingDiverged(what, self.global_step + 1, self.last_checkpoint, "Check the reward model.")

    # ------------------------------------------------------------------ the run
    def train(
        self,
        train_dataset: Any = None,
        *,
        clm_dataset: Any = None,
        evaluator: Evaluator | None = None,
        resume_from_checkpoint: str | None = None,
    ) -> dict[str, Any]:
        """Train for `config.steps` steps; returns {'state', 'step', 'last_checkpoint', 'stats'}."""
        c = self.config
        prompts = read_prompts(train_dataset, c.prompt_column, self.tokenizer) if train_dataset is not None else None
        prompts = prompts or self.train_prompts
        if prompts is None:
            raise ConfigError("train_dataset", None, "is required: pass it to CustomPPOTrainer(...) or train(...)")
        clm_texts = read_texts(clm_dataset, c.prompt_column, self.tokenizer) if clm_dataset is not None else None
        clm_texts = clm_texts or self.clm_texts or prompts
        evaluator = evaluator or self.evaluator
        if self.reward_model is None and c.ppo_per_step > 0:
            allowed = (
                "is required by train(): a RewardModel, a sequence classifier, or an object with score_texts(texts)"
            )
            raise ConfigError("reward_model", None, allowed)
        state, last_stats = "completed", {}
        self._emit(StatusEvent(self.global_step, "started"))
        main = self.accelerator.is_main_process
        try:
            wanted = c.resume_from_checkpoint if resume_from_checkpoint is None else resume_from_checkpoint
            resume = self._tidy_output_dir_and_resolve(wanted)
            if resume is not None:
                self.load_checkpoint(resume)
                logger.info("resumed from %s at step %d", resume, self.global_step)
            saved_step = self.global_step if resume is not None else None
            if main:
                self.control.attach(self._models())
                Path(c.output_dir).mkdir(parents=True, exist_ok=True)
            if c.report_to != "none":
                flat = {k: v for k, v in c.to_dict().items() if not isinstance(v, dict)}
                self.accelerator.init_trackers("tnd", config=flat)
            started = time.perf_counter()
            while self.global_step < c.steps:
                if self.control.paused and main:
                    self._emit(StatusEvent(self.global_step, "paused"))
                    self.control.wait_while_paused()
                    if not self.control.stop_requested:
                        self._emit(StatusEvent(self.global_step, "resumed"))
                if self.engine.any_process(self.control.stop_requested):
                    state = "stopped"
                    break
                kind = schedule.step_kind(c, self.global_step)
                samples: list[RolloutSample] = []
                if kind == "ppo":
                    stats, samples = self._ppo_step(prompts)
                else:
                    stats = self._clm_step(clm_texts)
                self.global_step += 1
                step, last_stats = self.global_step, stats
                if step % c.logging_steps == 0 or step == c.steps:
                    self._log_step(stats, samples, time.perf_counter() - started)
                if evaluator is not None and c.eval_steps and step % c.eval_steps == 0:
                    self._evaluate(evaluator)
                if c.save_steps and step % c.save_steps == 0:
                    self.save_checkpoint()
                    saved_step = step
                if main:
                    self.control.serve(self._models())
                if kind == "ppo" and self.early_stopping.stop_run(stats[S.REWARD_MEAN]):
                    state = "early_stopped"
                    break
            if saved_step != self.global_step:
                self.save_checkpoint()
        except Exception as exc:
            self._fail(exc)
            raise
        finally:
            if main:
                self.control.detach()
            if c.report_to != "none":
                self.accelerator.end_training()
        self._emit(StatusEvent(self.global_step, state))
        return {"state": state, "step": self.global_step, "last_checkpoint": self.last_checkpoint, "stats": last_stats}

    def _models(self) -> TrainingModels:
        """The run's models for requests served between steps (see TrainingControl.submit)."""
        return TrainingModels(self.global_step, self.engine.unwrapped(), self.teacher, self.reward_model)

    # ------------------------------------------------------------------ events
    def _emit(self, event: Event) -> None:
        if not self.accelerator.is_main_process:
            return
        self.metrics_log(event)
        for callback in list(self.callbacks):
            try:
                callback(event)
            except Exception:
                logger.exception("event subscriber %r failed on %s; training continues", callback, type(event).__name__)

    def _log_step(self, stats: dict[str, float], samples: list[RolloutSample], elapsed: float) -> None:
        self._emit(StepEvent(self.global_step, self.config.steps, dict(stats), elapsed))
        if samples:
            self._emit(RolloutEvent(self.global_step, samples))
        if self.config.report_to != "none":
            self.accelerator.log(stats, step=self.global_step)

    def _evaluate(self, evaluator: Evaluator) -> None:
        if not self.accelerator.is_main_process:
            return
        was_training = self.model.training
        self.model.eval()
        with torch.no_grad():
            metrics = {k: float(v) for k, v in evaluator(self.engine.unwrapped(), self.teacher).items()}
        self.model.train(was_training)
        self._emit(EvalEvent(self.global_step, metrics, getattr(evaluator, "last_words", None)))

    def _fail(self, exc: BaseException) -> None:
        message = str(exc) if isinstance(exc, TndError) else f"{type(exc).__name__}: {exc}"
        error = ErrorEvent(self.global_step, message, type(exc).__name__, traceback.format_exc(), self.last_checkpoint)
        self._emit(error)
        self._emit(StatusEvent(self.global_step, "failed", message))

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self) -> Path:
        """Write `output_dir/checkpoint-<step>` atomically (checkpoint.py)."""
        path = checkpoint.save(self.engine, self.config, self.global_step, self._trainer_state())
        self.last_checkpoint = str(path)
        self._emit(CheckpointEvent(self.global_step, str(path)))
        return path

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore everything `save_checkpoint` wrote, so that training continues as if never stopped.

        With changed options the learning-rate schedule follows the new ones, and options the saved
        optimizer state belongs to are refused (checkpoint.load, checkpoint.compare_configs).
        """
        state = checkpoint.load(path, self.engine, self.config, self._setup_scheduler)
        self.kl_ctl.load_state_dict(state["kl_controller"])
        self.score_processor.load_state_dict(state["score_processing"])
        self.early_stopping.load_state_dict(state["early_stopping"])
        self.rollouts.baseline = state.get("shaping_baseline")
        self.global_step = state["step"]
        self.last_checkpoint = str(path)

    def _tidy_output_dir_and_resolve(self, wanted: str) -> Path | None:
        """Clear what a killed save left in output_dir, find the checkpoint to resume from, and prune the
        checkpoints beyond save_total_limit that a crash before pruning left (never the one resumed from)."""
        c, acc = self.config, self.accelerator
        if acc.is_main_process:
            checkpoint.remove_leftovers(c.output_dir)
        acc.wait_for_everyone()
        resume = checkpoint.resolve(wanted, c.output_dir)
        if acc.is_main_process:
            checkpoint.prune(c.output_dir, c.save_total_limit, keep=resume)
        acc.wait_for_everyone()
        return resume

    def _trainer_state(self) -> dict[str, Any]:
        return {
            "step": self.global_step,
            "num_processes": self.accelerator.num_processes,
            "kl_controller": self.kl_ctl.state_dict(),
            "score_processing": self.score_processor.state_dict(),
            "early_stopping": self.early_stopping.state_dict(),
            "shaping_baseline": self.rollouts.baseline,
        }


def _frozen_copy(student: Any) -> Any:
    ref = copy.deepcopy(student)
    ref.requires_grad_(False)
    ref.eval()
    return ref
