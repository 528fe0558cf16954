"""What the tabs share, below them: config files and presets, uploads, the bundle's prompts, the
app's run function, loading a config's models, and Compare.

Tabs call these and format the answers; no tab imports another. Nothing here reads the trainer:
models of a run arrive through `Runner.call_between_steps` as `tnd_core.events.TrainingModels`.
Importing this module does not load torch (the model and Compare work import it when they run).
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from app.context import AppContext, BundleManager, LoadedModels, device_name
from app.hosting import HostPolicy, run_name, session_key
from app.runner import RunFunction, RunStore
from app.throttle import Meter
from tnd_core import pipeline, runs
from tnd_core.cache import cache_root
from tnd_core.config import CustomPPOConfig, specs_tagged
from tnd_core.data.prompts import TABLE_SUFFIXES
from tnd_core.errors import ConfigError, TndError
from tnd_core.events import Subscriber, TrainingControl, TrainingModels
from tnd_core.sources import MODEL_SOURCE_FIELDS, is_bundle, uses_bundle

if TYPE_CHECKING:
    from tnd_core.evaluation.compare import CompareResult, ModelComparison

CONFIG_FILE = "tnd_config.yaml"
PRESET_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MAX_UPLOAD_MB = 50
MAX_PROMPT_CHARS = 2000
MAX_PRESETS_HOSTED = 20


# ---------------------------------------------------------------------- config files and presets
def write_config_file(config: CustomPPOConfig) -> str:
    """The config as a fresh YAML file to download."""
    path = Path(tempfile.mkdtemp(prefix="tnd-config-")) / CONFIG_FILE
    config.save(path)
    return str(path)


def presets_dir(ctx: AppContext, owner: str | None = None) -> Path:
    """Where saved presets live: `presets` under the cache root; in hosted mode each session has its own."""
    if ctx.policy.hosted:
        return ctx.policy.data_root / "presets" / session_key(owner)
    return cache_root() / "presets"


def list_presets(ctx: AppContext, owner: str | None = None) -> list[str]:
    """Names of the saved presets, sorted."""
    folder = presets_dir(ctx, owner)
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def save_preset(ctx: AppContext, name: str, config: CustomPPOConfig, owner: str | None = None) -> Path:
    """Write `config` as the preset `name` (letters, digits, '_', '-', '.')."""
    name = (name or "").strip()
    if not PRESET_NAME.match(name):
        raise ConfigError("preset name", name, "1-64 letters, digits, '_', '-' or '.'")
    saved = list_presets(ctx, owner)
    if ctx.policy.hosted and name not in saved and len(saved) >= MAX_PRESETS_HOSTED:
        raise ConfigError("preset name", name, f"at most {MAX_PRESETS_HOSTED} presets per session on this hosted app")
    folder = presets_dir(ctx, owner)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    config.save(path)
    return path


def load_preset(ctx: AppContext, name: str, owner: str | None = None) -> CustomPPOConfig:
    """Read the preset `name`."""
    saved = list_presets(ctx, owner)
    if not name or name not in saved:
        raise ConfigError("preset", name, f"one of: {', '.join(saved) or 'no presets saved yet'}")
    return CustomPPOConfig.load(presets_dir(ctx, owner) / f"{name}.yaml")


# ---------------------------------------------------------------------- uploaded prompt files
def keep_upload(ctx: AppContext, path: str, owner: str | None) -> tuple[Path, str]:
    """Copy an upload out of Gradio's temporary cache into the session's own uploads folder, so a run can
    read it later and no other session sees it; returns the kept file and the source value naming it."""
    source = Path(path)
    if source.suffix.lower() not in TABLE_SUFFIXES:
        raise ConfigError("dataset file", source.name, f"a {', '.join(TABLE_SUFFIXES)} file")
    return ctx.policy.keep_upload(source, owner, MAX_UPLOAD_MB)


# ---------------------------------------------------------------------- the bundle
def prompts_table(ctx: AppContext, source: str, owner: str | None = None) -> Path | None:
    """The file a prompts source reads (the bundle's prompts, a local table), None for a Hub dataset id.

    In hosted mode only the bundle, the data root and the session's uploads are read; anything else
    is refused before the disk is touched (`HostPolicy.check_source`).
    """
    if is_bundle(source):
        return Path(ctx.bundle.wait(timeout_s=1.0).prompts)
    if ctx.policy.hosted:
        resolved = ctx.policy.check_source("dataset_name_or_path", source, owner)
        if resolved.startswith("hub:"):
            return None
        source = resolved
    path = Path(source).expanduser()
    return path if path.suffix.lower() in TABLE_SUFFIXES or path.exists() else None


def preview_source(ctx: AppContext, source: str, owner: str | None) -> str | Path:
    """What the Data tab's preview reads for `source`: a local table, or a Hub dataset id (fetched into
    the Hub cache within the host's limits in hosted mode)."""
    path = prompts_table(ctx, source, owner)
    if path is not None:
        return path
    if ctx.policy.hosted:
        return ctx.policy.fetch_sources(CustomPPOConfig(dataset_name_or_path=source)).dataset_name_or_path
    return source


# ---------------------------------------------------------------------- starting runs
def start_run(
    ctx: AppContext, config: CustomPPOConfig, owner: str | None, username: str | None = None
) -> CustomPPOConfig:
    """Start `config` as the app's job owned by `owner`, after the host's checks (sign-in, limits, sources,
    the run folder); returns the config as it runs, with `output_dir` its run folder.

    The run folder is under the runs root (`HostPolicy.run_folder`; in local mode an absolute `output_dir`
    is used as given). A fresh run (no `resume_from_checkpoint`) never mixes into a folder that already
    holds a run: it gets the next free name, `<name>-2`, `<name>-3`, ... (`tnd_core.runs.free_name`).
    """
    ctx.policy.check_starter(username)
    checked = ctx.policy.check_config(config, owner)
    ctx.runner.require_idle(owner)  # refused before any run folder is touched
    if checked.memory_check == "refuse":  # the run checks again once its models are fetched
        plan = pipeline.plan_without_fetching(checked, ctx.bundle.ready)
        if plan is not None and not plan.fits:
            from tnd_core.models.memory_plan import MemoryPlanError

            raise MemoryPlanError(plan)
    folder = ctx.policy.run_folder(checked.output_dir)
    if not checked.resume_from_checkpoint and runs.is_run_folder(folder):
        folder = folder.with_name(runs.free_name(folder.parent, folder.name))
    if str(folder) != checked.output_dir:
        checked = checked.replace(output_dir=str(folder))
    ctx.policy.claim_run(checked.output_dir, owner)
    ctx.runner.start(checked, owner or "")
    return checked


# ---------------------------------------------------------------------- the runs on disk
def run_records(ctx: AppContext) -> list[runs.RunRecord]:
    """Every run under the app's runs root, newest first."""
    return runs.list_runs(ctx.policy.runs_root)


def run_path(ctx: AppContext, name: str) -> Path:
    """The folder of the run `name` under the runs root; ConfigError for a name that is not one."""
    name = (name or "").strip()
    folder = ctx.policy.runs_root / name
    if not name or run_name(name) != name or not runs.is_run_folder(folder):
        known = ", ".join(r.name for r in run_records(ctx)[:10]) or "no runs yet"
        raise ConfigError("run", name, f"the name of a run under the runs root ({known})")
    return folder


def _require_owner(ctx: AppContext, folder: Path, owner: str | None, action: str) -> None:
    if not ctx.policy.owns_run(folder, owner):
        raise TndError(f"Only the session that started run {folder.name} can {action} it.")


def _require_not_live(ctx: AppContext, folder: Path, action: str) -> None:
    record = runs.read_run(folder)
    current = ctx.runner.store.snapshot()
    is_current_job = ctx.runner.running and current.config is not None and Path(current.config.output_dir) == folder
    if record.status in runs.LIVE_STATES or is_current_job:
        raise TndError(f"Run {folder.name} is {record.status}: stop it before you {action} it.")


def rename_run(ctx: AppContext, name: str, label: str, owner: str | None) -> runs.RunRecord:
    """Give a run another name in the Runs tab (its folder keeps its name); owner only."""
    folder = run_path(ctx, name)
    _require_owner(ctx, folder, owner, "rename")
    runs.set_meta(folder, label=label)
    return runs.read_run(folder)


def note_run(ctx: AppContext, name: str, note: str, owner: str | None) -> runs.RunRecord:
    """Set a run's note; owner only."""
    folder = run_path(ctx, name)
    _require_owner(ctx, folder, owner, "annotate")
    runs.set_meta(folder, note=note)
    return runs.read_run(folder)


def delete_run(ctx: AppContext, name: str, owner: str | None) -> None:
    """Remove a run folder with its checkpoints; owner only, never a live run."""
    folder = run_path(ctx, name)
    _require_owner(ctx, folder, owner, "delete")
    _require_not_live(ctx, folder, "delete")
    runs.delete_run(folder)


def run_config(folder: Path) -> CustomPPOConfig:
    """The config a run was started with (its config.yaml, else its latest checkpoint's)."""
    values = runs.read_config(folder)
    if not values:
        raise TndError(f"Run {folder.name} has no saved config (config.yaml) to start from.")
    return CustomPPOConfig.from_dict(values)


def resume_run(ctx: AppContext, name: str, owner: str | None, username: str | None = None) -> CustomPPOConfig:
    """Continue a stopped, early-stopped, failed or interrupted run from its latest checkpoint, with the
    config it ran with, as the app's job (`start_run`); its curves continue in the same folder."""
    folder = run_path(ctx, name)
    _require_owner(ctx, folder, owner, "resume")
    record = runs.read_run(folder)
    if record.status not in runs.RESUMABLE_STATES:
        raise TndError(f"Run {name} is {record.status}; only {', '.join(runs.RESUMABLE_STATES)} runs are resumed.")
    if record.last_checkpoint is None:
        raise TndError(f"Run {name} saved no checkpoint to resume from; start it again instead.")
    config = run_config(folder).replace(output_dir=str(folder), resume_from_checkpoint="latest")
    if config.steps <= record.checkpoints[-1]:
        raise TndError(f"Run {name} has done all its {config.steps} steps; fork it with more steps to go on.")
    return start_run(ctx, config, owner, username)


def fork_run(
    ctx: AppContext,
    name: str,
    step: int | None,
    changes: dict[str, Any],
    new_name: str,
    owner: str | None,
    username: str | None = None,
) -> CustomPPOConfig:
    """Start a new run from checkpoint `step` (None: the latest) of run `name`, with the old run's config
    changed by `changes`, as the app's job.

    The new folder gets a hard-linked copy of the checkpoint, so the old run can be deleted later. From
    the checkpoint carry over: the student's weights, the optimizer and schedule state, the KL
    controller, score normalisation, early stopping, the random generators and the metrics up to
    that step (the fork's curves start where the old run's were). Changed schedule options (learning
    rate, steps, ...) take effect; optimizer options cannot change (the saved state belongs to them).
    """
    folder = run_path(ctx, name)
    record = runs.read_run(folder)
    if not record.checkpoints:
        raise TndError(f"Run {name} saved no checkpoint to fork from.")
    step = record.checkpoints[-1] if step is None else int(step)
    if step not in record.checkpoints:
        raise ConfigError("checkpoint", step, f"one of run {name}'s checkpoints: {record.checkpoints}")
    base = run_config(folder).to_dict()
    base.update({k: v for k, v in changes.items() if k not in runs.PLACE_OPTIONS})
    target_name = runs.free_name(ctx.policy.runs_root, run_name(new_name or f"{name}-fork"))
    config = CustomPPOConfig.from_dict({**base, "output_dir": target_name})
    ctx.policy.check_starter(username)
    ctx.runner.require_idle(owner)
    target = ctx.policy.runs_root / target_name
    runs.copy_checkpoint(folder / f"checkpoint-{step}", target)
    runs.set_meta(target, forked_from={"run": name, "checkpoint": step})
    config = config.replace(output_dir=str(target), resume_from_checkpoint=str(target / f"checkpoint-{step}"))
    if ctx.policy.hosted:
        config = config.replace(resume_from_checkpoint=f"checkpoint-{step}")
    try:
        return start_run(ctx, config, owner, username)
    except Exception:
        shutil.rmtree(target, ignore_errors=True)  # a refused fork leaves no half-made run behind
        raise


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


def training_run_function(bundle: BundleManager, store: RunStore, policy: HostPolicy | None = None) -> RunFunction:
    """`tnd_core.pipeline.run_training`, after waiting for the app's bundle when the config uses it and,
    in hosted mode, fetching its Hub models and data within the host's limits.

    The app builds the bundle once in the background; a run that needs it waits for that build
    (its progress shows in the store's status line) instead of starting a second one.
    """
    policy = policy or HostPolicy()

    def run(
        config: CustomPPOConfig, callbacks: Sequence[Subscriber] = (), control: TrainingControl | None = None
    ) -> dict[str, Any]:
        config = policy.fetch_sources(config, progress=store.set_detail)
        if uses_bundle(config):
            bundle.wait(on_progress=lambda line: store.set_detail(f"Waiting for the bundle: {line}"))
        store.set_detail("")
        return pipeline.run_training(config, callbacks=callbacks, control=control)

    return run


# ---------------------------------------------------------------------- models
def model_options(config: CustomPPOConfig) -> dict[str, Any]:
    """The options that decide which models a config loads (tagged 'model_source')."""
    return {spec.name: getattr(config, spec.name) for spec in specs_tagged("model_source")}


def load_models(
    ctx: AppContext, config: CustomPPOConfig, progress: Callable[..., Any] | None = None, owner: str | None = None
) -> LoadedModels:
    """Load the teacher, student and reward model of `config` onto the app's device and keep them in
    `ctx.models`. Waits for the app's bundle when a model comes from it, so it is never built twice;
    `progress(fraction, desc=...)` (Gradio's) hears of each model. In hosted mode the sources pass the
    host's checks first and Hub models are fetched within its limits."""
    options = model_options(config)
    sources = {
        "teacher": config.teacher_name_or_path,
        "student": config.student_name_or_path,
        "reward_model": config.reward_model_name_or_path,
    }
    if ctx.policy.hosted:
        checked = ctx.policy.check_config(config, owner)
        tell_fetch = None if progress is None else (lambda message: progress(0, desc=message))
        config = ctx.policy.fetch_sources(checked, progress=tell_fetch, fields=MODEL_SOURCE_FIELDS)
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
        sources=sources,  # as the user gave them: never the local folders the Hub ids were fetched into
        options=options,
    )
    with ctx.models_lock:
        ctx.models = loaded
    return loaded


def models_for(ctx: AppContext, config: CustomPPOConfig, owner: str | None = None) -> LoadedModels:
    """The loaded models when they are `config`'s, else `config`'s models loaded now."""
    with ctx.models_lock:
        current = ctx.models
    if current.student is not None and current.options == model_options(config):
        return current
    return load_models(ctx, config, owner=owner)


# ---------------------------------------------------------------------- Compare
TEACHER_CHOICE, STUDENT_CHOICE = "teacher", "student"
# '<run name>/checkpoint-<step>': a checkpoint of a run under the runs root
CHECKPOINT_CHOICE = re.compile(r"^(?P<run>[A-Za-z0-9_.-]{1,64})/(?P<checkpoint>checkpoint-(?P<step>\d{1,12}))$")
MAX_COMPARE_SAMPLES = 8
MAX_COMPARE_SAMPLES_HOSTED = 4
# Checkpoint students kept loaded for Compare: enough for two sides, bounded whatever visitors pick.
CHECKPOINTS_KEPT = 2


def parse_seed(value: Any) -> int:
    """A Compare seed from a form or API value: an integer in [0, 2**32 - 1], else a ConfigError."""
    try:
        seed = int(value or 0)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError("seed", value, "must be an integer in [0, 2**32 - 1]") from None
    if not 0 <= seed < 2**32:
        raise ConfigError("seed", value, "must be an integer in [0, 2**32 - 1]")
    return seed


def max_compare_samples(ctx: AppContext) -> int:
    """The most samples per side one Compare may ask for (fewer on a hosted app)."""
    return MAX_COMPARE_SAMPLES_HOSTED if ctx.policy.hosted else MAX_COMPARE_SAMPLES


def parse_samples(ctx: AppContext, value: Any) -> int:
    """Samples per side from a form or API value: an integer in [1, max_compare_samples], else a ConfigError."""
    top = max_compare_samples(ctx)
    try:
        samples = int(value) if float(value) == int(value) else -1
    except (TypeError, ValueError, OverflowError):
        samples = -1
    if not 1 <= samples <= top:
        raise ConfigError("samples", value, f"an integer from 1 to {top}")
    return samples


def compare_checkpoints(ctx: AppContext, owner: str | None) -> dict[str, list[str]]:
    """The checkpoints Compare may load, by run (newest run first): every run under the runs root in local
    mode, the session's own runs in hosted mode; runs without a checkpoint are left out."""
    return {
        record.name: [f"checkpoint-{step}" for step in record.checkpoints]
        for record in run_records(ctx)
        if record.checkpoints and (not ctx.policy.hosted or ctx.policy.owns_run(record.path, owner))
    }


def compare_choices(ctx: AppContext, owner: str | None) -> list[str]:
    """What a Compare side may be: 'teacher', 'student' (the current one), '<run>/checkpoint-<step>'."""
    found = compare_checkpoints(ctx, owner)
    return [TEACHER_CHOICE, STUDENT_CHOICE] + [f"{run}/{name}" for run, names in found.items() for name in names]


def checkpoint_folder(ctx: AppContext, field_name: str, choice: str, owner: str | None) -> Path:
    """The folder of the checkpoint a Compare side names ('<run>/checkpoint-<step>'). The same ConfigError for
    a malformed name, a missing run or checkpoint and, in hosted mode, another session's run."""
    refusal = ConfigError(
        field_name, choice, "'teacher', 'student' or '<run>/checkpoint-<step>' of one of the runs you may compare"
    )
    match = CHECKPOINT_CHOICE.match(choice or "")
    if match is None or match["run"].startswith("."):
        raise refusal
    root = ctx.policy.runs_root.resolve()
    run_folder = root / match["run"]
    if not runs.is_run_folder(run_folder) or (ctx.policy.hosted and not ctx.policy.owns_run(run_folder, owner)):
        raise refusal
    folder = (run_folder / match["checkpoint"]).resolve()
    # a checkpoint linked to a folder elsewhere on the disk is not one of the run's
    if folder.parent != run_folder.resolve() or run_folder.resolve().parent != root:
        raise refusal
    if int(match["step"]) not in runs.list_checkpoints(run_folder):
        raise refusal
    return folder


class CheckpointStudents:
    """The students of the last `capacity` checkpoints Compare loaded (least recently used goes first), so
    memory stays bounded whatever visitors pick. A checkpoint saved again under the same name is reloaded."""

    def __init__(self, capacity: int = CHECKPOINTS_KEPT):
        self.capacity = capacity
        self._lock = threading.Lock()
        self._students: OrderedDict[tuple[str, int], Any] = OrderedDict()

    def get(self, folder: Path, tokenizer: Any, device: str) -> tuple[Any, bool]:
        """The student of the checkpoint at `folder` on `device`, and whether it was loaded now."""
        from tnd_core.evaluation.compare import load_checkpoint_student

        state = folder / runs.CHECKPOINT_STATE_FILE
        key = (str(folder), state.stat().st_mtime_ns if state.is_file() else 0)
        with self._lock:
            if key in self._students:
                self._students.move_to_end(key)
                return self._students[key], False
            # make room first, so at most `capacity` students are ever held, even while one loads
            while len(self._students) >= self.capacity:
                self._students.popitem(last=False)
            student = load_checkpoint_student(folder, tokenizer).to(device)
            self._students[key] = student
            return student, True

    def folders(self) -> list[str]:
        """The checkpoint folders held, least recently used first."""
        with self._lock:
            return [folder for folder, _ in self._students]

    def clear(self) -> None:
        with self._lock:
            self._students.clear()


CHECKPOINT_STUDENTS = CheckpointStudents()


def run_compare(
    ctx: AppContext, prompt: str, config: CustomPPOConfig, seed: int, session: str | None = None
) -> tuple[CompareResult, str]:
    """Compare (`tnd_core.evaluation.compare`) on the current run's models between two steps, or on
    the models loaded for `config` when there is no run; returns the result and whose student answered.

    A run that holds no teacher or reward model (its config needs neither) borrows them from the
    models loaded for `config`, loaded here, outside the training thread. Each session gets the host's
    number of calls per minute, and all sessions together take at most `ctx.compare_budget`'s share
    of a running job's time, one call at a time.
    """
    from tnd_core.evaluation.compare import compare

    _check_compare_request(ctx, prompt, config, session, session)
    with ctx.compare_budget.turn(timeout_s=ctx.runner.request_timeout_s) as meter:

        def work(roles: dict[str, Any], who: dict[str, str]) -> tuple[CompareResult, str]:
            result = compare(roles[TEACHER_CHOICE], roles[STUDENT_CHOICE], roles["reward_model"], prompt, config, seed)
            return result, who[STUDENT_CHOICE]

        return _with_run_models(ctx, config, session, meter, work)


def run_compare_models(
    ctx: AppContext,
    prompt: str,
    config: CustomPPOConfig,
    seed: int,
    left: str = TEACHER_CHOICE,
    right: str = STUDENT_CHOICE,
    samples: int = 1,
    session: str | None = None,
    owner: str | None = None,
) -> tuple[ModelComparison, dict[str, str]]:
    """`tnd_core.evaluation.compare.compare_models` of two of: the teacher, the current student (the running
    job's, between two steps, else the one loaded for `config`) and a run's checkpoint ('<run>/checkpoint-
    <step>', see `checkpoint_folder`); `samples` per side. Returns the comparison and what each side is.

    The same limits as `run_compare`: the session's calls per minute, then one call at a time within
    `ctx.compare_budget`, which also pays for loading a checkpoint while a job runs. Checkpoint students
    stay loaded in `CHECKPOINT_STUDENTS` (at most two).
    """
    from tnd_core.evaluation.compare import compare_models

    _check_compare_request(ctx, prompt, config, session, owner)
    samples = parse_samples(ctx, samples)
    choices = {"left": (left or "").strip(), "right": (right or "").strip()}
    folders = {
        side: checkpoint_folder(ctx, side, choice, owner)
        for side, choice in choices.items()
        if choice not in (TEACHER_CHOICE, STUDENT_CHOICE)
    }
    with ctx.compare_budget.turn(timeout_s=ctx.runner.request_timeout_s) as meter:
        with ctx.models_lock:
            fallback = ctx.models.student
        tokenizer = getattr(fallback, "tokenizer", None)
        checkpoints = {}
        for side, folder in folders.items():
            # loading holds up no step, but takes the machine's time from a running job
            with meter.timing() if ctx.runner.running else contextlib.nullcontext():
                checkpoints[side], _ = CHECKPOINT_STUDENTS.get(folder, tokenizer, device_name())

        def work(roles: dict[str, Any], who: dict[str, str]) -> tuple[ModelComparison, dict[str, str]]:
            models = {side: checkpoints[side] if side in checkpoints else roles[c] for side, c in choices.items()}
            labels = {
                side: f"{folders[side].name} of run {folders[side].parent.name}" if side in folders else who[c]
                for side, c in choices.items()
            }
            result = compare_models(
                models["left"],
                models["right"],
                roles["reward_model"],
                prompt,
                config,
                seed,
                samples,
                (labels["left"], labels["right"]),
            )
            return result, labels

        return _with_run_models(ctx, config, session, meter, work)


def _check_compare_request(
    ctx: AppContext, prompt: str, config: CustomPPOConfig, session: str | None, owner: str | None
) -> None:
    ctx.compare_limiter.check(session or "anonymous")
    if ctx.policy.hosted:
        ctx.policy.check_config(config, owner)
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ConfigError("prompt", prompt, f"at most {MAX_PROMPT_CHARS} characters")


def _with_run_models(
    ctx: AppContext,
    config: CustomPPOConfig,
    session: str | None,
    meter: Meter,
    work: Callable[[dict[str, Any], dict[str, str]], Any],
) -> Any:
    """`work(roles, who)` between two steps on the current run's teacher, student and reward model (the
    ones loaded for `config` when no run holds them), with `who` describing the teacher and the student."""
    with ctx.models_lock:
        loaded = ctx.models if ctx.models.options == model_options(config) else LoadedModels()

    def on_models(models: TrainingModels | None) -> Any:
        if models is None:
            teacher, student, reward_model = loaded.teacher, loaded.student, loaded.reward_model
            student_is = f"student loaded from `{config.student_name_or_path}`"
        else:
            student = models.student
            teacher = loaded.teacher if models.teacher is None else models.teacher
            reward_model = loaded.reward_model if models.reward_model is None else models.reward_model
            student_is = f"student of the current run at step {models.step}"
        roles = {TEACHER_CHOICE: teacher, STUDENT_CHOICE: student, "reward_model": reward_model}
        who = {TEACHER_CHOICE: "teacher", STUDENT_CHOICE: student_is}
        if any(model is None for model in roles.values()):
            return None  # loaded models are missing: load them outside the training thread and ask again
        # only the time a running job is held up counts against the budget
        with meter.timing() if ctx.runner.running else contextlib.nullcontext():
            return work(roles, who)

    outcome = ctx.runner.call_between_steps(on_models)
    if outcome is None:
        loaded = models_for(ctx, config, owner=session)
        outcome = ctx.runner.call_between_steps(on_models)
    return outcome
