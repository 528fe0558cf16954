"""Atomic checkpoints: write into a hidden temp folder, fsync, then `os.replace` it into place.

A crash at any moment leaves either the previous checkpoints alone or a complete new one; a
checkpoint counts only once its `trainer_state.json` (written last) is there.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from tnd_core.errors import ConfigError

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
        raise ConfigError("resume_from_checkpoint", resume_from_checkpoint, f"must be a complete checkpoint folder (one with {STATE_FILE}) or 'latest'")
    return path


def read_state(path: str | Path) -> dict[str, Any]:
    return json.loads((Path(path) / STATE_FILE).read_text())
