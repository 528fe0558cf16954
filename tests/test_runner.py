"""The app's background job: start, pause, resume, stop, error capture, ownership, between-step requests."""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path

import pytest

from app.runner import JobBusyError, NotOwnerError, Runner, describe_exception
from tnd_core.config import CustomPPOConfig
from tnd_core.errors import TndError
from tnd_core.events import CheckpointEvent, ErrorEvent, RolloutEvent, RolloutSample, StatusEvent, StepEvent


class ScriptedTrainer:
    """Honours TrainingControl and emits events the way the trainer contract says, with a visible step."""

    def __init__(self, config, callbacks=(), control=None, step_s=0.02, fail_at=None, error=None):
        self.config, self.callbacks, self.control = config, list(callbacks), control
        self.step_s, self.fail_at, self.error = step_s, fail_at, error
        self.in_step = False
        self.updates = 0

    def emit(self, event):
        for callback in self.callbacks:
            callback(event)

    def train(self):
        start = time.monotonic()
        self.emit(StatusEvent(0, "started"))
        step = 0
        for step in range(1, self.config.steps + 1):
            self.control.wait_while_paused()
            if self.control.stop_requested:
                step -= 1
                break
            self.in_step = True
            time.sleep(self.step_s)
            self.updates += 1
            self.in_step = False
            if step == self.fail_at:
                self.emit(ErrorEvent(step, f"step {step} exploded", "RuntimeError", "Traceback: scripted"))
                raise self.error or RuntimeError(f"step {step} exploded")
            self.emit(StepEvent(step, self.config.steps, {"env/reward_mean": 0.1 * step, "objective/kl": 1.0}, time.monotonic() - start))
            self.emit(RolloutEvent(step, [RolloutSample("the dog", " runs", 0.1 * step, " eats", 1.0)]))
        path = f"{self.config.output_dir}/checkpoint-{step}"
        self.emit(CheckpointEvent(step, path))
        self.emit(StatusEvent(step, "stopped" if self.control.stop_requested else "completed"))


def scripted(**kwargs):
    return lambda config, callbacks=(), control=None: ScriptedTrainer(config, callbacks, control, **kwargs)


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


@pytest.fixture
def config(tmp_path):
    return CustomPPOConfig(steps=30, output_dir=str(tmp_path / "run"))


def test_run_completes_and_keeps_metrics_and_log(config, tmp_path):
    runner = Runner(trainer_factory=scripted())
    runner.start(config, "alice")
    assert runner.join(10)
    snap = runner.store.snapshot()
    assert snap.state == "completed"
    assert snap.steps == list(range(1, 31))
    assert snap.stats["env/reward_mean"][-1] == pytest.approx(3.0)
    assert snap.rollout[0].trial_score == pytest.approx(3.0)
    assert snap.checkpoint.endswith("checkpoint-30")
    assert snap.first_step_wall_s is not None and snap.first_step_wall_s < 5
    log_text = (tmp_path / "run" / "train.log").read_text()
    assert "starting a run of 30 steps" in log_text and "run ended: completed" in log_text
    assert "run ended: completed" in snap.log_tail


def test_only_the_owner_controls_and_pause_resume_stop(config):
    runner = Runner(trainer_factory=scripted(step_s=0.05))
    config = config.replace(steps=1000)
    runner.start(config, "alice")
    assert wait_for(lambda: runner.store.snapshot().step >= 2)
    for action in (runner.pause, runner.resume, runner.stop):
        with pytest.raises(NotOwnerError, match="read-only"):
            action("bob")
    with pytest.raises(JobBusyError, match="another session"):
        runner.start(config, "bob")

    runner.pause("alice")
    assert wait_for(lambda: runner.store.state == "paused")
    paused_at = runner.store.snapshot().step
    time.sleep(0.4)
    assert runner.store.snapshot().step == paused_at  # no step while paused

    runner.resume("alice")
    assert wait_for(lambda: runner.store.snapshot().step >= paused_at + 2)
    assert runner.store.state == "running"

    runner.stop("alice")
    assert runner.join(10)
    snap = runner.store.snapshot()
    assert snap.state == "stopped" and snap.step < 1000
    assert snap.checkpoint.endswith(f"checkpoint-{snap.step}")

    runner.start(config.replace(steps=2), "bob")  # after the job, anyone may start the next one
    assert runner.join(10) and runner.owner == "bob" and runner.store.state == "completed"


def test_stop_while_paused_ends_the_run(config):
    runner = Runner(trainer_factory=scripted(step_s=0.02))
    runner.start(config.replace(steps=1000), "alice")
    assert wait_for(lambda: runner.store.snapshot().step >= 1)
    runner.pause("alice")
    assert wait_for(lambda: runner.store.state == "paused")
    runner.stop("alice")
    assert runner.join(10)
    assert runner.store.state == "stopped"


def test_training_error_is_captured_and_the_runner_starts_again(config):
    runner = Runner(trainer_factory=scripted(fail_at=4))
    runner.start(config, "alice")
    assert runner.join(10)
    snap = runner.store.snapshot()
    assert snap.state == "failed"
    assert "step 4 exploded" in snap.error
    assert snap.steps == [1, 2, 3]  # the metrics so far survive
    assert "Traceback" in snap.log_tail

    runner = Runner(trainer_factory=scripted())
    runner.start(config.replace(steps=3), "alice")
    assert runner.join(10) and runner.store.state == "completed"


def test_failure_while_building_the_trainer_is_reported(config):
    def broken(config, callbacks=(), control=None):
        raise TndError("teacher_name_or_path='nope' is invalid: must be a local model folder or a reachable hub id")

    runner = Runner(trainer_factory=broken)
    runner.start(config, "alice")
    assert runner.join(10)
    snap = runner.store.snapshot()
    assert snap.state == "failed" and snap.error.startswith("teacher_name_or_path='nope'")


def test_a_session_gets_one_owner_token_whichever_handler_asks_first():
    from app.context import AppContext, BundleManager

    ctx = AppContext(runner=Runner(), bundle=BundleManager())
    first = ctx.owner_token(None, "session-1")  # e.g. a Start click that beat the page's load event
    assert ctx.owner_token(None, "session-1") == first  # the load event then hands out the same one
    assert ctx.owner_token(None, "session-2") != first
    assert ctx.owner_token("kept-in-browser", "session-1") == "kept-in-browser"


def test_error_messages_are_words():
    assert describe_exception(TndError("batch_size=3 is invalid")) == "batch_size=3 is invalid"
    text = describe_exception(RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert text.startswith("RuntimeError: CUDA out of memory") and "lower batch_size" in text


def test_store_keeps_a_long_run_cheap_and_aligned():
    from app.runner import RunStore

    store = RunStore()
    store.reset("alice", CustomPPOConfig(steps=20_000))
    started = time.monotonic()
    for step in range(1, 20_001):
        stats = {f"stat/{i}": float(step) for i in range(10)}
        if step > 10_000:
            stats["late/stat"] = 1.0  # first logged half way: earlier steps read NaN
        store.on_event(StepEvent(step, 20_000, stats, step * 0.1))
    assert time.monotonic() - started < 5.0  # linear: a quadratic store takes minutes here
    snap = store.snapshot()
    assert len(snap.steps) == 20_000 and all(len(v) == 20_000 for v in snap.stats.values())
    late = snap.stats["late/stat"]
    assert math.isnan(late[9_999]) and late[10_000] == 1.0
    assert snap.eta_s == 0.0 and snap.step == 20_000


def test_requests_run_between_steps_never_inside_one(config):
    runner = Runner(trainer_factory=scripted(step_s=0.03))
    runner.start(config.replace(steps=200), "alice")
    assert wait_for(lambda: runner.trainer is not None and runner.store.snapshot().step >= 1)
    seen = []
    for _ in range(5):
        seen.append(runner.run_between_steps(lambda t: (t.in_step, threading.current_thread().name)))
    assert all(not in_step for in_step, _ in seen)
    assert {name for _, name in seen} == {"tnd-train"}  # served by the training thread

    runner.pause("alice")
    assert wait_for(lambda: runner.store.state == "paused")
    before = runner.trainer.updates
    t0 = time.monotonic()
    assert runner.run_between_steps(lambda t: t.updates) == before
    assert time.monotonic() - t0 < 1.0  # served from the pause loop, not after a timeout
    runner.stop("alice")
    assert runner.join(10)
    assert runner.run_between_steps(lambda t: t.updates) == runner.trainer.updates  # after the job: at once


def test_request_times_out_when_a_step_takes_too_long(config):
    runner = Runner(trainer_factory=scripted(step_s=2.0))
    runner.start(config.replace(steps=3), "alice")
    assert wait_for(lambda: runner.trainer is not None and runner.trainer.in_step)
    with pytest.raises(TndError, match="did not finish in time"):
        runner.run_between_steps(lambda t: t.updates, timeout_s=0.3)
    runner.stop("alice")
    assert runner.join(10)


def test_request_errors_reach_the_caller_not_the_training(config):
    runner = Runner(trainer_factory=scripted(step_s=0.02))
    runner.start(config.replace(steps=100), "alice")
    assert wait_for(lambda: runner.trainer is not None)
    with pytest.raises(ZeroDivisionError):
        runner.run_between_steps(lambda t: 1 / 0)
    assert runner.join(10)
    assert runner.store.state == "completed"


@pytest.mark.slow
def test_real_run_on_the_tiny_bundle_learns_and_compares(tiny_bundle, tmp_path):
    from app.compare_tab import run_compare
    from app.ui import make_context

    ctx = make_context()  # the app's runner: bundle-aware factory around tnd_core.pipeline.build_trainer
    steps = 6
    config = ctx.initial_config().replace(
        steps=steps, batch_size=8, mini_batch_size=4, ppo_epochs=2, max_new_tokens=8, learning_rate=3e-3,
        output_dir=str(tmp_path / "real"), save_steps=0, logging_steps=1, eval_steps=0,
    )
    ctx.runner.start(config, "alice")
    assert ctx.runner.join(300)
    snap = ctx.runner.store.snapshot()
    assert snap.state == "completed", snap.error
    assert snap.steps == list(range(1, steps + 1))
    kl = snap.stats["distill/teacher_student_kl"]
    assert (kl[-1] + kl[-2]) / 2 < 0.8 * kl[0], kl  # distillation pulls the student towards the teacher
    assert snap.rollout and snap.rollout[0].demo is not None
    assert snap.checkpoint and Path(snap.checkpoint).is_dir()
    assert f"step {steps}/{steps}" in (tmp_path / "real" / "train.log").read_text()

    result, who = run_compare(ctx, "the", config, seed=1)  # after the run: the trained student, at once
    assert who == f"student of the current run at step {steps}"
    assert result.teacher.text and isinstance(result.student.score, float)
    assert (result.mean_kl is None) == (result.tokens == [])  # an empty continuation has no per-token KL
