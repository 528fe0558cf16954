"""Events the trainer emits and the control object its subscribers use to steer it.

The UI, loggers and tests subscribe to events; none of them reads trainer internals. A subscriber
is any callable taking one event. Control (stop, pause) goes the other way through
`TrainingControl`, which is safe to call from any thread.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable, Union


@dataclass
class StepEvent:
    """Statistics of one logged step (names as in TND_SPEC section 3)."""

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
class EvalEvent:
    step: int
    metrics: dict[str, float]


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


Event = Union[StepEvent, RolloutEvent, EvalEvent, CheckpointEvent, ErrorEvent, StatusEvent]
Subscriber = Callable[[Event], None]


@dataclass
class TrainingControl:
    """Thread-safe requests to a running trainer; they take effect after the current step."""

    _stop: threading.Event = field(default_factory=threading.Event)
    _running: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._running.set()

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

    def wait_while_paused(self, poll_s: float = 0.2) -> None:
        """Block the training thread while paused; returns at once on resume or stop."""
        while not self._running.wait(poll_s):
            pass
