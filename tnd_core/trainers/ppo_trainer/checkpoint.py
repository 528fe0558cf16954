"""Checkpoints: the student, optimizer, schedule, trainer state, metrics and every RNG, written atomically.

Written into a hidden temp folder, fsynced, then moved into place with `os.replace`: a crash at any
moment leaves either the previous checkpoints alone or a complete new one; a checkpoint counts only
once its `trainer_state.json` (written last) is there; the next run in the folder tidies what a killed
save left behind. Loading one restores everything, so a resumed run with the same options continues
exactly as the uninterrupted one would have; a resume that changes options applies the learning-rate
schedule's explicitly and refuses those the saved optimizer state belongs to (`compare_configs`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import random
import re
import shutil
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import yaml

from tnd_core.config import CustomPPOConfig
from tnd_core.errors import ConfigError, TndError
from tnd_core.trainers.ppo_trainer import schedule
from tnd_core.trainers.ppo_trainer.engine import Engine, build_scheduler
from tnd_core.trainers.ppo_trainer.metrics_log import METRICS_FILE

logger = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"
CONFIG_FILE = "config.yaml"
# What CustomPPOTrainer._trainer_state writes and load_checkpoint reads back.
STATE_KEYS = ("step", "kl_controller", "score_processing", "early_stopping")
_NAME = re.compile(r"^checkpoint-(\d+)$")
# Builds a learning-rate schedule over the optimizer it is given (CustomPPOTrainer._setup_scheduler).
SchedulerFactory = Callable[[torch.optim.Optimizer], Any]
# The hidden folders of a save in progress (`temp_dir`, and `commit`'s moved-aside old version).
_LEFTOVER = re.compile(r"^\.(tmp|stale)-checkpoint-\d+$")

# Options a resume applies by rebuilding the learning-rate schedule: the rate, the schedule, and
# everything schedule.total_optimizer_steps counts the run's optimizer updates from.
SCHEDULE_OPTIONS = (
    "learning_rate",
    "scheduler_name",
    "scheduler_kwargs",
    "warmup",
    "steps",
    "batch_size",
    "mini_batch_size",
    "gradient_accumulation_steps",
    "ppo_epochs",
    "clm_per_step",
    "ppo_per_step",
    "use_teacher_demos",
)
# Options a resume refuses: the saved optimizer state (its moments, and the hyperparameters torch
# restores over the new ones) belongs to them.
OPTIMIZER_OPTIONS = ("optimizer_name", "optimizer_kwargs")
# Options a resume refuses with LoRA: the saved adapters' shapes and scale.
LORA_OPTIONS = ("use_lora", "lora_r", "lora_alpha", "lora_target_modules")
# Ignored when comparing: a resume naturally names another folder or checkpoint.
_RUN_PLACE_OPTIONS = ("output_dir", "resume_from_checkpoint")


def checkpoint_dir(output_dir: str | Path, step: int) -> Path:
    return Path(output_dir) / f"checkpoint-{step}"


def temp_dir(output_dir: str | Path, step: int) -> Path:
    """Where a checkpoint is assembled; the same name on every process so all ranks can write into it."""
    return Path(output_dir) / f".tmp-checkpoint-{step}"


def begin(output_dir: str | Path, step: int) -> Path:
    """Create an empty temp folder for the checkpoint of `step` (clearing leftovers of a crashed save)."""
    tmp = temp_dir(output_dir, step)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    # Files first, then their folders, deepest first, so every name points at flushed data.
    for path in sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True) + [root]:
        _fsync(path)


def write_state(tmp: Path, state: dict[str, Any]) -> None:
    """The completion marker: trainer state as JSON, written last."""
    (tmp / STATE_FILE).write_text(json.dumps(state, indent=2))


def commit(output_dir: str | Path, step: int, save_total_limit: int = 0) -> Path:
    """Flush the temp folder to disk, move it into place atomically, then prune old checkpoints."""
    tmp, final = temp_dir(output_dir, step), checkpoint_dir(output_dir, step)
    _fsync_tree(tmp)
    if final.exists():
        # os.replace cannot overwrite a non-empty folder: move the old one aside first.
        stale = final.with_name(f".stale-{final.name}")
        if stale.exists():
            shutil.rmtree(stale)
        os.replace(final, stale)
        os.replace(tmp, final)
        shutil.rmtree(stale)
    else:
        os.replace(tmp, final)
    _fsync(Path(output_dir))
    prune(output_dir, save_total_limit, keep=final)
    return final


def prune(output_dir: str | Path, save_total_limit: int, keep: Path | None = None) -> None:
    """Remove the oldest checkpoints beyond the newest `save_total_limit` (0 keeps all). `keep` (the
    checkpoint just saved, or the one a run resumes from) is never removed and counts among the kept."""
    if save_total_limit <= 0:
        return
    found = list_checkpoints(output_dir)
    kept = keep.resolve() if keep is not None else None
    others = [path for path in found if path.resolve() != kept]
    room = save_total_limit - (len(others) < len(found))
    for old in others[: max(0, len(others) - room)]:
        shutil.rmtree(old, ignore_errors=True)


def remove_leftovers(output_dir: str | Path) -> list[Path]:
    """Tidy what a killed save left directly in `output_dir`; returns the folders removed.

    Only `.tmp-checkpoint-<step>` and `.stale-checkpoint-<step>` folders are touched. A stale folder
    whose `checkpoint-<step>` is missing is a complete checkpoint that `commit` had moved aside when
    the process died: it is moved back instead of removed.
    """
    root = Path(output_dir)
    if not root.is_dir():
        return []
    removed = []
    for child in sorted(root.iterdir()):
        match = _LEFTOVER.match(child.name)
        if match is None or child.is_symlink() or not child.is_dir():
            continue
        final = root / child.name.removeprefix(".stale-")
        if match.group(1) == "stale" and not final.exists() and (child / STATE_FILE).is_file():
            os.replace(child, final)
            logger.warning("put back %s, moved aside by a save that was interrupted", final)
            continue
        shutil.rmtree(child)
        removed.append(child)
    if removed:
        logger.info("removed leftovers of an interrupted save: %s", ", ".join(p.name for p in removed))
    return removed


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints in `output_dir`, oldest step first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _NAME.match(child.name)
        if match and (child / STATE_FILE).is_file():
            found.append((int(match.group(1)), child))
    return [path for _, path in sorted(found)]


def resolve(resume_from_checkpoint: str, output_dir: str | Path) -> Path | None:
    """The folder to resume from: a path, 'latest' in output_dir (None when there is none yet), or '' for none."""
    if not resume_from_checkpoint:
        return None
    if resume_from_checkpoint == "latest":
        found = list_checkpoints(output_dir)
        return found[-1] if found else None
    path = Path(resume_from_checkpoint)
    if not (path / STATE_FILE).is_file():
        raise ConfigError(
            "resume_from_checkpoint",
            resume_from_checkpoint,
            f"must be a complete checkpoint folder (one with {STATE_FILE}) or 'latest'",
        )
    return path


def damaged(path: str | Path, problem: str) -> ConfigError:
    """The error for a checkpoint that cannot be resumed from, naming it and what is wrong."""
    advice = "resume from another checkpoint, or start a new run (resume_from_checkpoint='')"
    return ConfigError("resume_from_checkpoint", str(path), f"is not a usable checkpoint: {problem}; {advice}")


def read_state(path: str | Path) -> dict[str, Any]:
    """The trainer state of the checkpoint at `path`; ConfigError when it is unreadable or incomplete."""
    try:
        state = json.loads((Path(path) / STATE_FILE).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise damaged(path, f"{STATE_FILE} cannot be read ({exc})") from exc
    if not isinstance(state, dict):
        raise damaged(path, f"{STATE_FILE} holds a {type(state).__name__}, not an object")
    missing = [key for key in STATE_KEYS if key not in state]
    if missing:
        raise damaged(path, f"{STATE_FILE} lacks {', '.join(missing)}")
    if not isinstance(state["step"], int) or state["step"] < 0:
        raise damaged(path, f"{STATE_FILE} has step={state['step']!r}, not a step number")
    return state


def read_config(path: str | Path) -> dict[str, Any] | None:
    """The options the checkpoint was trained with, as saved; None for a checkpoint saved without them.

    Read as plain values, not validated: bounds may have changed since it was written.
    """
    file = Path(path) / CONFIG_FILE
    if not file.is_file():
        return None
    try:
        values = yaml.safe_load(file.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise damaged(path, f"{CONFIG_FILE} cannot be read ({exc})") from exc
    if not isinstance(values, dict):
        raise damaged(path, f"{CONFIG_FILE} holds a {type(values).__name__}, not a mapping of options")
    return values


def compare_configs(saved: dict[str, Any], config: CustomPPOConfig, path: str | Path) -> list[tuple[str, Any, Any]]:
    """The options `config` changes from the checkpoint's `saved` ones, as (name, old, new).

    Raises ConfigError for a change a resume cannot make: `optimizer_name` and `optimizer_kwargs` (the
    saved optimizer state belongs to them); the LoRA options that shape the adapters (`use_lora`,
    `lora_r`, `lora_alpha`, `lora_target_modules`: the saved adapters and their optimizer state belong
    to them); and `student_name_or_path` when the checkpoint depends on it: with LoRA (the saved
    adapters go on that base model) or with kl_reference 'initial_student' (the KL reference is
    rebuilt from the student's source, so it would no longer be the run's initial student).
    """
    new = config.to_dict()
    uses_lora = config.use_lora or bool(saved.get("use_lora"))
    keeps_student = config.kl_reference == "initial_student" or uses_lora
    fixed = OPTIMIZER_OPTIONS + LORA_OPTIONS + (("student_name_or_path",) if keeps_student else ())
    for name in fixed:
        if name in saved and saved[name] != new[name]:
            raise ConfigError(
                name,
                new[name],
                f"the checkpoint {path} was trained with {name}={saved[name]!r}, and a resume cannot change "
                f"{', '.join(OPTIMIZER_OPTIONS)} (the saved optimizer state belongs to them), "
                f"{', '.join(LORA_OPTIONS)} (nor the saved adapters) nor, with LoRA or "
                "kl_reference='initial_student', student_name_or_path (the base model, the KL reference). Keep "
                f"{saved[name]!r}, or start a new run in a new output_dir",
            )
    return [
        (name, saved[name], value)
        for name, value in new.items()
        if name in saved and name not in _RUN_PLACE_OPTIONS and saved[name] != value
    ]


def _load_file(path: Path, name: str, loader: Callable[[Path], Any]) -> Any:
    """`loader(path / name)`, turning a missing or unreadable file into the checkpoint's ConfigError."""
    if not (path / name).exists():
        raise damaged(path, f"{name} is missing")
    with _loading(path, name):
        return loader(path / name)


@contextlib.contextmanager
def _loading(path: Path, name: str) -> Iterator[None]:
    """Turn a failure to read or restore the checkpoint's `name` into its ConfigError."""
    try:
        yield
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        raise damaged(path, f"{name} cannot be loaded ({type(exc).__name__}: {exc})") from exc


def apply_schedule(
    engine: Engine, config: CustomPPOConfig, optimizer_steps: int, make_scheduler: SchedulerFactory | None = None
) -> None:
    """Replace the run's learning-rate schedule with `config`'s, at `optimizer_steps` updates into it.

    `make_scheduler(optimizer)` builds it (default: build_scheduler over the run's optimizer updates).
    """
    optimizer = engine.lr_scheduler.scheduler.optimizer
    for group in optimizer.param_groups:
        # initial_lr is what the schedule's factors multiply; the loaded optimizer state carried the old one
        group["lr"] = group["initial_lr"] = config.learning_rate
    if make_scheduler is None:
        scheduler = build_scheduler(config, optimizer, schedule.total_optimizer_steps(config))
    else:
        scheduler = make_scheduler(optimizer)
    # get_scheduler's schedules are LambdaLR: the rate is a function of the step count alone, so one
    # step from count - 1 sets it to the value the new schedule prescribes at `optimizer_steps`.
    scheduler.last_epoch = optimizer_steps - 1
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)` before")
        scheduler.step()
    engine.lr_scheduler.scheduler = scheduler


def save(engine: Engine, config: CustomPPOConfig, step: int, trainer_state: dict[str, Any]) -> Path:
    """Write `output_dir/checkpoint-<step>` atomically; every process adds its RNG state."""
    acc, out = engine.accelerator, config.output_dir
    if acc.is_main_process:
        begin(out, step)
    acc.wait_for_everyone()
    tmp = temp_dir(out, step)
    torch.save(rng_state(), tmp / f"rng_state_{acc.process_index}.pt")
    if acc.is_main_process:
        with quiet_progress_bars():
            engine.unwrapped().save_pretrained(tmp / "student")
        config.save(tmp / CONFIG_FILE)
        torch.save(engine.optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(engine.lr_scheduler.state_dict(), tmp / "scheduler.pt")
        metrics = Path(out) / METRICS_FILE
        if metrics.is_file():
            shutil.copyfile(metrics, tmp / METRICS_FILE)
    acc.wait_for_everyone()
    if acc.is_main_process:
        write_state(tmp, trainer_state)
        commit(out, step, config.save_total_limit)
    acc.wait_for_everyone()
    return checkpoint_dir(out, step)


def load(
    path: str | Path, engine: Engine, config: CustomPPOConfig, make_scheduler: SchedulerFactory | None = None
) -> dict[str, Any]:
    """Restore the student, optimizer, schedule, metrics file and RNG from `path`; returns the trainer state.

    Options that `config` changes from the saved ones take effect; the learning-rate schedule's are
    applied by rebuilding it (`apply_schedule` with `make_scheduler`) and named in a warning. A damaged
    checkpoint raises ConfigError naming it and what is wrong; the state, options, optimizer, scheduler and
    RNG files are all read before anything is restored.
    """
    path = Path(path)
    state = read_state(path)
    saved_config = read_config(path)
    changes = compare_configs(saved_config, config, path) if saved_config is not None else []
    student = engine.unwrapped()
    if not hasattr(student, "load_weights"):
        raise TndError(
            f"resume_from_checkpoint: the student ({type(student).__name__}) has no load_weights(path) method"
        )
    if not (path / "student").is_dir():
        raise damaged(path, "the student folder is missing")
    optimizer_state = _load_file(path, "optimizer.pt", lambda f: torch.load(f, map_location=engine.device))
    scheduler_state = _load_file(path, "scheduler.pt", torch.load)
    rng_name = f"rng_state_{engine.accelerator.process_index}.pt"
    rng = _load_file(path, rng_name if (path / rng_name).is_file() else "rng_state_0.pt", torch.load)

    with quiet_progress_bars(), _loading(path, "student"):
        student.load_weights(path / "student")
    with _loading(path, "optimizer.pt"):
        engine.optimizer.load_state_dict(optimizer_state)
    with _loading(path, "scheduler.pt"):
        engine.lr_scheduler.load_state_dict(scheduler_state)
    if saved_config is None:
        logger.warning(
            "%s has no %s (an older checkpoint): its saved learning-rate schedule continues, whatever "
            "learning_rate, steps, scheduler or batch options this run sets",
            path,
            CONFIG_FILE,
        )
    schedule_changes = sorted(
        (c for c in changes if c[0] in SCHEDULE_OPTIONS), key=lambda change: SCHEDULE_OPTIONS.index(change[0])
    )
    if schedule_changes:
        apply_schedule(engine, config, engine.lr_scheduler.scheduler.last_epoch, make_scheduler)
        logger.warning("resume applies the changed options: %s", _describe(schedule_changes))
    other_changes = [change for change in changes if change[0] not in SCHEDULE_OPTIONS]
    if other_changes:
        logger.info("resume continues with changed options: %s", _describe(other_changes))
    if engine.accelerator.is_main_process:
        # the run's metrics continue from the checkpoint's, not from steps logged after it
        output_dir = Path(config.output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        saved_metrics, target = path / METRICS_FILE, output_dir / METRICS_FILE
        if saved_metrics.is_file():
            if saved_metrics.resolve() != target.resolve():
                shutil.copyfile(saved_metrics, target)
        elif target.is_file():
            target.unlink()
    set_rng_state(rng)
    return state


def _describe(changes: list[tuple[str, Any, Any]]) -> str:
    return ", ".join(f"{name} {old} -> {new}" for name, old, new in changes)


@contextlib.contextmanager
def quiet_progress_bars() -> Iterator[None]:
    """Silence transformers' progress bars: it draws one for every save and load, noise in a run's log."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def rng_state() -> dict[str, Any]:
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


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` captured."""
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
