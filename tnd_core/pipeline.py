"""From a CustomPPOConfig to a running trainer: resolve the model and data sources, build, train.

What `tnd train` and the app call. Works the same under `accelerate launch` / torchrun: every
process loads the models, and the main process builds the embedded bundle first if it is needed.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

from tnd_core.config import CustomPPOConfig
from tnd_core.events import Subscriber, TrainingControl

logger = logging.getLogger(__name__)


def _is_bundle(source: str) -> bool:
    return source == "bundle" or source.startswith("bundle:")


def needs_teacher(config: CustomPPOConfig) -> bool:
    """Whether the run uses the teacher at all (KL reference, distillation or demos)."""
    return config.kl_reference == "teacher" or config.distill_coef > 0 or config.use_teacher_demos


def load_components(config: CustomPPOConfig) -> tuple[Any, Any, Any, list[str], list[str] | None, Callable[[Any, Any], dict[str, float]] | None]:
    """(teacher, student, reward_model, train_prompts, clm_texts, evaluator) for a config.

    The teacher is None when the run doesn't use it, the reward model when no PPO step runs.
    clm_texts is the bundle's corpus when the prompts come from the bundle (None: CLM steps use the
    prompts). The evaluator is the bundle's when the student is the bundle's (it shares the tokenizer).
    """
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    from tnd_core.data.prompts import load_prompts
    from tnd_core.models import load_reward_model, load_student, load_teacher

    sources = (config.teacher_name_or_path, config.student_name_or_path, config.reward_model_name_or_path, config.dataset_name_or_path)
    # The same CPU switch as accelerate's own state, so that `ACCELERATE_USE_CPU=true torchrun ...` runs on gloo.
    with PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU")).main_process_first():
        paths = None
        if any(_is_bundle(s) for s in sources):
            from tnd_core.data.bundle import ensure_bundle

            paths = ensure_bundle()
        teacher = load_teacher(config.teacher_name_or_path, config) if needs_teacher(config) else None
        student = load_student(config.student_name_or_path, config)
        reward_model = load_reward_model(config.reward_model_name_or_path, config) if config.ppo_per_step > 0 else None
        prompts = load_prompts(config.dataset_name_or_path, config.prompt_column)
        clm_texts = None
        if config.clm_per_step > 0 and config.dataset_name_or_path == "bundle":
            clm_texts = load_prompts(str(paths.corpus), "text")
        evaluator = None
        if config.student_name_or_path == "bundle":
            from tnd_core.evaluation import bundle_evaluator

            evaluator = bundle_evaluator(paths)
    return teacher, student, reward_model, prompts, clm_texts, evaluator


def build_trainer(config: CustomPPOConfig, callbacks: Sequence[Subscriber] = (), control: TrainingControl | None = None) -> Any:
    """A CustomPPOTrainer with everything the config names loaded."""
    from tnd_core.trainers.ppo_trainer.ppo import CustomPPOTrainer

    teacher, student, reward_model, prompts, clm_texts, evaluator = load_components(config)
    return CustomPPOTrainer(
        teacher=teacher,
        student=student,
        reward_model=reward_model,
        config=config,
        train_dataset=prompts,
        clm_dataset=clm_texts,
        evaluator=evaluator,
        callbacks=callbacks,
        control=control,
    )


def run_training(config: CustomPPOConfig, callbacks: Sequence[Subscriber] = (), control: TrainingControl | None = None) -> dict[str, Any]:
    """Build and train; returns {'state', 'step', 'last_checkpoint', 'stats'} (what `tnd train` runs)."""
    trainer = build_trainer(config, callbacks=callbacks, control=control)
    result = trainer.train()
    if trainer.accelerator.is_main_process:
        logger.info("training %s at step %d; last checkpoint: %s", result["state"], result["step"], result["last_checkpoint"])
    return result
