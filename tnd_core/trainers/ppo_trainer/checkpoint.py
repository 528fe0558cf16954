"""Checkpoints: the student, optimizer, schedule, trainer state, metrics and every RNG, written atomically.

Written into a hidden temp folder, fsynced, then moved into place with `os.replace`: a crash at any
moment leaves either the previous checkpoints alone or a complete new one; a checkpoint counts only
once its `trainer_state.json` (written last) is there. Loading one restores everything, so a resumed
run continues exactly as the uninterrupted one would have.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from tnd_core.config import CustomPPOConfig
from tnd_core.errors import ConfigError, TndError
from tnd_core.trainers.ppo_trainer.engine import Engine
from tnd_core.trainers.ppo_trainer.metrics_log import METRICS_FILE

STATE_FILE = "trainer_state.json"
_NAME = re.compile(r"^checkpoint-(\d+)$")


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
    if save_total_limit > 0:
        for old in list_checkpoints(output_dir)[:-save_total_limit]:
            shutil.rmtree(old, ignore_errors=True)
    return final


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


def read_state(path: str | Path) -> dict[str, Any]:
    return json.loads((Path(path) / STATE_FILE).read_text())


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
        config.save(tmp / "config.yaml")
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


def load(path: str | Path, engine: Engine, output_dir: str | Path) -> dict[str, Any]:
    """Restore the student, optimizer, schedule, metrics file and RNG from `path`; returns the trainer state."""
    path = Path(path)
    state = read_state(path)
    student = engine.unwrapped()
    if not hasattr(student, "load_weights"):
        raise TndError(
            f"resume_from_checkpoint: the student ({type(student).__name__}) has no load_weights(path) method"
        )
    with quiet_progress_bars():
        student.load_weights(path / "student")
    engine.optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location=engine.device))
    engine.lr_scheduler.load_state_dict(torch.load(path / "scheduler.pt"))
    if engine.accelerator.is_main_process:
        # the run's metrics continue from the checkpoint's, not from steps logged after it
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        saved_metrics, target = path / METRICS_FILE, Path(output_dir) / METRICS_FILE
        if saved_metrics.is_file():
            if saved_metrics.resolve() != target.resolve():
                shutil.copyfile(saved_metrics, target)
        elif target.is_file():
            target.unlink()
    rng_file = path / f"rng_state_{engine.accelerator.process_index}.pt"
    if not rng_file.is_file():
        rng_file = path / "rng_state_0.pt"
    set_rng_state(torch.load(rng_file))
    return state


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
