"""The app's one background training job and the thread-safe store the UI polls.

`Runner.start` builds a trainer in a background thread and feeds its events into a `RunStore`.
Control (pause, resume, stop) is allowed only to the owner token that started the job; everyone
else watches. Work that must see consistent weights (Compare) goes through `run_between_steps`,
which the training thread serves between two steps, or runs at once when no step can be running.
Logs go to `<output_dir>/train.log` and to an in-memory tail for the UI, never to a pipe.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
import traceback
from array import array
from collections import deque
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FuturesTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

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
)

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

TrainerFactory = Callable[..., Any]


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
    steps: list[int]
    stats: dict[str, Sequence[float]]
    rollout_step: int | None
    rollout: list[RolloutSample]
    eval_steps: list[int]
    eval_metrics: dict[str, list[float]]
    checkpoint: str | None
    config: CustomPPOConfig | None
    log_tail: str
    first_step_wall_s: float | None

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the average pace so far; None before the first step."""
        if not self.step or not self.total_steps:
            return None
        return max(0.0, (self.total_steps - self.step) * self.elapsed_s / self.step)


@dataclass
class RunStore:
    """Metrics, rollouts, evaluations and status of the current job; every method is thread-safe."""

    max_log_lines: int = 300
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
            self._steps: array = array("q")
            self._stats: dict[str, array] = {}
            self._rollout_step: int | None = None
            self._rollout: list[RolloutSample] = []
            self._eval_steps: list[int] = []
            self._eval: dict[str, list[float]] = {}
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
                self._add_eval(event)
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
        n = len(self._steps)
        self._steps.append(event.step)
        for key, value in event.stats.items():
            if key not in self._stats:  # a statistic first logged now: earlier steps did not have it
                # packed doubles: a 100k-step run with 40 statistics stays at ~30 MB and copies fast
                self._stats[key] = array("d", [math.nan] * n)
            self._stats[key].append(float(value))
        for series in self._stats.values():
            if len(series) == n:
                series.append(math.nan)
        self._step, self._total, self._elapsed = event.step, event.total_steps, event.elapsed_s
        if self._first_step_wall is None:
            self._first_step_wall = time.monotonic() - self._started_wall

    def _add_eval(self, event: EvalEvent) -> None:
        n = len(self._eval_steps)
        self._eval_steps.append(event.step)
        for key, value in event.metrics.items():
            if key not in self._eval:
                self._eval[key] = [math.nan] * n
            self._eval[key].append(float(value))
        for series in self._eval.values():
            if len(series) == n:
                series.append(math.nan)

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
                steps=self._steps.tolist(),
                stats={k: v[:] for k, v in self._stats.items()},
                rollout_step=self._rollout_step,
                rollout=list(self._rollout),
                eval_steps=list(self._eval_steps),
                eval_metrics={k: list(v) for k, v in self._eval.items()},
                checkpoint=self._checkpoint,
                config=self._config,
                log_tail="\n".join(self._log),
                first_step_wall_s=self._first_step_wall,
            )


class _StoreLogHandler(logging.Handler):
    def __init__(self, store: RunStore):
        super().__init__(logging.INFO)
        self.store = store
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))

    def emit(self, record: logging.LogRecord) -> None:
        self.store.add_log(self.format(record))


class _Request:
    """A call waiting for a moment when the weights cannot change; claimed by exactly one thread."""

    def __init__(self, fn: Callable[[Any], Any]):
        self.fn = fn
        self.future: Future = Future()
        self._claim = threading.Lock()

    def claim(self) -> bool:
        return self._claim.acquire(blocking=False)

    def run(self, trainer: Any) -> None:
        try:
            self.future.set_result(self.fn(trainer))
        except Exception as exc:  # handed to the waiting caller, never raised in the training thread
            self.future.set_exception(exc)


class _ServingControl(TrainingControl):
    """TrainingControl whose pause loop reports the pause and serves queued requests while blocked."""

    def __init__(self, on_pause: Callable[[], None], serve: Callable[[], None]):
        super().__init__()
        self._on_pause = on_pause
        self._serve = serve

    def wait_while_paused(self, poll_s: float = 0.1) -> None:
        if not self.paused:
            return
        self._on_pause()
        while not self._running.wait(poll_s):
            self._serve()


def describe_exception(exc: BaseException) -> str:
    """A message for people: TndError text as is, anything else with its type and a hint for memory errors."""
    if isinstance(exc, TndError):
        return str(exc)
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, MemoryError) or "out of memory" in str(exc).lower():
        text += " — out of memory: lower batch_size, mini_batch_size or max_new_tokens, or raise gradient_accumulation_steps."
    return text


class Runner:
    """The single training job of an app process.

    `trainer_factory(config, callbacks=[...], control=TrainingControl())` must return an object with
    `train()`; `tnd_core.pipeline.build_trainer` is the real one.
    """

    def __init__(self, trainer_factory: TrainerFactory | None = None, compare_timeout_s: float = 60.0):
        self.store = RunStore()
        self.trainer_factory = trainer_factory
        self._lock = threading.Lock()
        self._requests: queue.Queue[_Request] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._control: TrainingControl | None = None
        self._owner: str | None = None
        self.trainer: Any = None
        self.compare_timeout_s = compare_timeout_s

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

    def start(self, config: CustomPPOConfig, owner: str) -> None:
        """Start training `config` in the background, owned by `owner`; one job at a time."""
        if not owner:
            raise TndError("owner token is missing: reload the page so the browser gets one.")
        with self._lock:
            if self.running:
                who = "this session" if owner == self._owner else "another session"
                raise JobBusyError(f"A training job started by {who} is still running; one job per app. Stop it first.")
            self._owner = owner
            self._control = _ServingControl(on_pause=lambda: self.store.set_state("paused"), serve=self._serve_requests)
            self.trainer = None
            self.store.reset(owner, config)
            self._thread = threading.Thread(target=self._run, args=(config, self._control), name="tnd-train", daemon=True)
            self._thread.start()

    def _require_owner(self, token: str | None) -> TrainingControl:
        if not self.running or self._control is None:
            raise TndError("No training job is running.")
        if not self.is_owner(token):
            raise NotOwnerError("Only the session that started this job can control it; this session is watching read-only.")
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
            factory = self.trainer_factory or _default_factory()
            trainer = factory(config, callbacks=[self._on_event], control=control)
            self.trainer = trainer
            trainer.train()
            if self.store.state not in TERMINAL_STATES:
                self.store.set_state("stopped" if control.stop_requested else "completed")
            log.info("run ended: %s", self.store.state)
        except Exception as exc:  # the server and the metrics so far must survive any training error
            message = describe_exception(exc)
            log.error("training failed: %s\n%s", message, traceback.format_exc())
            self.store.set_error(message)
        finally:
            for logger_name, handler in handlers:
                logging.getLogger(logger_name).removeHandler(handler)
                handler.close()

    def _attach_logs(self, config: CustomPPOConfig) -> list[tuple[str, logging.Handler]]:
        handlers: list[logging.Handler] = [_StoreLogHandler(self.store)]
        try:
            out = Path(config.output_dir)
            out.mkdir(parents=True, exist_ok=True)
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
        if isinstance(event, StepEvent):
            self._serve_requests()

    def _serve_requests(self) -> None:
        while True:
            try:
                request = self._requests.get_nowait()
            except queue.Empty:
                return
            if request.claim():
                request.run(self.trainer)

    # ------------------------------------------------------------------ consistent reads of the weights
    def run_between_steps(self, fn: Callable[[Any], Any], timeout_s: float | None = None) -> Any:
        """Call `fn(trainer)` where no optimisation step can change the weights under it.

        While a trainer runs, the training thread calls it after the next logged step, or within
        0.1 s while paused. Before the trainer exists and after the job it runs here at once
        (`trainer` is None until the models are loaded). Raises TndError on timeout.
        """
        request = _Request(fn)
        if self.trainer is None or not self.running:
            request.claim()
            request.run(self.trainer)
            return request.future.result()
        self._requests.put(request)
        deadline = time.monotonic() + (self.compare_timeout_s if timeout_s is None else timeout_s)
        while True:
            try:
                return request.future.result(0.2)
            except FuturesTimeout:
                pass
            if not self.running:  # the job ended after the request was queued: the weights are final
                if request.claim():
                    request.run(self.trainer)
                return request.future.result()
            if time.monotonic() > deadline:
                if request.claim():
                    raise TndError("The training step did not finish in time; pause training and try again.")
                return request.future.result()


def _default_factory() -> TrainerFactory:
    from tnd_core.pipeline import build_trainer

    return build_trainer
