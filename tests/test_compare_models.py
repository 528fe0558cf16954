"""Compare of any two models (tnd_core.evaluation.compare.compare_models): several samples per side with
shared seeds, reward scores, per-token KL(other || this side), the summary; a checkpoint's student."""

from __future__ import annotations

import copy
import json
import shutil
import statistics
from pathlib import Path

import pytest
import torch
from tnd_tiny import make_classifier, make_lm, make_tokenizer

from tnd_core.config import CustomPPOConfig
from tnd_core.errors import ConfigError
from tnd_core.evaluation.compare import compare_models, load_checkpoint_student, per_token_kl
from tnd_core.models import RewardModel, StudentModel, TeacherModel

CONFIG = CustomPPOConfig(max_new_tokens=8, temperature=1.0, top_k=0, top_p=1.0, do_sample=True)


@pytest.fixture(scope="module")
def models():
    tok = make_tokenizer()
    student = StudentModel(make_lm(tok, seed=1), tok)
    teacher = TeacherModel(make_lm(tok, seed=2, initializer_range=0.5), tok)
    reward = RewardModel(make_classifier(tok, seed=3), tok)
    return tok, teacher, student, reward


def texts(side):
    return [s.text for s in side.samples]


def test_same_seed_gives_the_same_samples_and_sample_i_uses_seed_plus_i(models):
    _, teacher, student, reward = models
    first = compare_models(teacher, student, reward, "w1 w2", CONFIG, seed=11, samples=3)
    again = compare_models(teacher, student, reward, "w1 w2", CONFIG, seed=11, samples=3)
    assert (texts(first.left), texts(first.right)) == (texts(again.left), texts(again.right))
    assert [s.seed for s in first.left.samples] == [s.seed for s in first.right.samples] == [11, 12, 13]
    # sample i does not depend on how many samples were asked for: it is the seed + i sample
    shifted = compare_models(teacher, student, reward, "w1 w2", CONFIG, seed=12, samples=2)
    assert texts(shifted.right) == texts(first.right)[1:] and texts(shifted.left) == texts(first.left)[1:]
    assert len(set(texts(first.right))) > 1, "different seeds should give different samples of a random model"


def test_the_same_model_on_both_sides_has_zero_divergence(models):
    tok, _, student, reward = models
    twin = StudentModel(copy.deepcopy(student.pretrained_model), tok)
    result = compare_models(student, twin, reward, "w3", CONFIG, seed=0, samples=4)
    assert texts(result.left) == texts(result.right)
    assert result.left.mean_kl == pytest.approx(0.0, abs=1e-6)
    assert result.right.mean_kl == pytest.approx(0.0, abs=1e-6)
    assert result.left.mean_score == pytest.approx(result.right.mean_score)


def test_divergence_is_kl_of_the_other_side_on_this_sides_tokens(models):
    tok, teacher, student, reward = models
    result = compare_models(teacher, student, reward, "w4 w5", CONFIG, seed=2, samples=2)
    prompt = tok("w4 w5", return_tensors="pt").input_ids
    for side, reference, model in ((result.right, teacher, student), (result.left, student, teacher)):
        assert any(s.ids for s in side.samples)
        for sample in (s for s in side.samples if s.ids):  # a sample can end at once (its first token is eos)
            assert tok.decode(sample.ids, skip_special_tokens=True) == sample.text
            # KL(teacher || student) on the student's tokens, KL(student || teacher) on the teacher's
            expected = per_token_kl(reference, model, prompt, torch.tensor(sample.ids)).tolist()
            assert [kl for _, kl in sample.tokens] == pytest.approx(expected, rel=1e-4)
            assert sample.mean_kl == pytest.approx(statistics.fmean(expected), rel=1e-4)
    assert result.right.mean_kl > 0.01 and result.left.mean_kl > 0.01


def test_scores_and_summary(models):
    _, teacher, student, reward = models
    result = compare_models(teacher, student, reward, "w6", CONFIG, seed=5, samples=4)
    for side in (result.left, result.right):
        expected = reward.score_texts([f"w6 {t}".strip() for t in texts(side)]).tolist()
        scores = [s.score for s in side.samples]
        assert scores == pytest.approx(expected, rel=1e-4, abs=1e-5)
        assert side.mean_score == pytest.approx(statistics.fmean(scores))
        assert side.score_std == pytest.approx(statistics.stdev(scores))
        tokens = [kl for s in side.samples for _, kl in s.tokens]
        assert side.mean_kl == pytest.approx(statistics.fmean(tokens))
    single = compare_models(teacher, student, reward, "w6", CONFIG, seed=5, samples=1)
    assert single.left.score_std == 0.0


@pytest.mark.parametrize("samples", [0, -2, 1.5])
def test_a_sample_count_below_one_is_refused_by_name(models, samples):
    _, teacher, student, reward = models
    with pytest.raises(ConfigError, match="samples"):
        compare_models(teacher, student, reward, "w1", CONFIG, seed=0, samples=samples)


def test_a_checkpoints_student_loads_with_its_weights(models, tmp_path):
    tok, _, student, _ = models
    checkpoint = tmp_path / "checkpoint-3"
    (checkpoint / "student").mkdir(parents=True)
    with pytest.raises(ConfigError, match="checkpoint-3"):
        load_checkpoint_student(checkpoint)  # no trainer state yet: not a complete checkpoint
    student.save_pretrained(checkpoint / "student")
    (checkpoint / "trainer_state.json").write_text(json.dumps({"step": 3}))
    loaded = load_checkpoint_student(checkpoint)
    for name, value in student.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
    assert loaded.tokenizer.get_vocab() == tok.get_vocab()


# ---------------------------------------------------------------------- the app: pickers, checkpoints, limits
RUN = "tiny-run"


@pytest.fixture(scope="module")
def app_ctx(tmp_path_factory):
    """An app context with its models loaded and, under its runs root, a tiny run with checkpoints 1-3."""
    from tnd_tiny import TargetWordReward

    from app.context import AppContext, BundleManager, LoadedModels
    from app.hosting import HostPolicy
    from app.runner import Runner
    from app.services import CHECKPOINT_STUDENTS, model_options
    from tnd_core.trainers import CustomPPOTrainer

    root = tmp_path_factory.mktemp("compare-app")
    tok = make_tokenizer()
    teacher = TeacherModel(make_lm(tok, seed=5, initializer_range=0.3), tok)
    run_config = CustomPPOConfig(
        learning_rate=3e-3,
        batch_size=8,
        mini_batch_size=4,
        ppo_epochs=2,
        max_new_tokens=4,
        steps=3,
        save_steps=1,
        save_total_limit=0,
        output_dir=str(root / "runs" / RUN),
        seed=0,
    )
    trainer = CustomPPOTrainer(
        teacher=teacher,
        student=StudentModel(make_lm(tok, seed=1), tok),
        reward_model=TargetWordReward("w15", 4),
        config=run_config,
        train_dataset=[f"w{i % 10} w{(3 * i) % 10}" for i in range(24)],
    )
    trainer.train()
    ctx = AppContext(runner=Runner(), bundle=BundleManager(), policy=HostPolicy(data_root=root, runs_dir=root / "runs"))
    initial_student = StudentModel(make_lm(tok, seed=1), tok)  # the run's student before training
    reward = RewardModel(make_classifier(tok, seed=3), tok)
    ctx.models = LoadedModels(teacher, initial_student, reward, options=model_options(CONFIG))
    CHECKPOINT_STUDENTS.clear()
    yield ctx
    CHECKPOINT_STUDENTS.clear()


def hosted(ctx):
    from dataclasses import replace

    return replace(ctx, policy=replace(ctx.policy, hosted=True))


def test_the_pickers_offer_the_teacher_the_student_and_each_checkpoint(app_ctx):
    from app.services import compare_choices

    assert compare_choices(app_ctx, "anyone") == [
        "teacher",
        "student",
        f"{RUN}/checkpoint-1",
        f"{RUN}/checkpoint-2",
        f"{RUN}/checkpoint-3",
    ]


def test_a_checkpoint_of_a_tiny_run_loads_and_differs_from_the_initial_student(app_ctx):
    from app.services import CHECKPOINT_STUDENTS, run_compare_models

    result, labels = run_compare_models(app_ctx, "w1 w2", CONFIG, 0, "student", f"{RUN}/checkpoint-3", samples=3)
    assert labels == {"left": "student loaded from `bundle`", "right": f"checkpoint-3 of run {RUN}"}
    assert len(result.left.samples) == len(result.right.samples) == 3
    [held] = CHECKPOINT_STUDENTS.folders()
    assert held.endswith(f"{RUN}/checkpoint-3")
    trained, loaded_now = CHECKPOINT_STUDENTS.get(Path(held), None, "cpu")
    assert not loaded_now  # the one Compare loaded, kept
    initial = dict(app_ctx.models.student.named_parameters())
    changed = [n for n, p in trained.named_parameters() if not torch.equal(p, initial[n])]
    assert changed, "three PPO steps changed no weight"
    assert result.right.mean_kl > 1e-6 and result.left.mean_kl > 1e-6


def test_the_same_checkpoint_on_both_sides_gives_the_same_samples_and_zero_divergence(app_ctx):
    from app.services import run_compare_models

    choice = f"{RUN}/checkpoint-2"
    first, _ = run_compare_models(app_ctx, "w3", CONFIG, 9, choice, choice, samples=4)
    assert texts(first.left) == texts(first.right)
    assert first.left.mean_kl == pytest.approx(0.0, abs=1e-6) and first.right.mean_kl == pytest.approx(0.0, abs=1e-6)
    again, _ = run_compare_models(app_ctx, "w3", CONFIG, 9, choice, "teacher", samples=4)
    assert texts(again.left) == texts(first.left)  # the same seeds give the same samples on another call


def test_at_most_two_checkpoint_students_stay_loaded(app_ctx):
    from app.services import CHECKPOINT_STUDENTS, run_compare_models

    for left, right in (("1", "2"), ("3", "3"), ("1", "1")):
        run_compare_models(app_ctx, "w1", CONFIG, 0, f"{RUN}/checkpoint-{left}", f"{RUN}/checkpoint-{right}")
    held = CHECKPOINT_STUDENTS.folders()
    assert [Path(folder).name for folder in held] == ["checkpoint-3", "checkpoint-1"]  # least recently used first


@pytest.mark.parametrize(
    "choice",
    [
        f"../{RUN}/checkpoint-1",
        f"{RUN}/checkpoint-99",
        f"{RUN}/../../checkpoint-1",
        f"{RUN}/checkpoint-1/..",
        "/etc/checkpoint-1",
        "no-such-run/checkpoint-1",
        f"{RUN}/linked-1",
        "",
    ],
)
def test_names_outside_the_runs_checkpoints_are_refused_alike(app_ctx, choice):
    from app.services import run_compare_models

    with pytest.raises(ConfigError) as refused:
        run_compare_models(app_ctx, "w1", CONFIG, 0, "teacher", choice)
    assert refused.value.field == "right"
    assert "of one of the runs you may compare" in str(refused.value)


def test_a_checkpoint_linked_from_outside_the_run_is_refused(app_ctx, tmp_path):
    from app.services import run_compare_models

    outside = tmp_path / "elsewhere"
    shutil.copytree(app_ctx.policy.runs_root / RUN / "checkpoint-1", outside)
    link = app_ctx.policy.runs_root / RUN / "checkpoint-7"
    link.symlink_to(outside, target_is_directory=True)
    try:
        with pytest.raises(ConfigError, match="of one of the runs you may compare"):
            run_compare_models(app_ctx, "w1", CONFIG, 0, f"{RUN}/checkpoint-7", "teacher")
    finally:
        link.unlink()


def test_hosted_a_session_compares_its_own_runs_only(app_ctx):
    from app.hosting import OWNER_FILE, session_key
    from app.services import compare_choices, run_compare_models

    ctx = hosted(app_ctx)
    marker = ctx.policy.runs_root / RUN / OWNER_FILE
    marker.write_text(session_key("alice"))
    try:
        assert compare_choices(ctx, "bob") == ["teacher", "student"]
        with pytest.raises(ConfigError) as refused:
            run_compare_models(ctx, "w1", CONFIG, 0, f"{RUN}/checkpoint-1", "student", owner="bob")
        assert refused.value.field == "left" and "of one of the runs you may compare" in str(refused.value)
        with pytest.raises(ConfigError, match="samples"):
            run_compare_models(ctx, "w1", CONFIG, 0, samples=5, owner="alice")  # over the hosted limit of 4
        result, labels = run_compare_models(ctx, "w1", CONFIG, 0, f"{RUN}/checkpoint-1", "student", 2, owner="alice")
        assert labels["left"] == f"checkpoint-1 of run {RUN}" and len(result.left.samples) == 2
    finally:
        marker.unlink()


def test_compare_calls_count_against_the_sessions_limit(app_ctx):
    from dataclasses import replace

    from app.services import run_compare_models
    from app.throttle import RateLimiter, TooManyRequests

    ctx = replace(app_ctx, compare_limiter=RateLimiter(1, what="Compare calls"))
    run_compare_models(ctx, "w1", CONFIG, 0, session="s1")
    with pytest.raises(TooManyRequests, match="Too many Compare calls"):
        run_compare_models(ctx, "w1", CONFIG, 0, f"{RUN}/checkpoint-2", session="s1")
    run_compare_models(ctx, "w1", CONFIG, 0, session="s2")


def test_the_api_answer_names_each_side_and_its_samples(app_ctx):
    from app.api import comparison_answer
    from app.services import run_compare_models

    result, labels = run_compare_models(app_ctx, "w1", CONFIG, 4, "teacher", "student", samples=2)
    answer = comparison_answer(result, labels)
    assert answer["left"]["model"] == "teacher" and answer["right"]["kl"] == "KL(left || right)"
    assert [s["seed"] for s in answer["right"]["samples"]] == [4, 5]
    assert answer["right"]["mean_score"] == pytest.approx(result.right.mean_score)
    assert json.loads(json.dumps(answer)) == answer
