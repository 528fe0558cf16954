"""Server-side objects every tab shares: the embedded bundle's preparation, loaded models, the runner.

One `AppContext` per app process. The bundle is prepared once in a background thread at start-up
(it builds in minutes on first use), with a progress line the UI polls, so nothing looks frozen and
no two threads ever build it at the same time. Importing this module does not load torch, so the
app's forms and config pieces stay light.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.hosting import HostPolicy
from app.runner import Runner
from app.throttle import RateLimiter, WorkBudget
from tnd_core.config import CustomPPOConfig
from tnd_core.errors import ConfigError, TndError

log = logging.getLogger(__name__)


def zero_gpu() -> bool:
    """True on ZeroGPU Space hardware, where a GPU exists only inside short decorated calls."""
    return os.environ.get("SPACES_ZERO_GPU", "").strip().lower() in ("1", "true", "yes")


def device_name() -> str:
    """Where the app puts models: the GPU when there is one the training thread can keep, else the CPU."""
    if zero_gpu():  # background training never holds a ZeroGPU device
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def on_space() -> bool:
    """True on a Hugging Face Space, where polling is slower to spare the shared proxy."""
    return bool(os.environ.get("SPACE_ID"))


class BundleManager:
    """Prepares the embedded bundle once, in the background, and reports its progress."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self.fraction = 0.0
        self.message = "not started"
        self.error: str | None = None
        self.paths: Any = None

    def start(self) -> None:
        """Begin preparing the bundle unless that has already begun."""
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._build, name="tnd-bundle", daemon=True)
            self._thread.start()

    def _progress(self, fraction: float, message: str) -> None:
        self.fraction, self.message = float(fraction), message

    def _build(self) -> None:
        self.message = "checking the embedded bundle"
        try:
            from tnd_core.bundle import ensure_bundle

            self.paths = ensure_bundle(size=os.environ.get("TND_BUNDLE_SIZE") or None, progress=self._progress)
            self.fraction, self.message = 1.0, f"ready at {self.paths.root}"
        except Exception as exc:  # shown in the UI; the app keeps working with hub or local models
            log.exception("bundle preparation failed")
            self.error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, TndError) else str(exc)
            self.message = "failed"
        finally:
            self._ready.set()

    @property
    def ready(self) -> bool:
        return self._ready.is_set() and self.error is None

    @property
    def settled(self) -> bool:
        """Ready or failed: the status line will not change again."""
        return self._ready.is_set()

    def status_line(self) -> str:
        """One line for the UI: progress while building, the path when ready, the error if any."""
        if self.error:
            return f"Embedded bundle: failed: {self.error}"
        if self.ready:
            return f"Embedded bundle: {self.message}"
        return f"Embedded bundle: preparing ({self.fraction:.0%}): {self.message}"

    def wait(self, on_progress: Any = None, timeout_s: float | None = None) -> Any:
        """Block until the bundle is ready (starting it if needed); raise TndError if it failed."""
        self.start()
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not self._ready.wait(1.0):
            if on_progress is not None:
                on_progress(self.status_line())
            if deadline is not None and time.monotonic() > deadline:
                raise TndError("The embedded bundle is still being prepared; try again in a minute.")
        if self.error:
            raise TndError(f"The embedded bundle could not be prepared: {self.error}")
        return self.paths

    def recommended_config(self) -> dict[str, Any]:
        """The bundle's recommended option values (empty until it is ready)."""
        if not self.ready or not getattr(self.paths, "config", None):
            return {}
        path = Path(self.paths.config)
        if not path.is_file():
            return {}
        return CustomPPOConfig.load(path).to_dict()


@dataclass
class LoadedModels:
    """Models loaded for a config (Models tab, Compare when no run holds them).

    `sources` maps each loaded role ('teacher', 'student', 'reward_model') to where it came from;
    `options` holds the config's model options they were loaded with.
    """

    teacher: Any = None
    student: Any = None
    reward_model: Any = None
    sources: dict[str, str] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class AppContext:
    """What the tabs share in one app process: the runner, the bundle, loaded models, the host's policy
    (local or hosted mode) and the fair-share limits on per-visitor work."""

    runner: Runner
    bundle: BundleManager
    policy: HostPolicy = field(default_factory=HostPolicy)
    compare_budget: WorkBudget = field(default_factory=lambda: WorkBudget(HostPolicy().compare_share))
    compare_limiter: RateLimiter = field(default_factory=lambda: RateLimiter(0, what="Compare calls"))
    models: LoadedModels = field(default_factory=LoadedModels)
    models_lock: threading.Lock = field(default_factory=threading.Lock)
    session_tokens: dict[str, str] = field(default_factory=dict)
    poll_s: float = 1.0
    # Plots and tables are redrawn at most this often while steps stream in: a Plotly redraw costs
    # the browser ~0.1 CPU-s per figure, and a local browser shares the CPU with the training.
    redraw_s: float = 3.0

    def owner_token(self, token: str | None, session_hash: str | None) -> str:
        """The browser's owner token, or the one its session got first (its load event and a fast
        Start click can race; both must hand the browser the same token)."""
        if token:
            return token
        with self.models_lock:
            return self.session_tokens.setdefault(session_hash or uuid.uuid4().hex, uuid.uuid4().hex)

    def initial_config(self) -> CustomPPOConfig:
        """Defaults, overlaid with the bundle's recommended values when it is ready."""
        values = CustomPPOConfig().to_dict()
        try:
            values.update(self.bundle.recommended_config())
        except ConfigError as exc:
            log.warning("ignoring the bundle's recommended config: %s", exc)
        return CustomPPOConfig.from_dict(values)
