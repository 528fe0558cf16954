"""What the tabs share, below them: config files and presets, uploads, the bundle's prompts, the
app's run function, loading a config's models, and Compare.

Tabs call these and format the answers; no tab imports another. Nothing here reads the trainer:
models of a run arrive through `Runner.call_between_steps` as `tnd_core.events.TrainingModels`.
Importing this module does not load torch (the model and Compare work import it when they run).
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from app.context import AppContext, BundleManager, LoadedModels, device_name
from app.runner import RunFunction, RunStore
from tnd_core import pipeline
from tnd_core.cache import cache_root
from tnd_core.config import CustomPPOConfig, specs_tagged
from tnd_core.data.prompts import TABLE_SUFFIXES
from tnd_core.errors import ConfigError
from tnd_core.events import Subscriber, TrainingControl, TrainingModels
from tnd_core.sources import is_bundle, uses_bundle

if TYPE_CHECKING:
    from tnd_core.evaluation.compare import CompareResult

CONFIG_FILE = "tnd_config.yaml"
PRESET_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MAX_UPLOAD_MB = 50


# ---------------------------------------------------------------------- config files and presets
def write_config_file(config: CustomPPOConfig) -> str:
    """The config as a fresh YAML file to download."""
    path = Path(tempfile.mkdtemp(prefix="tnd-config-")) / CONFIG_FILE
    config.save(path)
    return str(path)


def presets_dir() -> Path:
    """Where saved presets live: `presets` under the cache root."""
    return cache_root() / "presets"


def list_presets() -> list[str]:
    """Names of the saved presets, sorted."""
    folder = presets_dir()
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def save_preset(name: str, config: CustomPPOConfig) -> Path:
    """Write `config` as the preset `name` (letters, digits, '_', '-', '.')."""
    name = (name or "").strip()
    if not PRESET_NAME.match(name):
        raise ConfigError("preset name", name, "1-64 letters, digits, '_', '-' or '.'")
    folder = presets_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    config.save(path)
    return path


def load_preset(name: str) -> CustomPPOConfig:
    """Read the preset `name`."""
    if not name or name not in list_presets():
        raise ConfigError("preset", name, f"one of: {', '.join(list_presets()) or 'no presets saved yet'}")
    return CustomPPOConfig.load(presets_dir() / f"{name}.yaml")


# ---------------------------------------------------------------------- uploaded prompt files
def uploads_dir() -> Path:
    """Where uploaded prompt files are kept: `uploads` under the cache root."""
    return cache_root() / "uploads"


def keep_upload(path: str) -> Path:
    """Copy an upload out of Gradio's temporary cache so a run can read it later; checks size and type."""
    source = Path(path)
    size_mb = source.stat().st_size / 2**20
    if size_mb > MAX_UPLOAD_MB:
        raise ConfigError("dataset file", source.name, f"at most {MAX_UPLOAD_MB} MB (this one has {size_mb:.1f} MB)")
    if source.suffix.lower() not in TABLE_SUFFIXES:
        raise ConfigError("dataset file", source.name, f"a {', '.join(TABLE_SUFFIXES)} file")
    target = uploads_dir() / source.name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target


# ---------------------------------------------------------------------- the bundle
def prompts_table(ctx: AppContext, source: str) -> Path | None:
    """The file a prompts source reads (the bundle's prompts, a local table), None for a hub dataset id."""
    if is_bundle(source):
        return Path(ctx.bundle.wait(timeout_s=1.0).prompts)
    path = Path(source).expanduser()
    return path if path.suffix.lower() in TABLE_SUFFIXES or path.exists() else None


def eval_prompts(ctx: AppContext, limit: int = 30, words: int = 3) -> list[str]:
    """Prompts of the bundle's held-out sentences (their `prompt`, else their first few words); [] until it is ready."""
    paths = ctx.bundle.paths if ctx.bundle.ready else None
    path = Path(getattr(paths, "eval", "") or "")
    if not path.is_file():
        return []
    prompts: list[str] = []
    with path.open() as handle:
        for line in handle:
            record = json.loads(line)
            head = (record.get("prompt") or " ".join(str(record.get("text", "")).split()[:words])).strip()
            if head and head not in prompts:
                prompts.append(head)
            if len(prompts) >= limit:
                break
    return prompts


def training_run_function(bundle: BundleManager, store: RunStore) -> RunFunction:
    """`tnd_core.pipeline.run_training`, after waiting for the app's bundle when the config uses it.

    The app builds the bundle once in the background; a run that needs it waits for that build
    (its progress shows in the store's status line) instead of starting a second one.
    """

    def run(
        config: CustomPPOConfig, callbacks: Sequence[Subscriber] = (), control: TrainingControl | None = None
    ) -> dict[str, Any]:
        if uses_bundle(config):
            bundle.wait(on_progress=lambda line: store.set_detail(f"Waiting for the bundle: {line}"))
            store.set_detail("")
        return pipeline.run_training(config, callbacks=callbacks, control=control)

    return run


# ---------------------------------------------------------------------- models
def model_options(config: CustomPPOConfig) -> dict[str, Any]:
    """The options that decide which models a config loads (tagged 'model_source')."""
    return {spec.name: getattr(config, spec.name) for spec in specs_tagged("model_source")}


def load_models(ctx: AppContext, config: CustomPPOConfig, progress: Callable[..., Any] | None = None) -> LoadedModels:
    """Load the teacher, student and reward model of `config` onto the app's device and keep them in
    `ctx.models`. Waits for the app's bundle when a model comes from it, so it is never built twice;
    `progress(fraction, desc=...)` (Gradio's) hears of each model."""
    options = model_options(config)
    # resolving the config's sources touches the bundle whenever any of them (prompts too) names it
    if uses_bundle(config):
        ctx.bundle.wait()
    tell = None if progress is None else (lambda fraction, message: progress(fraction, desc=message))
    teacher, student, reward_model = pipeline.load_models(config, progress=tell)
    device = device_name()
    loaded = LoadedModels(
        teacher=teacher.to(device),
        student=student.to(device),
        reward_model=reward_model.to(device),
        sources={
            "teacher": config.teacher_name_or_path,
            "student": config.student_name_or_path,
            "reward_model": config.reward_model_name_or_path,
        },
        options=options,
    )
    with ctx.models_lock:
        ctx.models = loaded
    return loaded


def models_for(ctx: AppContext, config: CustomPPOConfig) -> LoadedModels:
    """The loaded models when they are `config`'s, else `config`'s models loaded now."""
    with ctx.models_lock:
        current = ctx.models
    if current.student is not None and current.options == model_options(config):
        return current
    return load_models(ctx, config)


# ---------------------------------------------------------------------- Compare
def run_compare(ctx: AppContext, prompt: str, config: CustomPPOConfig, seed: int) -> tuple[CompareResult, str]:
    """Compare (`tnd_core.evaluation.compare`) on the current run's models between two steps, or on
    the models loaded for `config` when there is no run; returns the result and whose student answered.

    A run that holds no teacher or reward model (its config needs neither) borrows them from the
    models loaded for `config`, loaded here, outside the training thread.
    """
    from tnd_core.evaluation.compare import compare

    with ctx.models_lock:
        loaded = ctx.models if ctx.models.options == model_options(config) else LoadedModels()

    def on_models(models: TrainingModels | None) -> tuple[CompareResult, str] | None:
        if models is None:
            teacher, student, reward_model = loaded.teacher, loaded.student, loaded.reward_model
            who = f"student loaded from `{config.student_name_or_path}`"
        else:
            student = models.student
            teacher = loaded.teacher if models.teacher is None else models.teacher
            reward_model = loaded.reward_model if models.reward_model is None else models.reward_model
            who = f"student of the current run at step {models.step}"
        if teacher is None or student is None or reward_model is None:
            return None  # loaded models are missing: load them outside the training thread and ask again
        return compare(teacher, student, reward_model, prompt, config, seed), who

    outcome = ctx.runner.call_between_steps(on_models)
    if outcome is None:
        loaded = models_for(ctx, config)
        outcome = ctx.runner.call_between_steps(on_models)
    return outcome
