"""Run folders that outlast the process (tnd_core.runs, the app's run services): the status file written
atomically, interrupted runs told from live ones, resumed curves with no step twice, forks, the user's
edits and their owners, config diffs, overlay data and the long CSV."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from tnd_tiny import TargetWordReward, make_classifier, make_lm, make_tokenizer, one_torch_thread, prompts  # noqa: F401

from app import plots, runs_tab, services
from app.context import AppContext, BundleManager
from app.hosting import HostPolicy
from app.runner import Runner
from tnd_core import runs
from tnd_core import stats as S
from tnd_core.config import CustomPPOConfig
from tnd_core.errors import ConfigError, TndError
from tnd_core.events import CheckpointEvent, ErrorEvent, EvalEvent, StatusEvent, StepEvent
from tnd_core.models import StudentModel, TeacherModel
from tnd_core.trainers import CustomPPOTrainer

REPO = Path(__file__).resolve().parents[1]


def build(output_dir, **overrides):
    options = dict(
        learning_rate=1e-3,
        batch_size=4,
        mini_batch_size=2,
        ppo_epochs=1,
        max_new_tokens=4,
        steps=3,
        output_dir=str(output_dir),
        save_steps=0,
        save_total_limit=0,
        seed=0,
    )
    options.update(overrides)
    tok = make_tokenizer()
    config = CustomPPOConfig(**options)
    return CustomPPOTrainer(
        teacher=TeacherModel(make_lm(tok, seed=5), tok),
        student=StudentModel(make_lm(tok, seed=1), tok),
        reward_model=TargetWordReward("w15", config.max_new_tokens),
        config=config,
        train_dataset=prompts(16),
    )


def metric_rows(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / runs.METRICS_FILE).read_text().splitlines()]


def step_rows(folder: Path) -> list[dict]:
    return [r for r in metric_rows(folder) if not any(k.startswith(S.EVAL_PREFIX) for k in r)]


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ---------------------------------------------------------------------- the status file
def test_status_follows_the_events_and_is_replaced_whole(tmp_path):
    clock = [1000.0]
    writer = runs.RunStatusWriter(tmp_path, heartbeat_s=3600, clock=lambda: clock[0])
    writer(StatusEvent(0, "started"))
    status = json.loads((tmp_path / runs.STATUS_FILE).read_text())
    assert status["state"] == "running" and status["pid"] == os.getpid() and status["hostname"] == socket.gethostname()
    assert status["created"] == status["heartbeat"] == 1000.0
    writer(StepEvent(1, 10, {S.REWARD_MEAN: 0.5}, 1.0))  # inside the heartbeat: kept in memory only
    assert json.loads((tmp_path / runs.STATUS_FILE).read_text()).get("step") == 0
    writer(CheckpointEvent(1, str(tmp_path / "checkpoint-1")))
    writer(EvalEvent(1, {"words_acquired": 3.0}))
    writer(StatusEvent(1, "paused"))
    status = json.loads((tmp_path / runs.STATUS_FILE).read_text())
    assert status["state"] == "paused" and status["step"] == 1 and status["last_checkpoint"] == "checkpoint-1"
    assert status["last_stats"] == {S.REWARD_MEAN: 0.5} and status["last_eval"] == {"eval/words_acquired": 3.0}
    writer(ErrorEvent(1, "NaN loss", "TrainingDiverged", "", str(tmp_path / "checkpoint-1")))
    writer(StatusEvent(1, "failed", "NaN loss"))
    status = json.loads((tmp_path / runs.STATUS_FILE).read_text())
    assert status["state"] == "failed" and status["message"] == "NaN loss" and "ended" in status
    assert [p.name for p in tmp_path.iterdir()] == [runs.STATUS_FILE]  # no temp file left behind


def test_a_reader_never_sees_half_a_status_file(tmp_path):
    writer = runs.RunStatusWriter(tmp_path, heartbeat_s=0)
    writer(StatusEvent(0, "started"))
    stop = threading.Event()

    def write() -> None:
        step = 0
        while not stop.is_set():
            step += 1
            writer(StepEvent(step, 10**6, {f"s{i}": float(step) for i in range(200)}, 0.1))

    thread = threading.Thread(target=write)
    thread.start()
    try:
        deadline = time.monotonic() + 1.0
        reads = 0
        while time.monotonic() < deadline:
            status = json.loads((tmp_path / runs.STATUS_FILE).read_text())  # raises on a torn file
            assert len(status.get("last_stats", {})) in (0, 200)
            reads += 1
    finally:
        stop.set()
        thread.join()
        writer.close()
    assert reads > 10


def test_a_failed_replace_keeps_the_previous_status(tmp_path, monkeypatch):
    runs.write_json(tmp_path / runs.STATUS_FILE, {"state": "running"})

    def broken(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(runs.os, "replace", broken)
    with pytest.raises(OSError):
        runs.write_json(tmp_path / runs.STATUS_FILE, {"state": "completed"})
    assert json.loads((tmp_path / runs.STATUS_FILE).read_text()) == {"state": "running"}


def test_heartbeat_beats_while_a_step_takes_long_and_stops_at_the_end(tmp_path):
    writer = runs.RunStatusWriter(tmp_path, heartbeat_s=0.05)
    writer(StatusEvent(0, "started"))
    first = json.loads((tmp_path / runs.STATUS_FILE).read_text())["heartbeat"]
    time.sleep(0.3)
    beat = json.loads((tmp_path / runs.STATUS_FILE).read_text())["heartbeat"]
    assert beat > first
    writer(StatusEvent(0, "stopped"))
    ended = (tmp_path / runs.STATUS_FILE).stat().st_mtime_ns
    time.sleep(0.2)
    assert (tmp_path / runs.STATUS_FILE).stat().st_mtime_ns == ended


# ---------------------------------------------------------------------- interrupted runs
def _status(tmp_path: Path, **values) -> Path:
    folder = tmp_path / values.pop("name", "run")
    folder.mkdir(parents=True, exist_ok=True)
    runs.write_json(folder / runs.STATUS_FILE, {"state": "running", "step": 3, **values})
    return folder


def test_a_run_whose_process_is_gone_is_interrupted(tmp_path):
    here, now = socket.gethostname(), time.time()
    live = _status(tmp_path, name="live", pid=os.getpid(), pid_started=runs._proc_start(os.getpid()), hostname=here)
    dead = _status(tmp_path, name="dead", pid=dead_pid(), hostname=here, heartbeat=now)
    reused = _status(tmp_path, name="reused", pid=os.getpid(), pid_started=1, hostname=here, heartbeat=now)
    remote_fresh = _status(tmp_path, name="remote-fresh", pid=1, hostname="elsewhere", heartbeat=now - 5)
    remote_stale = _status(tmp_path, name="remote-stale", pid=1, hostname="elsewhere", heartbeat=now - 3600)
    paused_dead = _status(tmp_path, name="paused-dead", state="paused", pid=dead_pid(), hostname=here)
    ended_dead = _status(tmp_path, name="ended-dead", state="stopped", pid=dead_pid(), hostname=here)
    seen = {r.name: r.status for r in runs.list_runs(tmp_path)}
    assert seen == {
        live.name: "running",
        dead.name: "interrupted",
        reused.name: "interrupted",
        remote_fresh.name: "running",
        remote_stale.name: "interrupted",
        paused_dead.name: "interrupted",
        ended_dead.name: "stopped",
    }


def _train_args(tmp_path: Path, output_dir: Path, steps: int, *extra: str) -> list[str]:
    tok = make_tokenizer()
    for name, model in (("teacher", make_lm(tok, seed=5)), ("student", make_lm(tok, seed=1))):
        if not (tmp_path / name).is_dir():
            model.save_pretrained(tmp_path / name)
            tok.save_pretrained(tmp_path / name)
    if not (tmp_path / "reward").is_dir():
        make_classifier(tok).save_pretrained(tmp_path / "reward")
        tok.save_pretrained(tmp_path / "reward")
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps({"text": p}) + "\n" for p in prompts(12)))
    return [
        "train",
        "--teacher_name_or_path",
        str(tmp_path / "teacher"),
        "--student_name_or_path",
        str(tmp_path / "student"),
        "--reward_model_name_or_path",
        str(tmp_path / "reward"),
        "--dataset_name_or_path",
        str(tmp_path / "prompts.jsonl"),
        "--prompt_column",
        "text",
        "--batch_size",
        "4",
        "--mini_batch_size",
        "2",
        "--ppo_epochs",
        "1",
        "--max_new_tokens",
        "4",
        "--steps",
        str(steps),
        "--output_dir",
        str(output_dir),
        *extra,
    ]


def test_a_killed_training_process_is_interrupted_and_tnd_train_latest_continues_its_curves(tmp_path):
    from tnd_core.cli import main

    run = tmp_path / "runs" / "killed"
    args = _train_args(tmp_path, run, 500, "--save_steps", "2", "--save_total_limit", "2")
    code = "import sys; from tnd_core.cli import main; sys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", code, *args], env=env, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            record = runs.read_run(run) if run.is_dir() else None
            if record is not None and record.status == "running" and len(record.checkpoints) >= 2:
                break
            assert proc.poll() is None, "the training process ended early"
            time.sleep(0.2)
        else:
            pytest.fail("no second checkpoint within 120 s")
        time.sleep(0.3)  # let it log a step or two after the checkpoint
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    record = runs.list_runs(run.parent)[0]
    assert record.status == "interrupted" and record.pid == proc.pid
    assert record.last_checkpoint == run / f"checkpoint-{record.checkpoints[-1]}"
    saved = record.checkpoints[-1]

    assert main(_train_args(tmp_path, run, saved + 2, "--resume_from_checkpoint", "latest", "--save_steps", "0")) == 0
    rows = step_rows(run)
    assert [r["step"] for r in rows] == list(range(1, saved + 3))  # every step once, continued
    walls = [r[S.WALL_CLOCK] for r in rows]
    tokens = [r[S.TOKENS_SEEN] for r in rows]
    assert walls == sorted(walls) and tokens == sorted(tokens) and tokens[-1] > tokens[saved - 1] > 0
    after = runs.read_run(run)
    assert after.status == "completed" and after.steps_done == saved + 2
    assert after.duration_s == pytest.approx(walls[-1])


# ---------------------------------------------------------------------- metrics across runs in one folder
def test_a_fresh_run_into_a_used_folder_starts_its_metrics_clean(tmp_path):
    build(tmp_path / "run", steps=3).train()
    assert [r["step"] for r in step_rows(tmp_path / "run")] == [1, 2, 3]
    build(tmp_path / "run", steps=2).train()
    rows = step_rows(tmp_path / "run")
    assert [r["step"] for r in rows] == [1, 2]
    assert rows[0][S.TOKENS_SEEN] > 0 and rows[1][S.TOKENS_SEEN] > rows[0][S.TOKENS_SEEN]
    record = runs.read_run(tmp_path / "run")
    assert record.status == "completed" and record.steps_done == 2
    assert record.final_reward == pytest.approx(rows[-1][S.REWARD_MEAN])


def test_resume_drops_the_rows_after_its_checkpoint_and_continues(tmp_path):
    run = tmp_path / "run"
    build(run, steps=4, save_steps=2).train()
    # as if the process had died after step 3: the checkpoint at step 2 is the one to resume from
    shutil.rmtree(run / "checkpoint-4")
    resumed = build(run, steps=5, resume_from_checkpoint="latest")
    resumed.train()
    rows = step_rows(run)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    assert [r[S.WALL_CLOCK] for r in rows] == sorted(r[S.WALL_CLOCK] for r in rows)


# ---------------------------------------------------------------------- listing
def test_listing_reads_status_and_falls_back_to_the_metrics_tail(tmp_path):
    modern = tmp_path / "modern"
    build(modern, steps=2, save_steps=1).train()
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / runs.METRICS_FILE).write_text(
        "".join(json.dumps({"step": s, S.REWARD_MEAN: s / 10}) + "\n" for s in range(1, 8))
    )
    (tmp_path / "not-a-run").mkdir()
    records = {r.name: r for r in runs.list_runs(tmp_path)}
    assert set(records) == {"modern", "legacy"}
    assert records["modern"].status == "completed" and records["modern"].checkpoints == [1, 2]
    assert records["modern"].steps_done == 2 and records["modern"].total_steps == 2
    assert records["legacy"].status == "unknown" and records["legacy"].steps_done == 7
    assert records["legacy"].final_reward == pytest.approx(0.7)
    with open(legacy / runs.METRICS_FILE, "a") as f:  # a change is seen at once (the cache follows mtime)
        f.write(json.dumps({"step": 8, S.REWARD_MEAN: 0.8}) + "\n")
    os.utime(legacy / runs.METRICS_FILE, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert runs.read_run(legacy).steps_done == 8


def synthetic_run(root: Path, name: str, steps: int, evals_every: int = 0, state: str = "completed") -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    lines = []
    for step in range(1, steps + 1):
        lines.append({"step": step, S.REWARD_MEAN: step / steps, S.TEACHER_STUDENT_KL: 1 / step})
        lines[-1].update({S.WALL_CLOCK: 2.0 * step, S.TOKENS_SEEN: 100.0 * step})
        if evals_every and step % evals_every == 0:
            lines.append({"step": step, "eval/words_acquired": float(step)})
    (folder / runs.METRICS_FILE).write_text("".join(json.dumps(r) + "\n" for r in lines))
    runs.write_json(folder / runs.STATUS_FILE, {"state": state, "step": steps, "total_steps": steps, "created": 1.0})
    return folder


# ---------------------------------------------------------------------- overlays, diff, CSV
def test_overlay_series_put_runs_on_steps_tokens_or_wall_clock(tmp_path):
    metrics = runs.read_metrics(synthetic_run(tmp_path, "a", 6, evals_every=3))
    by_steps = runs.overlay_series("a", metrics, "steps")
    assert by_steps.x == [1, 2, 3, 4, 5, 6] and by_steps.eval_x == [3, 6]
    assert by_steps.evals["eval/words_acquired"] == [3.0, 6.0]
    by_tokens = runs.overlay_series("a", metrics, "tokens")
    assert by_tokens.x == [100.0 * s for s in range(1, 7)] and by_tokens.eval_x == [300.0, 600.0]
    assert runs.overlay_series("a", metrics, "wall_clock").eval_x == [6.0, 12.0]
    with pytest.raises(ConfigError, match="x axis"):
        runs.overlay_series("a", metrics, "epochs")


def test_overlay_figures_give_each_run_one_colour_in_every_plot(tmp_path):
    series = [
        runs.overlay_series(name, runs.read_metrics(synthetic_run(tmp_path, name, n, evals_every=2)), "tokens")
        for name, n in (("a", 4), ("b", 6))
    ]
    figures = plots.overlay_figures(series, runs.X_AXES["tokens"], "eval/words_acquired")
    assert [f.layout.title.text for f in figures] == [
        "Reward",
        "KL",
        "Losses",
        "Policy health",
        "Evaluation: words_acquired",
    ]
    reward, kl, eval_fig = figures[0], figures[1], figures[4]
    assert [t.line.color for t in reward.data] == [plots.run_color(0), plots.run_color(1)]
    assert {t.legendgroup: t.line.color for t in kl.data} == {"a": plots.run_color(0), "b": plots.run_color(1)}
    assert list(reward.data[1].x) == [100.0 * s for s in range(1, 7)]
    assert [list(t.y) for t in eval_fig.data] == [[2.0, 4.0], [2.0, 4.0, 6.0]]
    assert reward.layout.xaxis.title.text == "student tokens seen"


def test_config_diff_lists_only_the_options_that_differ():
    a = CustomPPOConfig(output_dir="a").to_dict()
    b = CustomPPOConfig(output_dir="b", learning_rate=2e-5, optimizer_kwargs={"eps": 1e-6}).to_dict()
    c = CustomPPOConfig(output_dir="c", learning_rate=2e-5).to_dict()
    diff = runs.config_diff({"a": a, "b": b, "c": c})
    assert [name for name, _ in diff] == ["learning_rate", "optimizer_kwargs"]
    assert dict(diff)["learning_rate"] == [a["learning_rate"], 2e-5, 2e-5]
    assert runs.config_diff({"a": a, "b": dict(a, output_dir="elsewhere")}) == []
    assert runs.config_diff({"a": {"x": 1}, "b": {}}) == [("x", [1, None])]


def test_long_csv_has_one_row_per_logged_value(tmp_path):
    one = runs.read_metrics(synthetic_run(tmp_path, "one", 2, evals_every=2))
    text = runs.write_long_csv(runs.long_rows({"one": one}), tmp_path / "out.csv")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["run", "step", "metric", "value"]
    assert len(rows) == 1 + 2 * 4 + 1  # two steps of four metrics, one evaluation
    assert ["one", "2", "eval/words_acquired", "2.0"] in rows
    assert ["one", "1", S.TEACHER_STUDENT_KL, "1.0"] in rows
    assert (tmp_path / "out.csv").read_text() == text


# ---------------------------------------------------------------------- the app: edits, owners, resume, fork
class FakeRun:
    """A run function that records the configs it was started with and ends at once."""

    def __init__(self) -> None:
        self.configs: list[CustomPPOConfig] = []

    def __call__(self, config, callbacks=(), control=None):
        self.configs.append(config)
        return {"state": "completed", "step": 0, "last_checkpoint": None, "stats": {}}


def app_context(tmp_path: Path, hosted: bool) -> tuple[AppContext, FakeRun]:
    env = {"TND_DATA_ROOT": str(tmp_path / "data"), "TND_HOSTED": "1" if hosted else "0"}
    fake = FakeRun()
    ctx = AppContext(runner=Runner(run_function=fake), bundle=BundleManager(), policy=HostPolicy.from_env(env))
    return ctx, fake


def trained_run(ctx: AppContext, name: str, owner: str, steps: int = 2, **overrides) -> Path:
    folder = ctx.policy.runs_root / name
    folder.mkdir(parents=True)
    ctx.policy.claim_run(folder, owner)
    trainer = build(folder, steps=steps, save_steps=1, **overrides)
    trainer.config.save(folder / runs.CONFIG_FILE)
    trainer.train()
    return folder


def test_rename_note_and_delete_are_for_the_owner_only_in_hosted_mode(tmp_path):
    ctx, _ = app_context(tmp_path, hosted=True)
    folder = synthetic_run(ctx.policy.runs_root, "alices", 3)
    ctx.policy.claim_run(folder, "alice")
    for attempt in (
        lambda: services.rename_run(ctx, "alices", "mine now", "bob"),
        lambda: services.note_run(ctx, "alices", "hi", "bob"),
        lambda: services.delete_run(ctx, "alices", "bob"),
        lambda: services.resume_run(ctx, "alices", "bob"),
    ):
        with pytest.raises(TndError, match="Only the session that started run alices"):
            attempt()
    assert services.rename_run(ctx, "alices", "lr 1e-3", "alice").label == "lr 1e-3"
    assert services.note_run(ctx, "alices", "the baseline", "alice").note == "the baseline"
    record = runs.read_run(folder)
    assert (record.name, record.label, record.note) == ("alices", "lr 1e-3", "the baseline")
    assert runs_tab.run_label(record) == "lr 1e-3 (alices)"
    with pytest.raises(ConfigError, match="the name of a run"):
        services.delete_run(ctx, "../alices", "alice")
    services.delete_run(ctx, "alices", "alice")
    assert not folder.exists() and services.run_records(ctx) == []


def test_local_mode_the_machines_user_owns_every_run_but_a_live_one_is_not_deleted(tmp_path):
    ctx, _ = app_context(tmp_path, hosted=False)
    synthetic_run(ctx.policy.runs_root, "busy", 3, state="running")
    status = json.loads((ctx.policy.runs_root / "busy" / runs.STATUS_FILE).read_text())
    status.update(pid=os.getpid(), hostname=socket.gethostname())
    runs.write_json(ctx.policy.runs_root / "busy" / runs.STATUS_FILE, status)
    assert services.rename_run(ctx, "busy", "still mine", None).label == "still mine"
    with pytest.raises(TndError, match="stop it before"):
        services.delete_run(ctx, "busy", None)
    with pytest.raises(ConfigError, match="run name"):
        services.rename_run(ctx, "busy", "x" * 200, None)


def test_resume_from_the_app_starts_the_runs_own_config_from_its_latest_checkpoint(tmp_path):
    ctx, fake = app_context(tmp_path, hosted=True)
    folder = trained_run(ctx, "base", "alice", steps=2, save_total_limit=3)
    with pytest.raises(TndError, match="completed; only"):
        services.resume_run(ctx, "base", "alice")
    runs.mark(folder, "stopped")
    with pytest.raises(TndError, match="has done all its 2 steps"):
        services.resume_run(ctx, "base", "alice")
    config = CustomPPOConfig.load(folder / runs.CONFIG_FILE).replace(steps=5)
    config.save(folder / runs.CONFIG_FILE)
    started = services.resume_run(ctx, "base", "alice")
    assert ctx.runner.join(10)
    assert fake.configs == [started]
    assert started.output_dir == str(folder) and started.resume_from_checkpoint == "latest" and started.steps == 5


def test_fork_copies_the_checkpoint_into_a_new_run_with_the_changed_options(tmp_path):
    ctx, fake = app_context(tmp_path, hosted=False)
    folder = trained_run(ctx, "base", "alice", steps=2)
    with pytest.raises(ConfigError, match="one of run base's checkpoints"):
        services.fork_run(ctx, "base", 7, {}, "", "alice")
    with pytest.raises(ConfigError, match="learning_rate"):
        services.fork_run(ctx, "base", 1, {"learning_rate": -1}, "", "alice")
    assert not (ctx.policy.runs_root / "base-fork").exists()  # a refused fork leaves nothing behind
    started = services.fork_run(ctx, "base", 1, {"learning_rate": 5e-4, "steps": 4}, "", "bob")
    assert ctx.runner.join(10) and fake.configs == [started]
    fork = ctx.policy.runs_root / "base-fork"
    assert started.output_dir == str(fork) and started.resume_from_checkpoint == str(fork / "checkpoint-1")
    assert (started.learning_rate, started.steps) == (5e-4, 4)
    assert runs.list_checkpoints(fork) == [1] and runs.list_checkpoints(folder) == [1, 2]
    weights = next((folder / "checkpoint-1" / "student").glob("*.safetensors"))
    copied = fork / "checkpoint-1" / "student" / weights.name
    assert copied.read_bytes() == weights.read_bytes()
    assert runs.read_run(fork).forked_from == {"run": "base", "checkpoint": 1}


def test_a_forked_run_continues_the_old_runs_curves_with_its_new_options(tmp_path):
    ctx, fake = app_context(tmp_path, hosted=False)
    trained_run(ctx, "base", "alice", steps=3)
    started = services.fork_run(ctx, "base", 2, {"learning_rate": 5e-4, "steps": 4}, "faster", "alice")
    assert ctx.runner.join(10)
    trainer = build(started.output_dir, **{k: getattr(started, k) for k in ("steps", "learning_rate", "save_steps")})
    trainer.train(resume_from_checkpoint=started.resume_from_checkpoint)
    rows = step_rows(Path(started.output_dir))
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    # the old run's rows up to the checkpoint, then the fork's own learning rate (a constant schedule)
    assert [r[S.LEARNING_RATE] for r in rows] == pytest.approx([1e-3, 1e-3, 5e-4, 5e-4])
    assert runs.read_run(started.output_dir).status == "completed"


def test_a_fresh_start_into_a_used_run_name_gets_the_next_free_name(tmp_path):
    ctx, fake = app_context(tmp_path, hosted=False)
    synthetic_run(ctx.policy.runs_root, "tnd-run", 2)
    first = services.start_run(ctx, CustomPPOConfig(output_dir="outputs/tnd-run"), "alice")
    assert ctx.runner.join(10)
    assert first.output_dir == str(ctx.policy.runs_root / "tnd-run-2")
    absolute = tmp_path / "elsewhere"
    second = services.start_run(ctx, CustomPPOConfig(output_dir=str(absolute)), "alice")
    assert ctx.runner.join(10) and second.output_dir == str(absolute)
    assert (absolute / runs.CONFIG_FILE).is_file()
    assert {r.name for r in services.run_records(ctx)} == {"tnd-run-2", "tnd-run"}  # the absolute one is not listed


def test_a_run_that_fails_while_loading_is_marked_failed_on_disk(tmp_path):
    def broken(config, callbacks=(), control=None):
        raise TndError("student_name_or_path: no such model")

    ctx, _ = app_context(tmp_path, hosted=False)
    ctx.runner.run_function = broken
    started = services.start_run(ctx, CustomPPOConfig(output_dir="broken"), "alice")
    assert ctx.runner.join(10)
    record = runs.read_run(started.output_dir)
    assert record.status == "failed" and "no such model" in record.message


def test_export_csv_and_diff_frame_of_the_runs_tab(tmp_path):
    ctx, _ = app_context(tmp_path, hosted=False)
    for name, lr in (("a", 1e-3), ("b", 2e-3)):
        folder = synthetic_run(ctx.policy.runs_root, name, 3)
        CustomPPOConfig(learning_rate=lr, output_dir=name).save(folder / runs.CONFIG_FILE)
    path = runs_tab.export_csv(ctx, ["a", "b"])
    rows = list(csv.DictReader(open(path)))
    assert {r["run"] for r in rows} == {"a", "b"} and len(rows) == 2 * 3 * 4
    frame = runs_tab.config_diff_frame([runs.read_run(ctx.policy.runs_root / n) for n in ("a", "b")])
    assert frame.values.tolist() == [["learning_rate", "0.001", "0.002"]]
    table = runs_tab.runs_frame(services.run_records(ctx))
    assert list(table.columns[:5]) == ["name", "run", "status", "steps done", "of"] and len(table) == 2


def test_the_listing_benchmarks_runs_are_listed_with_what_their_writer_wrote(tmp_path):
    from benchmarks.runs_listing import WRITTEN_RUNS, make_runs

    make_runs(tmp_path, WRITTEN_RUNS + 2, 250)
    records = runs.list_runs(tmp_path)
    assert len(records) == WRITTEN_RUNS + 2
    assert [r.name for r in records][:2] == [f"run-{WRITTEN_RUNS + 1:03d}", f"run-{WRITTEN_RUNS:03d}"]  # newest first
    for record in records:
        assert (record.status, record.steps_done, record.total_steps) == ("completed", 250, 250)
        assert record.checkpoints == [250] and record.last_checkpoint == record.path / "checkpoint-250"
        assert record.duration_s == pytest.approx(125.0)
        rows = step_rows(record.path)
        assert len(rows) == 250 and record.final_reward == pytest.approx(rows[-1][S.REWARD_MEAN])
        assert record.eval_metrics == {
            "eval/words_acquired": 200.0,
            "eval/perplexity": pytest.approx(
                [r for r in metric_rows(record.path) if "eval/perplexity" in r][-1]["eval/perplexity"]
            ),
        }
