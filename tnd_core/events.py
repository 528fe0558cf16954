"""Events the trainer emits and the control object its subscribers use to steer it.

The UI, loggers and tests subscribe to events; none of them reads trainer internals. A subscriber
is any callable taking one event. Control (stop, pause) goes the other way through
`TrainingControl`, which is safe to call from any thread.
"""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union


@dataclass
class StepEvent:
    """Statistics of one logged step (names in `tnd_core.stats`)."""

    step: int
    total_steps: int
    stats: dict[str, float]
    elapsed_s: float


@dataclass
class RolloutSample:
    """One prompt with the student's trial and the teacher's demo behind an update."""

    prompt: str
    trial: str
    trial_score: float
    demo: str | None = None
    demo_score: float | None = None


@dataclass
class RolloutEvent:
    step: int
    samples: list[RolloutSample]


@dataclass
class RolloutTextsEvent:
    """Every PPO step's response texts, the whole batch of the main process (RolloutEvent shows a few
    samples of logged steps): what the word counts of trials and demos are made from."""

    step: int
    trials: list[str]
    demos: list[str]


@dataclass
class WordSurprisals:
    """One evaluation's per-word result: mean surprisal (bits) of each word the held-out sentences
    contain, and the words asked for (the vocabulary, the uploaded word list) that they do not."""

    surprisal: dict[str, float]
    unscored: list[str]
    word_list: list[str]
    threshold: float


@dataclass
class EvalEvent:
    """An evaluation's metrics; `words` when the evaluator measures each word (`Evaluator.last_words`)."""

    step: int
    metrics: dict[str, float]
    words: WordSurprisals | None = None


@dataclass
class CheckpointEvent:
    step: int
    path: str


@dataclass
class ErrorEvent:
    """Training failed; `message` is meant for people, `traceback` for the log file."""

    step: int
    message: str
    error_type: str
    traceback: str = ""
    last_checkpoint: str | None = None


@dataclass
class StatusEvent:
    """A change of run state: 'started', 'paused', 'resumed', 'completed', 'stopped', 'early_stopped', 'failed'."""

    step: int
    state: str
    detail: str = ""


Event = Union[StepEvent, RolloutEvent, RolloutTextsEvent, EvalEvent, CheckpointEvent, ErrorEvent, StatusEvent]
Subscriber = Callable[[Event], None]


@dataclass(frozen=True)
class TrainingModels:
    """What a request submitted through `TrainingControl.submit` receives: the run's models at a
    moment when no step can change their weights. `teacher` and `reward_model` are None when the
    run does not use them."""

    step: int
    student: Any
    teacher: Any = None
    reward_model: Any = None


Request = Callable[[Optional[TrainingModels]], Any]


class TrainingControl:
    """Thread-safe requests to a running trainer; they take effect after the current step.

    Stop and pause steer the run. `submit(fn)` asks for `fn(models)` to run where the weights cannot
    change under it: the trainer serves it in the training thread between two steps (or at once
    while paused). Before a trainer attaches and after it ends, `fn` runs at once in the caller's
    thread, with the last models the trainer handed out (None before any).
    """

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._running = threading.Event()
        self._running.set()
        self._lock = threading.Lock()
        self._pending: deque[tuple[Request, Future]] = deque()
        self._models: TrainingModels | None = None
        self._attached = False

    def request_stop(self) -> None:
        """End training after the current step; the trainer saves a checkpoint."""
        self._stop.set()
        self._running.set()

    def request_pause(self) -> None:
        self._running.clear()

    def request_resume(self) -> None:
        self._running.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    def wait_while_paused(self, poll_s: float = 0.1) -> None:
        """Block the training thread while paused, serving requests; returns at once on resume or stop."""
        while not self._running.wait(poll_s):
            self.serve()

    # ------------------------------------------------------------------ requests between steps
    def submit(self, fn: Request) -> Future:
        """Run `fn(models)` where no step changes the weights; the future holds its result or error."""
        future: Future = Future()
        with self._lock:
            if self._attached:
                self._pending.append((fn, future))
                return future
            models = self._models
        _run(fn, models, future)
        return future

    def attach(self, models: TrainingModels) -> None:
        """Called by the trainer when it starts: requests now wait for the training thread."""
        with self._lock:
            self._models, self._attached = models, True

    def serve(self, models: TrainingModels | None = None) -> None:
        """Called by the trainer between steps: run every pending request on `models` (default: the last)."""
        with self._lock:
            if models is not None:
                self._models = models
            models = self._models
            pending, self._pending = list(self._pending), deque()
        for fn, future in pending:
            if future.set_running_or_notify_cancel():  # a caller that timed out cancelled it
                _run(fn, models, future)

    def detach(self) -> None:
        """Called by the trainer when it ends: pending and later requests run on the final weights."""
        with self._lock:
            self._attached = False
        self.serve()


def _run(fn: Request, models: TrainingModels | None, future: Future) -> None:
    try:
        future.set_result(fn(models))
    except Exception as exc:  # handed to the waiting caller, never raised in the training thread
        future.set_exception(exc)
