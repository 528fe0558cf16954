"""From a CustomPPOConfig to a running trainer: resolve the sources once, load, build, train.

What `tnd train` and the app call. Works the same under `accelerate launch` / torchrun: every
process loads the models, and the main process builds the embedded bundle first if it is needed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from tnd_core.config import CustomPPOConfig
from tnd_core.errors import ConfigError
from tnd_core.events import Subscriber, TrainingControl
from tnd_core.sources import ModelSource, ResolvedSources, is_bundle, resolve_sources, uses_bundle

logger = logging.getLogger(__name__)


@dataclass
class Components:
    """What a run is built from.

    None where unused: `teacher` when the run doesn't use it, `reward_model` when no PPO step runs,
    `clm_texts` when CLM steps use the prompts, `evaluator` when the student is not the bundle's.
    """

    teacher: Any
    student: Any
    reward_model: Any
    prompts: list[str]
    clm_texts: list[str] | None
    evaluator: Callable[[Any, Any], dict[str, float]] | None


def _load(role: str, source: ModelSource, config: CustomPPOConfig) -> Any:
    from tnd_core.models import load_reward_model, load_student, load_teacher

    loader = {"teacher": load_teacher, "student": load_student, "reward_model": load_reward_model}[role]
    return loader(source.model, source.tokenizer, trust_remote_code=config.trust_remote_code)


def _load_components(config: CustomPPOConfig, sources: ResolvedSources) -> Components:
    from tnd_core.data.prompts import load_prompts
    from tnd_core.evaluation import bundle_evaluator, load_word_list

    use_corpus = config.clm_per_step > 0 and sources.clm_corpus is not None
    # The data first: a wrong file or column fails in seconds, not after the models have loaded.
    prompts = load_prompts(sources.prompts, sources.prompt_column)
    check_memory(config, sources)
    word_list = load_word_list(config.eval_word_list) if config.eval_word_list else None
    if word_list and sources.evaluation_bundle is None:
        raise ConfigError("eval_word_list", config.eval_word_list, "needs the bundle's student, whose evaluation it is")
    return Components(
        teacher=_load("teacher", sources.teacher, config) if config.needs_teacher else None,
        student=_load("student", sources.student, config),
        reward_model=_load("reward_model", sources.reward_model, config) if config.ppo_per_step > 0 else None,
        prompts=prompts,
        clm_texts=load_prompts(sources.clm_corpus, "text") if use_corpus else None,
        evaluator=(
            bundle_evaluator(sources.evaluation_bundle, word_list=word_list) if sources.evaluation_bundle else None
        ),
    )


def _used_sources(config: CustomPPOConfig, sources: ResolvedSources) -> dict[str, ModelSource | None]:
    """The model sources a run loads, by role; None for a role it does not load."""
    return {
        "student": sources.student,
        "teacher": sources.teacher if config.needs_teacher else None,
        "reward_model": sources.reward_model if config.ppo_per_step > 0 else None,
    }


def memory_plan(config: CustomPPOConfig, sources: ResolvedSources | None = None, device: Any = None) -> Any:
    """The run's MemoryPlan (tnd_core.models.memory_plan) from its models' configs, read without loading
    any weights; `sources` default to the config's, resolved (building the bundle if one names it)."""
    from transformers import AutoConfig

    from tnd_core.models.memory_plan import default_device, plan_memory

    sources = sources or resolve_sources(config)
    configs = {
        role: None
        if source is None
        else AutoConfig.from_pretrained(str(source.model), trust_remote_code=config.trust_remote_code)
        for role, source in _used_sources(config, sources).items()
    }
    device = device if device is not None else default_device()
    available = None
    if str(device).startswith("cpu"):
        from accelerate import PartialState

        from tnd_core.models.memory_plan import available_memory

        # processes launched on one machine's CPU share its RAM, each with its own copy of the models
        available = available_memory(device) / max(PartialState().num_processes, 1)
    return plan_memory(config, configs["student"], configs["teacher"], configs["reward_model"], device, available)


def check_memory(config: CustomPPOConfig, sources: ResolvedSources | None = None) -> Any:
    """The memory plan, acted on as memory_check says: 'refuse' raises MemoryPlanError for a run that will
    not fit (the plan and the options that would make it fit in its message), 'warn' logs it, 'off'
    skips the plan (returns None). A model config that cannot be read leaves the check to the loaders."""
    from tnd_core.models.memory_plan import MemoryPlanError

    if config.memory_check == "off":
        return None
    try:
        plan = memory_plan(config, sources)
    except (OSError, ValueError) as exc:
        logger.warning("no memory plan: a model config cannot be read (%s); loading the models will tell", exc)
        return None
    if plan.fits:
        logger.info("%s", plan)
    elif config.memory_check == "refuse":
        raise MemoryPlanError(plan)
    else:
        logger.warning("%s", MemoryPlanError(plan))
    return plan


def plan_without_fetching(config: CustomPPOConfig, bundle_ready: bool) -> Any:
    """The memory plan when every model the run loads can be read at once (from the built bundle or a
    local folder), else None: nothing is built or downloaded (for the app, as the user edits the form)."""
    if uses_bundle(config) and not bundle_ready:
        return None
    used = {
        "student_name_or_path": True,
        "teacher_name_or_path": config.needs_teacher,
        "reward_model_name_or_path": config.ppo_per_step > 0,
    }
    for name, loaded in used.items():
        source = getattr(config, name)
        if loaded and not is_bundle(source) and not Path(source).expanduser().is_dir():
            return None
    try:
        return memory_plan(config)
    except (OSError, ValueError):
        return None


def load_components(config: CustomPPOConfig) -> Components:
    """Resolve the config's sources (building the bundle if one names it) and load what the run uses."""
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    # The same CPU switch as accelerate's own state, so that `ACCELERATE_USE_CPU=true torchrun ...` runs on gloo.
    with PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU")).main_process_first():
        return _load_components(config, resolve_sources(config))


def load_models(config: CustomPPOConfig, progress: Callable[[float, str], None] | None = None) -> tuple[Any, Any, Any]:
    """(teacher, student, reward_model) of a config, all three, outside a run (for comparing models).

    Resolves the sources like a run does; a source naming the bundle builds it first if it is missing,
    so a caller that must not block waits for the bundle before calling this. `progress(fraction, message)`
    is told before each model loads.
    """
    sources = resolve_sources(config)
    roles = (("teacher", sources.teacher), ("student", sources.student), ("reward_model", sources.reward_model))
    models = []
    for i, (role, source) in enumerate(roles):
        if progress is not None:
            progress(i / len(roles), f"loading the {role.replace('_', ' ')} from {source.model}")
        models.append(_load(role, source, config))
    return tuple(models)


def build_trainer(
    config: CustomPPOConfig, callbacks: Sequence[Subscriber] = (), control: TrainingControl | None = None
) -> Any:
    """A CustomPPOTrainer with everything the config names loaded."""
    from tnd_core.evaluation.word_log import WordLog
    from tnd_core.trainers.ppo_trainer.ppo import CustomPPOTrainer

    components = load_components(config)
    if components.evaluator is not None:  # the per-word record beside metrics.jsonl (word_surprisal.jsonl, ...)
        callbacks = [*callbacks, WordLog(config.output_dir, components.evaluator.corpus_path)]
    return CustomPPOTrainer(
        teacher=components.teacher,
        student=components.student,
        reward_model=components.reward_model,
        config=config,
        train_dataset=components.prompts,
        clm_dataset=components.clm_texts,
        evaluator=components.evaluator,
        callbacks=callbacks,
        control=control,
    )


def run_training(
    config: CustomPPOConfig, callbacks: Sequence[Subscriber] = (), control: TrainingControl | None = None
) -> dict[str, Any]:
    """Build and train; returns {'state', 'step', 'last_checkpoint', 'stats'} (what `tnd train` runs)."""
    trainer = build_trainer(config, callbacks=callbacks, control=control)
    result = trainer.train()
    if trainer.accelerator.is_main_process:
        logger.info(
            "training %s at step %d; last checkpoint: %s", result["state"], result["step"], result["last_checkpoint"]
        )
    return result
