"""The app's one background training job and the thread-safe store the UI polls.

`Runner.start` runs a job (`tnd_core.pipeline.run_training`) in a background thread and feeds its
events into a `RunStore`; the runner never holds the trainer. Control (pause, resume, stop) is
allowed only to the owner token that started the job; everyone else watches. Work that must see
consistent weights (Compare) goes through `call_between_steps`, which hands it to the job's
`TrainingControl`: the training thread runs it between two steps with the run's models, or it runs
at once (on the final models after a run). Logs go to `<output_dir>/train.log` and to an in-memory
tail for the UI, never to a pipe.

The store keeps a bounded history (`History`): a run of any length holds the same memory. The full
record of every step is the run's own `<output_dir>/metrics.jsonl`.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import traceback
from array import array
from collections import deque
from concurrent.futures import TimeoutError as FuturesTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from tnd_core import runs
from tnd_core.config import CustomPPOConfig
from tnd_core.errors import TndError
from tnd_core.events import (
    CheckpointEvent,
    ErrorEvent,
    EvalEvent,
    Event,
    RolloutEvent,
    RolloutSample,
    StatusEvent,
    StepEvent,
    TrainingControl,
    TrainingModels,
)
from tnd_core.pipeline import run_training

log = logging.getLogger(__name__)

TERMINAL_STATES = ("completed", "stopped", "early_stopped", "failed")
STATE_WORDS = {
    "idle": "No training job yet.",
    "starting": "Loading models and data…",
    "running": "Training.",
    "pausing": "Pause requested: takes effect after the current step.",
    "paused": "Paused. Resume to continue, or stop to save a checkpoint.",
    "stopping": "Stop requested: finishing the current step and saving a checkpoint.",
    "completed": "Finished: all steps done.",
    "stopped": "Stopped by the user; checkpoint saved.",
    "early_stopped": "Stopped early: reward stopped improving (patience).",
    "failed": "Failed.",
}
LOGGERS = ("tnd_core", "app")

# run(config, callbacks=[...], control=control) -> the result dict of `tnd_core.pipeline.run_training`
RunFunction = Callable[..., dict[str, Any]]


class JobBusyError(TndError):
    """A second job was requested while one is running."""


class NotOwnerError(TndError):
    """A session that did not start the job tried to control it."""


@dataclass
class Snapshot:
    """A consistent copy of what the UI shows, taken under the store's lock."""

    version: int
    run: int
    state: str
    message: str
    error: str | None
    owner: str | None
    step: int
    total_steps: int
    elapsed_s: float
    # the kept points of the history (every step early on, then thinned: see `History`)
    steps: list[int]
    stats: dict[str, Sequence[float]]
    rollout_step: int | None
    rollout: list[RolloutSample]
    eval_steps: list[int]
    eval_metrics: dict[str, Sequence[float]]
    checkpoint: str | None
    config: CustomPPOConfig | None
    log_tail: str
    first_step_wall_s: float | None
    # how many steps and evaluations were logged in all (more than the kept points once thinned)
    logged_steps: int = 0
    logged_evals: int = 0

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the average pace so far; None before the first step."""
        if not self.step or not self.total_steps:
            return None
        return max(0.0, (self.total_steps - self.step) * self.elapsed_s / self.step)


class History:
    """Steps and their named values, in bounded memory however long the run.

    Every point is kept until `max_points`; then the older part is thinned to an even grid of steps
    while the first `head_points` and the latest `recent_points` stay at full resolution, so a plot
    shows the whole run's shape with the recent detail. Values are packed doubles; a name first
    seen at a later step gets NaN for the earlier ones. Not thread-safe: the `RunStore` locks.
    """

    def __init__(self, max_points: int = 2000, recent_points: int = 500, head_points: int = 10):
        if not 0 < head_points + recent_points < max_points:
            raise ValueError("need 0 < head_points + recent_points < max_points")
        self.max_points, self.recent_points, self.head_points = max_points, recent_points, head_points
        self.steps: array = array("q")
        self.values: dict[str, array] = {}
        self.logged = 0  # points appended in all, kept or thinned away
        self.stride = 1  # the older part keeps the steps that are multiples of this

    def __len__(self) -> int:
        return len(self.steps)

    def append(self, step: int, values: Mapping[str, float]) -> None:
        """Add one point; thins the older part first when the budget is full."""
        if len(self.steps) >= self.max_points:
            self._thin()
        n = len(self.steps)
        self.steps.append(step)
        for key, value in values.items():
            if key not in self.values:
                self.values[key] = array("d", [math.nan] * n)
            self.values[key].append(float(value))
        for series in self.values.values():
            if len(series) == n:
                series.append(math.nan)
        self.logged += 1

    def _thin(self) -> None:
        # the older part keeps the steps on a grid (multiples of `stride`), doubling the stride until it
        # fits half its share of the budget: the grid stays even however often it is thinned, and
        # thinning runs once per ~max_points/4 appends, not at every step
        steps = np.frombuffer(self.steps, dtype=np.int64)
        start, end = self.head_points, len(steps) - self.recent_points
        budget = max(1, (self.max_points - self.head_points - self.recent_points) // 2)
        older = steps[start:end]
        while np.count_nonzero(older % self.stride == 0) > budget:
            self.stride *= 2
        picked = np.flatnonzero(older % self.stride == 0) + start
        keep = np.concatenate([np.arange(start), picked, np.arange(end, len(steps))])
        self.steps = array("q", steps[keep].tobytes())
        for key, series in self.values.items():
            self.values[key] = array("d", np.frombuffer(series, dtype=np.float64)[keep].tobytes())

    def copy_steps(self) -> list[int]:
        return self.steps.tolist()

    def copy_values(self) -> dict[str, array]:
        return {key: series[:] for key, series in self.values.items()}


@dataclass
class RunStore:
    """Metrics, rollouts, evaluations and status of the current job; every method is thread-safe."""

    max_log_lines: int = 300
    max_points: int = 2000  # kept points per statistic; the run's metrics.jsonl has every step
    recent_points: int = 500  # the latest steps, always at full resolution
    max_eval_points: int = 500
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.reset(None, None)

    def reset(self, owner: str | None, config: CustomPPOConfig | None) -> None:
        with self._lock:
            self._version = getattr(self, "_version", 0) + 1
            self._run = getattr(self, "_run", 0) + (owner is not None)
            self._state = "idle" if owner is None else "starting"
            self._detail = ""
            self._error: str | None = None
            self._owner = owner
            self._config = config
            self._step = 0
            self._total = config.steps if config else 0
            self._elapsed = 0.0
            self._history = History(self.max_points, self.recent_points)
            self._evals = History(self.max_eval_points, self.max_eval_points // 4)
            self._rollout_step: int | None = None
            self._rollout: list[RolloutSample] = []
            self._checkpoint: str | None = None
            self._log: deque[str] = deque(maxlen=self.max_log_lines)
            self._started_wall = time.monotonic()
            self._first_step_wall: float | None = None

    # ------------------------------------------------------------------ writers
    def set_state(self, state: str, detail: str = "") -> None:
        with self._lock:
            self._state, self._detail = state, detail
            self._version += 1

    def set_detail(self, detail: str) -> None:
        """Extra words after the state, e.g. what a starting job is waiting for."""
        with self._lock:
            self._detail = detail
            self._version += 1

    def set_error(self, message: str) -> None:
        with self._lock:
            self._state, self._error = "failed", message
            self._version += 1

    def add_log(self, line: str) -> None:
        with self._lock:
            self._log.append(line)

    def on_event(self, event: Event) -> None:
        """Fold one trainer event into the store (called in the training thread)."""
        with self._lock:
            if isinstance(event, StepEvent):
                self._add_step(event)
            elif isinstance(event, RolloutEvent):
                self._rollout_step, self._rollout = event.step, list(event.samples)
            elif isinstance(event, EvalEvent):
                self._evals.append(event.step, event.metrics)
            elif isinstance(event, CheckpointEvent):
                self._checkpoint = event.path
            elif isinstance(event, ErrorEvent):
                self._error = event.message
                self._state = "failed"
                if event.last_checkpoint:
                    self._checkpoint = event.last_checkpoint
            elif isinstance(event, StatusEvent):
                self._apply_status(event)
            self._version += 1

    def _add_step(self, event: StepEvent) -> None:
        self._history.append(event.step, event.stats)
        self._step, self._total, self._elapsed = event.step, event.total_steps, event.elapsed_s
        if self._first_step_wall is None:
            self._first_step_wall = time.monotonic() - self._started_wall

    def _apply_status(self, event: StatusEvent) -> None:
        state = {"started": "running", "resumed": "running"}.get(event.state, event.state)
        if self._state == "stopping" and state == "running":
            return
        if self._state == "failed":
            return  # the ErrorEvent already said why
        self._state, self._detail = state, event.detail

    # ------------------------------------------------------------------ readers
    @property
    def version(self) -> int:
        with self._lock:
            return self._version

    @property
    def state(self) -> str:
        with self._lock:
            return self._state

    @property
    def step(self) -> int:
        with self._lock:
            return self._step

    def snapshot(self) -> Snapshot:
        with self._lock:
            message = STATE_WORDS.get(self._state, self._state)
            if self._detail:
                message = f"{message} {self._detail}"
            return Snapshot(
                version=self._version,
                run=self._run,
                state=self._state,
                message=message,
                error=self._error,
                owner=self._owner,
                step=self._step,
                total_steps=self._total,
                elapsed_s=self._elapsed,
                steps=self._history.copy_steps(),
                stats=self._history.copy_values(),
                rollout_step=self._rollout_step,
                rollout=list(self._rollout),
                eval_steps=self._evals.copy_steps(),
                eval_metrics=self._evals.copy_values(),
                checkpoint=self._checkpoint,
                config=self._config,
                log_tail="\n".join(self._log),
                first_step_wall_s=self._first_step_wall,
                logged_steps=self._history.logged,
                logged_evals=self._evals.logged,
            )


class _StoreLogHandler(logging.Handler):
    def __init__(self, store: RunStore):
        super().__init__(logging.INFO)
        self.store = store
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))

    def emit(self, record: logging.LogRecord) -> None:
        self.store.add_log(self.format(record))


def describe_exception(exc: BaseException) -> str:
    """A message for people: TndError text as is, anything else with its type and a hint for memory errors."""
    if isinstance(exc, TndError):
        return str(exc)
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, MemoryError) or "out of memory" in str(exc).lower():
        text += (
            " — out of memory: lower batch_size, mini_batch_size or max_new_tokens, "
            "or raise gradient_accumulation_steps."
        )
    return text


class Runner:
    """The single training job of an app process.

    `run_function(config, callbacks=[...], control=TrainingControl())` trains and returns the
    result dict; the default is `tnd_core.pipeline.run_training` (tests pass a fake).
    """

    def __init__(self, run_function: RunFunction | None = None, request_timeout_s: float = 60.0):
        self.store = RunStore()
        self.run_function = run_function or run_training
        self.request_timeout_s = request_timeout_s
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        # the latest job's control; before any job, requests run at once with no models
        self._control = TrainingControl()
        self._owner: str | None = None

    # ------------------------------------------------------------------ job control
    @property
    def running(self) -> bool:
        """True while the job's thread is alive (loading, training, paused or saving)."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def owner(self) -> str | None:
        return self._owner

    def is_owner(self, token: str | None) -> bool:
        return bool(token) and token == self._owner

    def require_idle(self, owner: str | None) -> None:
        """Raise JobBusyError, saying whose job it is, while a job runs (one job per app)."""
        if self.running:
            who = "this session" if self.is_owner(owner) else "another session"
            raise JobBusyError(f"A training job started by {who} is still running; one job per app. Stop it first.")

    def start(self, config: CustomPPOConfig, owner: str) -> None:
        """Start training `config` in the background, owned by `owner`; one job at a time."""
        if not owner:
            raise TndError("owner token is missing: reload the page so the browser gets one.")
        with self._lock:
            self.require_idle(owner)
            self._owner = owner
            self._control = TrainingControl()
            self.store.reset(owner, config)
            self._thread = threading.Thread(
                target=self._run, args=(config, self._control), name="tnd-train", daemon=True
            )
            self._thread.start()

    def _require_owner(self, token: str | None) -> TrainingControl:
        if not self.running:
            raise TndError("No training job is running.")
        if not self.is_owner(token):
            raise NotOwnerError(
                "Only the session that started this job can control it; this session is watching read-only."
            )
        return self._control

    def pause(self, token: str | None) -> None:
        """Pause after the current step (owner only)."""
        control = self._require_owner(token)
        if self.store.state in ("running", "starting"):
            control.request_pause()
            self.store.set_state("pausing")

    def resume(self, token: str | None) -> None:
        """Continue a paused job (owner only)."""
        control = self._require_owner(token)
        if self.store.state in ("paused", "pausing"):
            control.request_resume()
            self.store.set_state("running")

    def stop(self, token: str | None) -> None:
        """Stop after the current step; the trainer saves a checkpoint (owner only)."""
        control = self._require_owner(token)
        control.request_stop()
        self.store.set_state("stopping")

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the job's thread; True when it has ended."""
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.running

    # ------------------------------------------------------------------ the thread
    def _run(self, config: CustomPPOConfig, control: TrainingControl) -> None:
        handlers = self._attach_logs(config)
        try:
            log.info("starting a run of %d steps into %s", config.steps, config.output_dir)
            self.run_function(config, callbacks=[self._on_event], control=control)
            if self.store.state not in TERMINAL_STATES:
                self.store.set_state("stopped" if control.stop_requested else "completed")
            log.info("run ended: %s", self.store.state)
        except Exception as exc:  # the server and the metrics so far must survive any training error
            message = describe_exception(exc)
            log.error("training failed: %s\n%s", message, traceback.format_exc())
            self.store.set_error(message)
            self._mark_failed(config, message)
        finally:
            # a job that failed before its trainer detached must not leave requests waiting
            control.detach()
            for logger_name, handler in handlers:
                logging.getLogger(logger_name).removeHandler(handler)
                handler.close()

    @staticmethod
    def _mark_failed(config: CustomPPOConfig, message: str) -> None:
        # a run that failed before its trainer started (loading, sources) has no trainer to say so
        status = runs.read_run(config.output_dir)
        if status.status in runs.LIVE_STATES or status.status == "interrupted":
            try:
                runs.mark(config.output_dir, "failed", message)
            except OSError as exc:
                log.warning("cannot write the run's status: %s", exc)

    def _attach_logs(self, config: CustomPPOConfig) -> list[tuple[str, logging.Handler]]:
        handlers: list[logging.Handler] = [_StoreLogHandler(self.store)]
        try:
            out = Path(config.output_dir)
            out.mkdir(parents=True, exist_ok=True)
            # the run folder says what it runs and that it is alive before the models have loaded
            config.save(out / runs.CONFIG_FILE)
            runs.mark(out, "running", "loading models and data", total_steps=config.steps)
            file_handler = logging.FileHandler(out / "train.log")
            file_handler.setLevel(logging.INFO)
            file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            handlers.append(file_handler)
        except OSError as exc:
            self.store.add_log(f"cannot write {config.output_dir}/train.log: {exc}")
        attached = []
        for name in LOGGERS:
            logger = logging.getLogger(name)
            if logger.getEffectiveLevel() > logging.INFO:
                logger.setLevel(logging.INFO)
            for handler in handlers:
                logger.addHandler(handler)
                attached.append((name, handler))
        return attached

    def _on_event(self, event: Event) -> None:
        self.store.on_event(event)
        if isinstance(event, ErrorEvent) and event.traceback:
            log.error("%s", event.traceback)

    # ------------------------------------------------------------------ consistent reads of the weights
    def call_between_steps(self, fn: Callable[[TrainingModels | None], Any], timeout_s: float | None = None) -> Any:
        """`fn(models)` where no optimisation step can change the weights under it; returns its result.

        While a job trains, its training thread runs `fn` after the current step (at once while
        paused) with the run's models. Before a trainer has the models `fn` gets None; after the
        job it gets the final models. `fn`'s own errors reach the caller. Raises TndError when the
        current step does not end within `timeout_s` (default `request_timeout_s`); `fn` then never runs.
        """
        future = self._control.submit(fn)
        try:
            return future.result(self.request_timeout_s if timeout_s is None else timeout_s)
        except FuturesTimeout:
            if future.cancel():
                raise TndError("The training step did not finish in time; pause training and try again.") from None
            return future.result()  # the training thread had just started it: its answer is near
