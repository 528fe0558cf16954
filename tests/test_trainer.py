"""CustomPPOTrainer end to end on tiny models: learning, distillation, control, events, checkpoints, errors."""

from __future__ import annotations

import json
import math
import threading

import numpy as np
import pytest
import torch
from tnd_tiny import ConstantReward, TargetWordReward, make_classifier, make_lm, one_torch_thread, prompts  # noqa: F401

from tnd_core import stats as S
from tnd_core.config import CustomPPOConfig
from tnd_core.errors import ConfigError, TrainingDiverged
from tnd_core.events import CheckpointEvent, ErrorEvent, EvalEvent, RolloutEvent, StatusEvent, StepEvent
from tnd_core.models import RewardModel, StudentModel, TeacherModel
from tnd_core.trainers import CustomPPOTrainer
from tnd_core.trainers.ppo_trainer import checkpoint

# A PPO step with a teacher and demos reports every statistic tnd_core.stats names, except the CLM steps' loss.
PPO_STEP_STATS = set(S.DESCRIPTIONS) - {S.CLM_LOSS} - S.RUN_TOTALS


class Recorder:
    """Subscriber that keeps every event; `kind(StepEvent)` filters."""

    def __init__(self):
        self.events = []

    def __call__(self, event):
        self.events.append(event)

    def kind(self, cls):
        return [e for e in self.events if isinstance(e, cls)]

    def states(self):
        return [e.state for e in self.kind(StatusEvent)]


def build(tmp_path, tok, *, teacher=True, reward=None, callbacks=(), student=None, **overrides):
    options = dict(
        learning_rate=1e-3,
        batch_size=8,
        mini_batch_size=4,
        ppo_epochs=2,
        max_new_tokens=6,
        steps=3,
        output_dir=str(tmp_path / "run"),
        save_steps=0,
        logging_steps=1,
        seed=0,
    )
    options.update(overrides)
    config = CustomPPOConfig(**options)
    return CustomPPOTrainer(
        teacher=TeacherModel(make_lm(tok, seed=5, initializer_range=0.3), tok) if teacher else None,
        student=student or StudentModel(make_lm(tok, seed=1), tok),
        reward_model=reward or TargetWordReward("w15", config.max_new_tokens),
        config=config,
        train_dataset=prompts(24),
        callbacks=list(callbacks),
    )


def numeric(stats):
    return {k: v for k, v in stats.items() if not k.startswith(("time/", "perf/"))}


# ---------------------------------------------------------------------- the seed's own words
def test_seed_example_runs_verbatim(tmp_path, monkeypatch, tok):
    from datasets import Dataset

    monkeypatch.chdir(tmp_path)
    teacher_model = TeacherModel(make_lm(tok, seed=5), tok)
    student_model = StudentModel(make_lm(tok, seed=1), tok)
    reward_model = RewardModel(make_classifier(tok), tok)
    train_dataset = Dataset.from_dict({"prompt": prompts(16)})

    from tnd_core.trainers import CustomPPOConfig, CustomPPOTrainer

    config = CustomPPOConfig(learning_rate=1e-5, batch_size=8, mini_batch_size=4, early_stopping=True, target_kl=0.1)
    trainer = CustomPPOTrainer(
        teacher=teacher_model,
        student=student_model,
        reward_model=reward_model,
        config=config,
        train_dataset=train_dataset,
    )
    seen = Recorder()
    trainer.add_callback(seen)
    trainer.add_callback(lambda e: isinstance(e, StepEvent) and e.step == 2 and trainer.control.request_stop())
    trainer.train()

    assert seen.states() == ["started", "stopped"]
    stats = seen.kind(StepEvent)[-1].stats
    assert set(stats) == PPO_STEP_STATS and all(math.isfinite(v) for v in stats.values())
    assert (tmp_path / "outputs/tnd-run/checkpoint-2/student/value_head.safetensors").is_file()
    sample = seen.kind(RolloutEvent)[-1].samples[0]
    assert sample.prompt in prompts(16) and isinstance(sample.trial, str) and isinstance(sample.demo, str)
    assert isinstance(sample.trial_score, float) and isinstance(sample.demo_score, float)


# ---------------------------------------------------------------------- learning
@pytest.mark.slow
def test_ppo_raises_the_reward_on_the_toy_task(tmp_path, tok):
    """Reward = share of the word w15 in the response (prompts never contain it)."""
    seen = Recorder()
    trainer = build(
        tmp_path,
        tok,
        teacher=False,
        callbacks=[seen],
        steps=30,
        batch_size=16,
        mini_batch_size=8,
        learning_rate=3e-3,
        max_new_tokens=8,
        kl_reference="initial_student",
        init_kl_coef=0.01,
        adap_kl_ctrl=False,
        distill_coef=0.0,
        use_teacher_demos=False,
    )
    trainer.train()
    rewards = [e.stats["env/reward_mean"] for e in seen.kind(StepEvent)]
    start, end = np.mean(rewards[:5]), np.mean(rewards[-5:])
    assert start < 0.15 and end > 0.4 and end > start + 0.3, rewards


@pytest.mark.slow
def test_distillation_with_reward_off_lowers_teacher_student_kl(tmp_path, tok):
    seen = Recorder()
    trainer = build(
        tmp_path,
        tok,
        reward=ConstantReward(),
        callbacks=[seen],
        steps=30,
        batch_size=16,
        mini_batch_size=8,
        learning_rate=3e-3,
        max_new_tokens=8,
        distill_coef=5.0,
        init_kl_coef=0.0,
        adap_kl_ctrl=False,
        use_teacher_demos=False,
    )
    trainer.train()
    kls = [e.stats["distill/teacher_student_kl"] for e in seen.kind(StepEvent)]
    start, end = np.mean(kls[:3]), np.mean(kls[-3:])
    # Measured: about 0.86 -> 0.42; a constant reward leaves only distillation to pull the student.
    assert end < 0.65 * start, kls


# ---------------------------------------------------------------------- the TnD step
def test_one_teacher_forward_serves_kl_and_distillation_across_epochs(tmp_path, tok):
    trainer = build(tmp_path, tok, steps=1, ppo_epochs=4, distill_coef=1.0, use_teacher_demos=True)
    calls = {"logits": 0, "generate": 0}
    teacher = trainer.teacher
    logits_fn, generate_fn = teacher.get_teacher_logits, teacher.generate

    def counted_logits(*args, **kwargs):
        calls["logits"] += 1
        return logits_fn(*args, **kwargs)

    def counted_generate(*args, **kwargs):
        calls["generate"] += 1
        return generate_fn(*args, **kwargs)

    teacher.get_teacher_logits, teacher.generate = counted_logits, counted_generate
    stats = trainer.train()["stats"]
    # 8 trials + 8 demos fit in one no-grad chunk: one teacher forward for 4 epochs of KL penalty and KD loss.
    assert calls == {"logits": 1, "generate": 1}
    assert stats["ppo/epochs_run"] == 4 and stats["ppo/loss/distill"] > 0


def test_full_tnd_step_reports_every_loss(tmp_path, tok):
    trainer = build(
        tmp_path,
        tok,
        steps=1,
        use_teacher_demos=True,
        demo_score="0.75",
        clm_coef=0.5,
        entropy_coef=0.01,
        divergence="jsd",
        distill_temperature=2.0,
        reward_shaping="sub",
        shaping_baseline=0.1,
        optimize_device_cache=True,
    )
    stats = trainer.train()["stats"]
    assert stats["env/demo_reward_mean"] == pytest.approx(0.75)
    assert stats["ppo/loss/distill"] > 0 and stats["ppo/loss/clm"] > 0
    # shaped scores (s - 0.1) reach the PPO step; the reported reward is the raw one
    assert stats["ppo/mean_scores"] == pytest.approx((stats["env/reward_mean"] + 0.75) / 2 - 0.1, abs=1e-5)


def test_initial_student_reference_starts_at_zero_kl_and_stays_frozen(tmp_path, tok):
    trainer = build(
        tmp_path, tok, teacher=False, steps=2, kl_reference="initial_student", distill_coef=0.0, use_teacher_demos=False
    )
    before = [p.clone() for p in trainer.ref_model.parameters()]
    seen = Recorder()
    trainer.add_callback(seen)
    trainer.train()
    assert abs(seen.kind(StepEvent)[0].stats["objective/kl"]) < 1e-5
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.ref_model.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(before, trainer.student.parameters()))


def test_early_stopping_cuts_the_remaining_epochs(tmp_path, tok):
    g = torch.Generator().manual_seed(0)
    queries = [torch.randint(3, 27, (3,), generator=g) for _ in range(8)]
    responses = [torch.randint(3, 27, (5,), generator=g) for _ in range(8)]
    scores = torch.randn(8, generator=g)
    for early_stopping, expected_epochs in ((True, 1.0), (False, 4.0)):
        trainer = build(
            tmp_path,
            tok,
            teacher=False,
            kl_reference="initial_student",
            distill_coef=0.0,
            use_teacher_demos=False,
            ppo_epochs=4,
            learning_rate=1e-2,
            early_stopping=early_stopping,
            target_kl=1e-4,
        )
        np.random.seed(0)
        stats = trainer.step(queries, responses, scores)
        assert stats["ppo/epochs_run"] == expected_epochs and stats["ppo/early_stopped"] == float(early_stopping)


@pytest.mark.parametrize("threshold, skipped", [(1e-3, True), (10.0, False)])
def test_ratio_threshold_skips_the_minibatch(tmp_path, tok, threshold, skipped):
    trainer = build(
        tmp_path,
        tok,
        teacher=False,
        kl_reference="initial_student",
        distill_coef=0.0,
        use_teacher_demos=False,
        optimizer_name="sgd",
        learning_rate=0.1,
        ratio_threshold=threshold,
    )
    before = [p.clone() for p in trainer.student.parameters()]
    queries = [torch.tensor([3, 4, 5])] * 8
    responses = [torch.tensor([6, 7])] * 8
    stats = trainer.step(queries, responses, torch.linspace(-1, 1, 8))
    unchanged = all(torch.equal(a, b) for a, b in zip(before, trainer.student.parameters()))
    assert unchanged == skipped and stats["ppo/skipped_minibatches"] == float(skipped)


def test_clm_steps_interleave_with_ppo_steps(tmp_path, tok):
    seen = Recorder()
    trainer = build(tmp_path, tok, callbacks=[seen], steps=4, clm_per_step=1, ppo_per_step=1)
    trainer.train(clm_dataset=["w1 w2 w3 w4 w5"] * 10)
    kinds = ["clm" if S.CLM_LOSS in e.stats else "ppo" for e in seen.kind(StepEvent)]
    assert kinds == ["clm", "ppo", "clm", "ppo"]
    clm_stats = [e.stats for e in seen.kind(StepEvent) if S.CLM_LOSS in e.stats]
    assert all(set(s) == {S.CLM_LOSS, S.LEARNING_RATE, S.TIME_OPTIMIZE} and s[S.CLM_LOSS] > 0 for s in clm_stats)


# ---------------------------------------------------------------------- checkpoints and resume
def test_resume_continues_exactly_like_the_uninterrupted_run(tmp_path, tok):
    overrides = dict(
        steps=3,
        save_steps=2,
        clm_per_step=1,
        ppo_per_step=2,
        use_score_scaling=True,
        use_score_norm=True,
        scheduler_name="linear",
        warmup=1,
        entropy_coef=0.01,
    )
    full = Recorder()
    build(tmp_path / "a", tok, callbacks=[full], **overrides).train()
    resumed = Recorder()
    build(tmp_path / "b", tok, callbacks=[resumed], **overrides).train(
        resume_from_checkpoint=str(tmp_path / "a/run/checkpoint-2")
    )
    assert [e.step for e in resumed.kind(StepEvent)] == [3]
    expected, got = numeric(full.kind(StepEvent)[-1].stats), numeric(resumed.kind(StepEvent)[-1].stats)
    assert expected.keys() == got.keys()
    for name in expected:
        assert got[name] == pytest.approx(expected[name], abs=1e-5), name
    rows = [json.loads(line) for line in (tmp_path / "b/run/metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]


def test_crash_mid_save_keeps_the_previous_checkpoint(tmp_path, tok, monkeypatch):
    seen = Recorder()
    trainer = build(tmp_path, tok, callbacks=[seen], steps=3, save_steps=1)
    real_write_state = checkpoint.write_state

    def crash_on_step_2(tmp, state):
        if state["step"] == 2:
            raise OSError("disk full")
        real_write_state(tmp, state)

    monkeypatch.setattr(checkpoint, "write_state", crash_on_step_2)
    with pytest.raises(OSError, match="disk full"):
        trainer.train()
    run = tmp_path / "run"
    assert checkpoint.list_checkpoints(run) == [run / "checkpoint-1"]
    error = seen.kind(ErrorEvent)[0]
    assert error.last_checkpoint == str(run / "checkpoint-1") and error.error_type == "OSError"
    assert seen.states() == ["started", "failed"]

    monkeypatch.setattr(checkpoint, "write_state", real_write_state)
    again = build(tmp_path, tok, steps=3, save_steps=1, save_total_limit=2, resume_from_checkpoint="latest")
    assert again.train()["step"] == 3
    assert checkpoint.list_checkpoints(run) == [run / "checkpoint-2", run / "checkpoint-3"]
    assert not (run / ".tmp-checkpoint-2").exists()


# ---------------------------------------------------------------------- control and failures
def test_stop_request_ends_after_the_step_and_saves(tmp_path, tok):
    seen = Recorder()
    trainer = build(tmp_path, tok, callbacks=[seen], steps=5)
    trainer.add_callback(lambda e: isinstance(e, StepEvent) and trainer.control.request_stop())
    result = trainer.train()
    assert result["state"] == "stopped" and result["step"] == 1
    assert [e.path for e in seen.kind(CheckpointEvent)] == [str(tmp_path / "run/checkpoint-1")]
    assert seen.states() == ["started", "stopped"]


def test_pause_blocks_between_steps_until_resumed(tmp_path, tok):
    seen = Recorder()
    trainer = build(tmp_path, tok, callbacks=[seen], steps=2)

    def pause_after_first_step(event):
        if isinstance(event, StepEvent) and event.step == 1:
            trainer.control.request_pause()
            threading.Timer(0.3, trainer.control.request_resume).start()

    trainer.add_callback(pause_after_first_step)
    assert trainer.train()["state"] == "completed"
    assert seen.states() == ["started", "paused", "resumed", "completed"]
    paused_at = next(i for i, e in enumerate(seen.events) if isinstance(e, StatusEvent) and e.state == "paused")
    assert [e.step for e in seen.events[:paused_at] if isinstance(e, StepEvent)] == [1]


def test_nan_loss_stops_with_an_error_event_and_keeps_the_last_good_checkpoint(tmp_path, tok):
    seen = Recorder()
    trainer = build(tmp_path, tok, callbacks=[seen], steps=3, save_steps=1)

    def poison_value_head(event):
        if isinstance(event, CheckpointEvent) and event.step == 1:
            with torch.no_grad():
                trainer.student.v_head.summary.weight.fill_(float("nan"))

    trainer.add_callback(poison_value_head)
    with pytest.raises(TrainingDiverged, match="NaN"):
        trainer.train()
    error = seen.kind(ErrorEvent)[0]
    good = tmp_path / "run/checkpoint-1"
    assert error.step == 1 and error.last_checkpoint == str(good) and "learning_rate" in error.message
    assert seen.states() == ["started", "failed"]
    assert checkpoint.list_checkpoints(tmp_path / "run") == [good]
    restored = StudentModel.from_pretrained(good / "student")
    assert all(torch.isfinite(p).all() for p in restored.parameters())


def test_nan_scores_are_reported_against_the_reward_model(tmp_path, tok):
    class NanReward:
        def score_texts(self, texts):
            return torch.full((len(texts),), float("nan"))

    with pytest.raises(TrainingDiverged, match="reward_model"):
        build(tmp_path, tok, reward=NanReward(), steps=1).train()


def test_patience_ends_the_run_when_the_reward_stops_improving(tmp_path, tok):
    seen = Recorder()
    result = build(tmp_path, tok, reward=ConstantReward(), callbacks=[seen], steps=10, patience=2).train()
    # step 1 sets the best reward (0); steps 2 and 3 don't beat it
    assert result["state"] == "early_stopped" and result["step"] == 3
    assert seen.states() == ["started", "early_stopped"] and (tmp_path / "run/checkpoint-3").is_dir()


def test_a_failing_subscriber_does_not_stop_training(tmp_path, tok):
    def broken(event):
        raise RuntimeError("subscriber bug")

    assert build(tmp_path, tok, callbacks=[broken], steps=2).train()["state"] == "completed"


def test_events_metrics_and_evaluator(tmp_path, tok):
    seen = Recorder()
    trainer = build(tmp_path, tok, callbacks=[seen], steps=2, save_steps=1, eval_steps=1, logging_steps=1)
    trainer.train(evaluator=lambda student, teacher: {"params": float(sum(p.numel() for p in student.parameters()))})
    assert [e.step for e in seen.kind(StepEvent)] == [1, 2]
    assert [e.step for e in seen.kind(EvalEvent)] == [1, 2] and seen.kind(EvalEvent)[0].metrics["params"] > 0
    assert [e.step for e in seen.kind(CheckpointEvent)] == [1, 2]
    assert len(seen.kind(RolloutEvent)[0].samples) == 4
    rows = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 1, 2, 2] and "eval/params" in rows[1]


# ---------------------------------------------------------------------- setup choices and validation
@pytest.mark.parametrize(
    "name, cls",
    [("adamw", "AdamW"), ("adam", "Adam"), ("sgd", "SGD"), ("adafactor", "Adafactor"), ("RMSprop", "RMSprop")],
)
def test_optimizer_by_name(tmp_path, tok, name, cls):
    trainer = build(
        tmp_path, tok, optimizer_name=name, optimizer_kwargs={"weight_decay": 0.01} if name != "adafactor" else {}
    )
    assert type(trainer.optimizer.optimizer).__name__ == cls


def test_linear_schedule_with_warmup(tmp_path, tok):
    trainer = build(
        tmp_path,
        tok,
        teacher=False,
        kl_reference="initial_student",
        distill_coef=0.0,
        use_teacher_demos=False,
        steps=2,
        ppo_epochs=1,
        scheduler_name="linear",
        warmup=2,
    )
    # 2 steps * 1 epoch * 8 samples / 4 per update = 4 optimizer steps, the first 2 warming up.
    assert trainer.total_optimizer_steps() == 4
    lrs = [trainer.optimizer.param_groups[0]["lr"]]
    for _ in range(4):
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
        lrs.append(trainer.optimizer.param_groups[0]["lr"])
    assert lrs == pytest.approx([0.0, 5e-4, 1e-3, 5e-4, 0.0])


def test_trainers_built_one_after_another_in_one_process(tmp_path, tok):
    for precision in ("no", "bf16", "no"):
        trainer = build(tmp_path / precision, tok, steps=1, mixed_precision=precision)
        assert trainer.accelerator.mixed_precision == precision
        assert math.isfinite(trainer.train()["stats"]["ppo/loss/total"])


def _bad_step_inputs(trainer):
    return trainer.step([torch.tensor([3, 4])] * 8, [torch.tensor([5])] * 7, [0.0] * 8)


def _not_a_multiple(trainer):
    return trainer.step([torch.tensor([3, 4])] * 6, [torch.tensor([5])] * 6, [0.0] * 6)


@pytest.mark.parametrize(
    "make, field",
    [
        (lambda tmp, tok: _bad_step_inputs(build(tmp, tok)), "queries"),
        (lambda tmp, tok: _not_a_multiple(build(tmp, tok)), "queries"),
        (lambda tmp, tok: build(tmp, tok, teacher=False), "teacher"),
        (
            lambda tmp, tok: CustomPPOTrainer(
                student=StudentModel(make_lm(tok), tok),
                config=CustomPPOConfig(
                    kl_reference="initial_student", distill_coef=0.0, use_teacher_demos=False, output_dir=str(tmp)
                ),
            ).train(prompts(8)),
            "reward_model",
        ),
        (
            lambda tmp, tok: CustomPPOTrainer(
                student=StudentModel(make_lm(tok), tok),
                reward_model=ConstantReward(),
                config=CustomPPOConfig(kl_reference="initial_student", distill_coef=0.0, use_teacher_demos=False),
            ).train(),
            "train_dataset",
        ),
        (
            lambda tmp, tok: build(tmp, tok).train(__import__("datasets").Dataset.from_dict({"text": ["w1"]})),
            "prompt_column",
        ),
        (
            lambda tmp, tok: build(tmp, tok, optimizer_name="sgd", optimizer_kwargs={"betas": (0.9, 0.99)}),
            "optimizer_kwargs",
        ),
        (
            lambda tmp, tok: build(tmp, tok, scheduler_name="polynomial", scheduler_kwargs={"bogus": 1}),
            "scheduler_kwargs",
        ),
        (
            lambda tmp, tok: build(tmp, tok, resume_from_checkpoint=str(tmp / "missing")).train(),
            "resume_from_checkpoint",
        ),
        (lambda tmp, tok: CustomPPOTrainer(student=StudentModel(make_lm(tok), tok), config={"steps": 1}), "config"),
        (lambda tmp, tok: build(tmp, tok, max_new_tokens=62).train(["w1 w2 w3"] * 8), "max_new_tokens"),
        (
            lambda tmp, tok: CustomPPOTrainer(
                student=make_lm(tok),
                config=CustomPPOConfig(kl_reference="initial_student", distill_coef=0.0, use_teacher_demos=False),
            ),
            "tokenizer",
        ),
    ],
)
def test_bad_inputs_raise_a_config_error_naming_the_field(tmp_path, tok, make, field):
    with pytest.raises(ConfigError) as err:
        make(tmp_path, tok)
    assert err.value.field == field


def test_missing_tracker_package_is_named(tmp_path, tok):
    from accelerate.utils import is_tensorboard_available

    if is_tensorboard_available():
        assert build(tmp_path, tok, report_to="tensorboard").accelerator.log_with
    else:
        with pytest.raises(ConfigError, match="pip install tensorboard") as err:
            build(tmp_path, tok, report_to="tensorboard")
        assert err.value.field == "report_to"


# ---------------------------------------------------------------------- pipeline and CLI
def test_tnd_train_runs_from_local_model_folders_and_a_prompt_file(tmp_path, tok):
    from tnd_core.cli import main

    for name, model in (
        ("teacher", make_lm(tok, seed=5)),
        ("student", make_lm(tok, seed=1)),
        ("reward", make_classifier(tok)),
    ):
        model.save_pretrained(tmp_path / name)
        tok.save_pretrained(tmp_path / name)
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps({"question": p}) + "\n" for p in prompts(12)))
    args = [
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
        "question",
        "--steps",
        "2",
        "--batch_size",
        "4",
        "--mini_batch_size",
        "2",
        "--ppo_epochs",
        "1",
        "--max_new_tokens",
        "4",
        "--output_dir",
        str(tmp_path / "out"),
        "--save_steps",
        "0",
    ]
    assert main(args) == 0
    assert checkpoint.list_checkpoints(tmp_path / "out") == [tmp_path / "out/checkpoint-2"]
    assert len((tmp_path / "out/metrics.jsonl").read_text().splitlines()) == 2
    assert (
        main(args[:-4] + ["--output_dir", str(tmp_path / "out2"), "--prompt_column", "missing"]) == 2
    )  # a user error, not a traceback
