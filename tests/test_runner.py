"""The app's background job: start, pause, resume, stop, error capture, ownership, between-step
requests through TrainingControl, and the rule that nothing under app/ reads the trainer."""

from __future__ import annotations

import ast
import math
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.runner import JobBusyError, NotOwnerError, Runner, describe_exception
from tnd_core import stats as stat
from tnd_core.config import CustomPPOConfig
from tnd_core.errors import TndError
from tnd_core.events import (
    CheckpointEvent,
    ErrorEvent,
    EvalEvent,
    RolloutEvent,
    RolloutSample,
    StatusEvent,
    StepEvent,
    TrainingModels,
)

APP_DIR = Path(__file__).resolve().parents[1] / "app"


@dataclass
class FakeStudent:
    """What a request sees of the scripted run's student: whether a step is under way, and how many ran."""

    in_step: bool = False
    updates: int = 0


class ScriptedRun:
    """A run function that follows the trainer's contract with TrainingControl and its subscribers:
    attach the models at the start, emit a 'paused' status and wait while paused, serve requests
    after every step, detach at the end; each step takes `step_s` with `student.in_step` set."""

    def __init__(self, step_s=0.02, fail_at=None, error=None):
        self.step_s, self.fail_at, self.error = step_s, fail_at, error
        self.student = FakeStudent()
        self.attached = threading.Event()

    def __call__(self, config, callbacks=(), control=None) -> dict:
        def emit(event):
            for callback in callbacks:
                callback(event)

        start = time.monotonic()
        control.attach(TrainingModels(0, self.student))
        self.attached.set()
        try:
            emit(StatusEvent(0, "started"))
            step = 0
            for step in range(1, config.steps + 1):
                if control.paused:
                    emit(StatusEvent(step - 1, "paused"))
                    control.wait_while_paused()
                    if not control.stop_requested:
                        emit(StatusEvent(step - 1, "resumed"))
                if control.stop_requested:
                    step -= 1
                    break
                self.student.in_step = True
                time.sleep(self.step_s)
                self.student.updates += 1
                self.student.in_step = False
                if step == self.fail_at:
                    emit(ErrorEvent(step, f"step {step} exploded", "RuntimeError", "Traceback: scripted"))
                    raise self.error or RuntimeError(f"step {step} exploded")
                stats = {stat.REWARD_MEAN: 0.1 * step, stat.KL: 1.0}
                emit(StepEvent(step, config.steps, stats, time.monotonic() - start))
                emit(RolloutEvent(step, [RolloutSample("the dog", " runs", 0.1 * step, " eats", 1.0)]))
                control.serve(TrainingModels(step, self.student))
            path = f"{config.output_dir}/checkpoint-{step}"
            emit(CheckpointEvent(step, path))
            state = "stopped" if control.stop_requested else "completed"
            emit(StatusEvent(step, state))
            return {"state": state, "step": step, "last_checkpoint": path, "stats": {}}
        finally:
            control.detach()


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
    runner = Runner(run_function=ScriptedRun())
    runner.start(config, "alice")
    assert runner.join(10)
    snap = runner.store.snapshot()
    assert snap.state == "completed"
    assert snap.steps == list(range(1, 31))
    assert snap.stats[stat.REWARD_MEAN][-1] == pytest.approx(3.0)
    assert snap.rollout[0].trial_score == pytest.approx(3.0)
    assert snap.checkpoint.endswith("checkpoint-30")
    assert snap.first_step_wall_s is not None and snap.first_step_wall_s < 5
    log_text = (tmp_path / "run" / "train.log").read_text()
    assert "starting a run of 30 steps" in log_text and "run ended: completed" in log_text
    assert "run ended: completed" in snap.log_tail


def test_only_the_owner_controls_and_pause_resume_stop(config):
    runner = Runner(run_function=ScriptedRun(step_s=0.05))
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
    runner = Runner(run_function=ScriptedRun(step_s=0.02))
    runner.start(config.replace(steps=1000), "alice")
    assert wait_for(lambda: runner.store.snapshot().step >= 1)
    runner.pause("alice")
    assert wait_for(lambda: runner.store.state == "paused")
    runner.stop("alice")
    assert runner.join(10)
    assert runner.store.state == "stopped"


def test_training_error_is_captured_and_the_runner_starts_again(config):
    runner = Runner(run_function=ScriptedRun(fail_at=4))
    runner.start(config, "alice")
    assert runner.join(10)
    snap = runner.store.snapshot()
    assert snap.state == "failed"
    assert "step 4 exploded" in snap.error
    assert snap.steps == [1, 2, 3]  # the metrics so far survive
    assert "Traceback" in snap.log_tail

    runner = Runner(run_function=ScriptedRun())
    runner.start(config.replace(steps=3), "alice")
    assert runner.join(10) and runner.store.state == "completed"


def test_failure_while_loading_the_models_is_reported(config):
    def broken(config, callbacks=(), control=None):
        raise TndError("teacher_name_or_path='nope' is invalid: must be a local model folder or a reachable hub id")

    runner = Runner(run_function=broken)
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


def test_store_holds_a_100k_step_run_in_bounded_memory():
    import tracemalloc

    from app.runner import RunStore

    store = RunStore()
    store.reset("alice", CustomPPOConfig(steps=100_000))
    names = [f"stat/{i}" for i in range(30)]
    tracemalloc.start()
    try:
        started = time.monotonic()
        for step in range(1, 100_001):
            store.on_event(StepEvent(step, 100_000, dict.fromkeys(names, float(step)), step * 0.1))
            if step % 10 == 0:
                store.on_event(EvalEvent(step, {"eval/distinct_1": float(step)}))
        elapsed = time.monotonic() - started
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # every step kept would be 100k x 31 doubles = 25 MB, and ~10 s of copying per snapshot thereafter
    assert current < 3 * 2**20 and peak < 6 * 2**20, (current, peak)
    assert elapsed < 60  # thinning is amortised: a store that thins at every step takes many minutes here
    snap = store.snapshot()
    assert len(snap.steps) <= store.max_points and all(len(v) == len(snap.steps) for v in snap.stats.values())
    assert len(snap.eval_steps) <= store.max_eval_points
    assert snap.logged_steps == 100_000 and snap.logged_evals == 10_000
    assert snap.steps[0] == 1 and snap.steps[-1] == 100_000 and snap.eval_steps[-1] == 100_000
    assert snap.eta_s == 0.0 and snap.step == 100_000


def test_history_thins_the_old_part_evenly_and_keeps_the_start_and_the_latest_steps():
    from app.runner import History

    history = History(max_points=200, recent_points=50, head_points=10)
    for step in range(1, 5_001):
        values = {"a": float(step)}
        if step > 2_500:
            values["late"] = -float(step)  # first logged half way: earlier kept steps read NaN
        history.append(step, values)
        assert len(history) <= 200
    steps = history.steps.tolist()
    assert history.logged == 5_000
    assert steps[:10] == list(range(1, 11))  # the first steps, for "since the start" comparisons
    assert steps[-50:] == list(range(4_951, 5_001))  # the latest window at full resolution
    assert steps == sorted(set(steps))
    assert history.values["a"].tolist() == [float(s) for s in steps]  # values stay with their steps
    late = history.values["late"].tolist()
    assert all(math.isnan(v) for v, s in zip(late, steps) if s <= 2_500)
    assert all(v == -s for v, s in zip(late, steps) if s > 2_500)
    # the thinned part is an even grid over the whole run (the steps aged out of the latest window since
    # the last thinning follow it at full resolution)
    grid = [s for s in steps[10:] if s % history.stride == 0 and s < steps[-50] - 200]
    assert len(grid) > 20 and {b - a for a, b in zip(grid, grid[1:])} == {history.stride}
    assert grid[0] <= 10 + history.stride and steps[10] == grid[0]


def test_history_keeps_every_point_until_its_budget():
    from app.runner import History

    history = History(max_points=100, recent_points=20)
    for step in range(1, 101):
        history.append(step, {"a": step})
    assert history.steps.tolist() == list(range(1, 101)) and history.values["a"].tolist() == list(range(1, 101))
    with pytest.raises(ValueError):
        History(max_points=10, recent_points=10)


def test_requests_run_between_steps_never_inside_one(config):
    run = ScriptedRun(step_s=0.03)
    runner = Runner(run_function=run)
    assert runner.call_between_steps(lambda models: models) is None  # no job yet: at once, without models
    runner.start(config.replace(steps=200), "alice")
    assert run.attached.wait(10) and wait_for(lambda: runner.store.snapshot().step >= 1)
    seen = [runner.call_between_steps(lambda m: (m.student.in_step, threading.current_thread().name)) for _ in range(5)]
    assert all(not in_step for in_step, _ in seen)
    assert {name for _, name in seen} == {"tnd-train"}  # served by the training thread

    runner.pause("alice")
    assert wait_for(lambda: runner.store.state == "paused")
    before = run.student.updates
    t0 = time.monotonic()
    assert runner.call_between_steps(lambda m: m.student.updates) == before
    assert time.monotonic() - t0 < 1.0  # served from the pause loop, not after a timeout
    runner.stop("alice")
    assert runner.join(10)
    last_step = runner.store.step
    # after the job: at once, in the caller's thread, on the final models
    assert runner.call_between_steps(lambda m: (m.step, threading.current_thread().name)) == (last_step, "MainThread")


def test_request_times_out_when_a_step_takes_too_long_and_then_never_runs(config):
    run = ScriptedRun(step_s=2.0)
    runner = Runner(run_function=run)
    runner.start(config.replace(steps=3), "alice")
    assert wait_for(lambda: run.student.in_step)
    ran = []
    with pytest.raises(TndError, match="did not finish in time"):
        runner.call_between_steps(ran.append, timeout_s=0.3)
    runner.stop("alice")
    assert runner.join(10)
    assert ran == []  # cancelled: the training thread skipped it


def test_request_errors_reach_the_caller_not_the_training(config):
    run = ScriptedRun(step_s=0.02)
    runner = Runner(run_function=run)
    runner.start(config.replace(steps=100), "alice")
    assert run.attached.wait(10)
    with pytest.raises(ZeroDivisionError):
        runner.call_between_steps(lambda m: 1 / 0)
    assert runner.join(10)
    assert runner.store.state == "completed"


def test_a_request_waiting_on_a_run_that_fails_is_still_answered(config):
    attached, release = threading.Event(), threading.Event()

    def attach_then_fail(config, callbacks=(), control=None):
        control.attach(TrainingModels(7, FakeStudent()))
        attached.set()
        release.wait(10)
        raise RuntimeError("lost the GPU")  # without detaching: the runner must not leave requests waiting

    runner = Runner(run_function=attach_then_fail)
    runner.start(config, "alice")
    assert attached.wait(10)
    answer = []
    asking = threading.Thread(target=lambda: answer.append(runner.call_between_steps(lambda m: m.step, timeout_s=10)))
    asking.start()
    time.sleep(0.2)
    assert answer == []  # waiting for the training thread
    release.set()
    asking.join(10)
    assert runner.join(10) and runner.store.state == "failed"
    assert answer == [7]


# ---------------------------------------------------------------------- the app never reads the trainer
def trainer_reads(source: str) -> list[str]:
    """Attribute reads on a trainer in Python `source`: any `.trainer`, and attributes of names bound
    to one (named `trainer`, or assigned from `build_trainer(...)` or `CustomPPOTrainer(...)`)."""
    tree = ast.parse(source)
    bound = {"trainer"}
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, ast.Call):
            func = node.value.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in ("build_trainer", "CustomPPOTrainer"):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                bound |= {t.id for t in targets if isinstance(t, ast.Name)}
    reads = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and (node.attr == "trainer" or (isinstance(node.value, ast.Name) and node.value.id in bound))
    ]
    return [f"line {node.lineno}: {ast.unparse(node)}" for node in sorted(reads, key=lambda node: node.lineno)]


def test_the_trainer_scan_finds_reads_of_a_trainer():
    assert trainer_reads("teacher = ctx.runner.trainer.teacher") == ["line 1: ctx.runner.trainer"]
    assert trainer_reads("def work(trainer):\n    return trainer.student") == ["line 2: trainer.student"]
    built = "t = build_trainer(config)\nt.train()\nx = t.reward_model"
    assert trainer_reads(built) == ["line 2: t.train", "line 3: t.reward_model"]
    assert trainer_reads("models.student.generate(ids)") == []


def test_nothing_under_app_reads_an_attribute_of_the_trainer():
    found = {str(path.relative_to(APP_DIR.parent)): trainer_reads(path.read_text()) for path in APP_DIR.glob("**/*.py")}
    assert found and {path: reads for path, reads in found.items() if reads} == {}


class SpyTrainer:
    """Stands in for CustomPPOTrainer behind tnd_core.pipeline.run_training: serves TrainingModels of
    tiny real models through the control, and records every attribute that code under app/ reads."""

    def __init__(self, models: TrainingModels, control, callbacks, max_steps: int = 500):
        self.reads_from_app: list[str] = []
        self.models, self.control, self.callbacks, self.max_steps = models, control, list(callbacks), max_steps
        self.accelerator = type("Accelerator", (), {"is_main_process": True})()

    def __getattribute__(self, name):
        caller = Path(sys._getframe(1).f_code.co_filename).resolve()
        if caller.is_relative_to(APP_DIR):
            object.__getattribute__(self, "reads_from_app").append(name)
        return object.__getattribute__(self, name)

    def train(self) -> dict:
        control, models = self.control, self.models
        control.attach(models)
        step = 0
        try:
            while step < self.max_steps and not control.stop_requested:
                time.sleep(0.01)
                step += 1
                for callback in self.callbacks:
                    callback(StepEvent(step, self.max_steps, {stat.REWARD_MEAN: 0.0}, 0.01 * step))
                control.serve(TrainingModels(step, models.student, models.teacher, models.reward_model))
        finally:
            control.detach()
        return {"state": "stopped", "step": step, "last_checkpoint": None, "stats": {}}


def test_the_app_runs_and_compares_without_touching_the_trainer(monkeypatch, tmp_path):
    from tnd_tiny import make_classifier, make_lm, make_tokenizer

    import tnd_core.pipeline
    from app.context import AppContext, BundleManager
    from app.services import run_compare, training_run_function
    from tnd_core.models import RewardModel, StudentModel, TeacherModel

    tok = make_tokenizer()
    student, teacher = StudentModel(make_lm(tok, seed=1), tok), TeacherModel(make_lm(tok, seed=2), tok)
    models = TrainingModels(0, student, teacher, RewardModel(make_classifier(tok, seed=3), tok))
    spies: list[SpyTrainer] = []

    def spy_trainer(config, callbacks=(), control=None):
        spies.append(SpyTrainer(models, control, callbacks))
        return spies[-1]

    monkeypatch.setattr(tnd_core.pipeline, "build_trainer", spy_trainer)
    runner = Runner()
    ctx = AppContext(runner=runner, bundle=BundleManager())
    runner.run_function = training_run_function(ctx.bundle, runner.store)  # what app.ui.make_context wires
    config = CustomPPOConfig(
        teacher_name_or_path="tiny/teacher",
        student_name_or_path="tiny/student",
        reward_model_name_or_path="tiny/reward",
        dataset_name_or_path=str(tmp_path / "prompts.csv"),
        max_new_tokens=4,
        output_dir=str(tmp_path / "run"),
    )
    runner.start(config, "alice")
    assert wait_for(lambda: runner.store.step >= 2)
    result, who = run_compare(ctx, "w1 w2", config, seed=0)
    assert who.startswith("student of the current run at step ") and int(who.split()[-1]) >= 2
    assert isinstance(result.student.score, float)
    runner.stop("alice")
    assert runner.join(10) and runner.store.state == "stopped"
    _, who = run_compare(ctx, "w1 w2", config, seed=0)  # after the run: the final models, at once
    assert who == f"student of the current run at step {runner.store.step}"
    assert len(spies) == 1 and spies[0].reads_from_app == []
    assert not [value for value in vars(runner).values() if isinstance(value, SpyTrainer)]


@pytest.mark.slow
def test_real_run_on_the_tiny_bundle_learns_and_compares(tiny_bundle, tmp_path):
    from app.services import run_compare
    from app.ui import make_context

    ctx = make_context()  # the app's runner: the bundle-aware run function around tnd_core.pipeline.run_training
    steps = 6
    config = ctx.initial_config().replace(
        steps=steps,
        batch_size=8,
        mini_batch_size=4,
        ppo_epochs=2,
        max_new_tokens=8,
        learning_rate=3e-3,
        output_dir=str(tmp_path / "real"),
        save_steps=0,
        logging_steps=1,
        eval_steps=0,
    )
    ctx.runner.start(config, "alice")
    assert ctx.runner.join(300)
    snap = ctx.runner.store.snapshot()
    assert snap.state == "completed", snap.error
    assert snap.steps == list(range(1, steps + 1))
    kl = snap.stats[stat.TEACHER_STUDENT_KL]
    assert (kl[-1] + kl[-2]) / 2 < 0.8 * kl[0], kl  # distillation pulls the student towards the teacher
    assert snap.rollout and snap.rollout[0].demo is not None
    assert snap.checkpoint and Path(snap.checkpoint).is_dir()
    assert f"step {steps}/{steps}" in (tmp_path / "real" / "train.log").read_text()

    result, who = run_compare(ctx, "the", config, seed=1)  # after the run: the trained student, at once
    assert who == f"student of the current run at step {steps}"
    assert result.teacher.text and isinstance(result.student.score, float)
    assert (result.mean_kl is None) == (result.tokens == [])  # an empty continuation has no per-token KL
