"""Compare of any two models (tnd_core.evaluation.compare.compare_models): several samples per side with
shared seeds, reward scores, per-token KL(other || this side), the summary; a checkpoint's student."""

from __future__ import annotations

import copy
import json
import statistics

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
