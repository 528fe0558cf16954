"""Resuming on tiny models: changed schedule options applied, optimizer options refused, exact resume
unchanged, damaged checkpoints named, and output_dir tidied after a killed save."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
from tnd_tiny import TargetWordReward, make_lm, make_tokenizer, one_torch_thread, prompts  # noqa: F401

from tnd_core import stats as S
from tnd_core.config import CustomPPOConfig
from tnd_core.errors import ConfigError
from tnd_core.events import StepEvent
from tnd_core.models import StudentModel, TeacherModel
from tnd_core.trainers import CustomPPOTrainer
from tnd_core.trainers.ppo_trainer import checkpoint

CHECKPOINT_LOGGER = "tnd_core.trainers.ppo_trainer.checkpoint"
# batch_size 8 with as many demos, mini-batches of 4, 2 epochs: 8 optimizer updates per PPO step.
UPDATES_PER_STEP = 8


def build(output_dir, student_width=32, **overrides):
    options = dict(
        learning_rate=1e-3,
        batch_size=8,
        mini_batch_size=4,
        ppo_epochs=2,
        max_new_tokens=4,
        steps=2,
        output_dir=str(output_dir),
        save_steps=0,
        save_total_limit=0,
        seed=0,
    )
    options.update(overrides)
    tok = make_tokenizer()
    config = CustomPPOConfig(**options)
    return CustomPPOTrainer(
        teacher=TeacherModel(make_lm(tok, seed=5, initializer_range=0.3), tok),
        student=StudentModel(make_lm(tok, seed=1, n_embd=student_width), tok),
        reward_model=TargetWordReward("w15", config.max_new_tokens),
        config=config,
        train_dataset=prompts(24),
    )


def steps_seen(trainer):
    seen = []
    trainer.add_callback(lambda e: isinstance(e, StepEvent) and seen.append(e))
    return seen


def numeric(stats):
    return {k: v for k, v in stats.items() if not k.startswith(("time/", "perf/"))}


def applied_warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("resume applies")]


# ---------------------------------------------------------------------- changed schedule options are applied
def test_doubled_learning_rate_takes_effect_on_the_next_step(tmp_path, caplog):
    run = tmp_path / "run"
    build(run).train()
    resumed = build(run, steps=3, learning_rate=2e-3, resume_from_checkpoint="latest")
    seen = steps_seen(resumed)
    with caplog.at_level(logging.WARNING, logger=CHECKPOINT_LOGGER):
        assert resumed.train()["step"] == 3
    assert [e.step for e in seen] == [3]
    assert seen[0].stats[S.LEARNING_RATE] == pytest.approx(2e-3)
    assert all(group["lr"] == pytest.approx(2e-3) for group in resumed.optimizer.param_groups)
    assert applied_warnings(caplog) == [
        "resume applies the changed options: learning_rate 0.001 -> 0.002, steps 2 -> 3"
    ]
    assert checkpoint.read_config(run / "checkpoint-3")["learning_rate"] == 2e-3


def test_extended_steps_follow_the_new_linear_schedule(tmp_path, caplog):
    run, warmup, lr = tmp_path / "run", 2, 1e-3
    build(run, scheduler_name="linear", warmup=warmup).train()
    # The old schedule spanned 16 updates and ended at 0; the new one spans 32, decaying linearly after the warmup.
    total = 4 * UPDATES_PER_STEP

    def new_schedule(updates):
        return lr * (total - updates) / (total - warmup)

    probe = build(run, steps=4, scheduler_name="linear", warmup=warmup)
    probe.load_checkpoint(run / "checkpoint-2")
    assert probe.optimizer.param_groups[0]["lr"] == pytest.approx(new_schedule(2 * UPDATES_PER_STEP))

    caplog.clear()
    resumed = build(run, steps=4, scheduler_name="linear", warmup=warmup, resume_from_checkpoint="latest")
    seen = steps_seen(resumed)
    with caplog.at_level(logging.WARNING, logger=CHECKPOINT_LOGGER):
        resumed.train()
    assert [e.step for e in seen] == [3, 4]
    for event in seen:
        assert event.stats[S.LEARNING_RATE] == pytest.approx(new_schedule(event.step * UPDATES_PER_STEP)), event.step
    assert resumed.lr_scheduler.scheduler.last_epoch == total
    assert applied_warnings(caplog) == ["resume applies the changed options: steps 2 -> 4"]


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)`")
def test_the_learning_rate_at_the_resume_point_is_the_new_schedules(tmp_path):
    """Before any new step: the optimizer's rate is the new schedule's value at the resumed update count."""
    run = tmp_path / "run"
    build(run, scheduler_name="linear").train()
    resumed = build(run, steps=4, learning_rate=4e-3, scheduler_name="cosine")
    resumed.load_checkpoint(run / "checkpoint-2")
    reference = build(tmp_path / "ref", steps=4, learning_rate=4e-3, scheduler_name="cosine")
    for _ in range(2 * UPDATES_PER_STEP):
        reference.lr_scheduler.step()
    expected = reference.optimizer.param_groups[0]["lr"]
    assert 0 < expected < 4e-3
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(expected)
    assert resumed.lr_scheduler.get_last_lr() == pytest.approx([expected])


# ---------------------------------------------------------------------- options a resume cannot change
@pytest.mark.parametrize(
    "field, old, new",
    [
        ("optimizer_name", "adamw", "sgd"),
        ("optimizer_kwargs", {}, {"weight_decay": 0.1}),
    ],
)
def test_changed_optimizer_options_are_refused(tmp_path, field, old, new):
    run = tmp_path / "run"
    build(run, steps=1).train()
    before = sorted(p.name for p in (run / "checkpoint-1").rglob("*"))
    with pytest.raises(ConfigError) as caught:
        build(run, steps=2, resume_from_checkpoint="latest", **{field: new}).train()
    error = caught.value
    assert error.field == field and error.value == new
    message = str(error)
    assert repr(old) in message and repr(new) in message and "checkpoint-1" in message
    assert "a resume cannot change optimizer_name, optimizer_kwargs" in message and "new output_dir" in message
    assert checkpoint.list_checkpoints(run) == [run / "checkpoint-1"]
    assert sorted(p.name for p in (run / "checkpoint-1").rglob("*")) == before


def test_student_source_is_fixed_only_when_it_is_the_kl_reference(tmp_path):
    run = tmp_path / "run"
    build(run, steps=1, kl_reference="initial_student", student_name_or_path="students/a").train()
    with pytest.raises(ConfigError, match="student_name_or_path") as caught:
        build(run, steps=2, kl_reference="initial_student", student_name_or_path="students/b").train(
            resume_from_checkpoint="latest"
        )
    assert caught.value.field == "student_name_or_path" and "kl_reference='initial_student'" in str(caught.value)
    # With the teacher as reference the source only gives the architecture: the saved weights replace it.
    assert build(run, steps=2, student_name_or_path="students/b").train(resume_from_checkpoint="latest")["step"] == 2


# ---------------------------------------------------------------------- unchanged and older checkpoints
def test_unchanged_resume_is_exact_and_warns_nothing(tmp_path, caplog):
    options = dict(steps=3, save_steps=2, clm_per_step=1, ppo_per_step=2, scheduler_name="linear", warmup=1)
    full = build(tmp_path / "a", **options)
    full_steps = steps_seen(full)
    full.train()
    resumed = build(tmp_path / "b", **options)
    resumed_steps = steps_seen(resumed)
    with caplog.at_level(logging.WARNING, logger=CHECKPOINT_LOGGER):
        resumed.train(resume_from_checkpoint=str(tmp_path / "a/checkpoint-2"))
    assert [e.step for e in resumed_steps] == [3]
    expected, got = numeric(full_steps[-1].stats), numeric(resumed_steps[-1].stats)
    assert expected.keys() == got.keys()
    for name in expected:
        assert got[name] == pytest.approx(expected[name], abs=1e-5), name
    assert not [r for r in caplog.records if r.name == CHECKPOINT_LOGGER and r.levelno >= logging.WARNING]


def test_a_checkpoint_without_a_saved_config_resumes_its_own_schedule_with_a_warning(tmp_path, caplog):
    run = tmp_path / "run"
    build(run).train()
    (run / "checkpoint-2" / checkpoint.CONFIG_FILE).unlink()
    resumed = build(run, steps=3, learning_rate=2e-3, resume_from_checkpoint="latest")
    seen = steps_seen(resumed)
    with caplog.at_level(logging.WARNING, logger=CHECKPOINT_LOGGER):
        resumed.train()
    assert seen[0].stats[S.LEARNING_RATE] == pytest.approx(1e-3)
    assert any("has no config.yaml" in r.getMessage() for r in caplog.records)
    assert not applied_warnings(caplog)


# ---------------------------------------------------------------------- damaged checkpoints
def truncate(file):
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])


def drop_kl_controller(file):
    state = json.loads(file.read_text())
    del state["kl_controller"]
    file.write_text(json.dumps(state))


@pytest.mark.parametrize(
    "damage, problem",
    [
        (lambda ckpt: truncate(ckpt / "trainer_state.json"), "trainer_state.json cannot be read"),
        (lambda ckpt: drop_kl_controller(ckpt / "trainer_state.json"), "trainer_state.json lacks kl_controller"),
        (lambda ckpt: (ckpt / "optimizer.pt").unlink(), "optimizer.pt is missing"),
        (lambda ckpt: truncate(ckpt / "optimizer.pt"), "optimizer.pt cannot be loaded"),
        (lambda ckpt: (ckpt / "scheduler.pt").unlink(), "scheduler.pt is missing"),
        (lambda ckpt: shutil.rmtree(ckpt / "student"), "the student folder is missing"),
        (lambda ckpt: (ckpt / "config.yaml").write_text("steps: [unclosed"), "config.yaml cannot be read"),
    ],
    ids=["truncated-state", "state-key", "no-optimizer", "truncated-optimizer", "no-scheduler", "no-student", "yaml"],
)
def test_a_damaged_checkpoint_is_named_with_what_is_wrong(tmp_path, damage, problem):
    run = tmp_path / "run"
    build(run, steps=1).train()
    ckpt = run / "checkpoint-1"
    damage(ckpt)
    with pytest.raises(ConfigError) as caught:
        build(tmp_path / "other", steps=2).train(resume_from_checkpoint=str(ckpt))
    assert caught.value.field == "resume_from_checkpoint" and caught.value.value == str(ckpt)
    assert problem in str(caught.value)


def test_a_checkpoint_of_another_student_architecture_is_named(tmp_path):
    run = tmp_path / "run"
    build(run, steps=1).train()
    with pytest.raises(ConfigError) as caught:
        build(tmp_path / "other", student_width=16, steps=2).train(resume_from_checkpoint=str(run / "checkpoint-1"))
    assert caught.value.field == "resume_from_checkpoint" and caught.value.value == str(run / "checkpoint-1")
    assert "student cannot be loaded" in str(caught.value)


# ---------------------------------------------------------------------- housekeeping of output_dir
def test_a_run_removes_leftover_temp_folders_and_prunes_before_its_first_step(tmp_path):
    run = tmp_path / "run"
    build(run, steps=3, save_steps=1).train()
    assert checkpoint.list_checkpoints(run) == [run / f"checkpoint-{k}" for k in (1, 2, 3)]
    for leftover in (".tmp-checkpoint-4", ".stale-checkpoint-2"):
        shutil.copytree(run / "checkpoint-1", run / leftover)
    untouched = ["my-notes", "checkpoint-old-backup", ".tmp-checkpoint-notes", "tmp-checkpoint-5"]
    for name in untouched:
        (run / name).mkdir()
        (run / name / "keep.txt").write_text("mine")

    resumed = build(run, steps=4, save_total_limit=2, resume_from_checkpoint="latest")
    at_first_step = []
    resumed.add_callback(
        lambda e: isinstance(e, StepEvent) and at_first_step.append(sorted(p.name for p in run.iterdir()))
    )
    assert resumed.train()["step"] == 4

    # before any save of this run: leftovers gone and the limit restored (a crash had skipped pruning)
    assert [name for name in at_first_step[0] if name.startswith("checkpoint-")] == [
        "checkpoint-2",
        "checkpoint-3",
        "checkpoint-old-backup",
    ]
    assert not (run / ".tmp-checkpoint-4").exists() and not (run / ".stale-checkpoint-2").exists()
    assert checkpoint.list_checkpoints(run) == [run / "checkpoint-3", run / "checkpoint-4"]
    for name in untouched:
        assert (run / name / "keep.txt").read_text() == "mine"


def test_pruning_never_removes_the_checkpoint_resumed_from(tmp_path):
    run = tmp_path / "run"
    build(run, steps=3, save_steps=1).train()
    resumed = build(run, steps=2, save_total_limit=1, resume_from_checkpoint=str(run / "checkpoint-1"))
    at_first_step = []
    resumed.add_callback(lambda e: isinstance(e, StepEvent) and at_first_step.append(checkpoint.list_checkpoints(run)))
    assert resumed.train()["step"] == 2
    assert at_first_step == [[run / "checkpoint-1"]]
    # the checkpoint just saved counts as one of the kept, and the older one goes
    assert checkpoint.list_checkpoints(run) == [run / "checkpoint-2"]


def test_a_commit_killed_between_its_renames_gets_its_checkpoint_back(tmp_path):
    run = tmp_path / "run"
    build(run, steps=2, save_steps=1).train()
    # commit moved the old checkpoint-2 aside and died before moving the new one into place
    (run / "checkpoint-2").rename(run / ".stale-checkpoint-2")
    shutil.copytree(run / ".stale-checkpoint-2", run / ".tmp-checkpoint-2")
    removed = checkpoint.remove_leftovers(run)
    assert removed == [run / ".tmp-checkpoint-2"]
    assert checkpoint.list_checkpoints(run) == [run / "checkpoint-1", run / "checkpoint-2"]
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == []
