"""Where TnD Studio keeps what it builds or stores for later: the bundle, presets, uploads."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """`cache_dir`, else $TND_CACHE_DIR, else tnd_studio under $XDG_CACHE_HOME (default ~/.cache)."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    if os.environ.get("TND_CACHE_DIR"):
        return Path(os.environ["TND_CACHE_DIR"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "tnd_studio"
