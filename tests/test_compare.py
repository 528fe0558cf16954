"""Compare (tnd_core.evaluation.compare): same settings and seed for both models, reward of each text,
per-token KL(teacher || student); the app's highlight scaling."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from tnd_tiny import make_classifier, make_lm, make_tokenizer

from app.compare_tab import highlight
from tnd_core.config import CustomPPOConfig
from tnd_core.errors import ConfigError
from tnd_core.evaluation.compare import compare, per_token_kl
from tnd_core.models import RewardModel, StudentModel, TeacherModel


@pytest.fixture(scope="module")
def models():
    tok = make_tokenizer()
    student = StudentModel(make_lm(tok, seed=1), tok)
    teacher = TeacherModel(make_lm(tok, seed=2, initializer_range=0.5), tok)
    reward = RewardModel(make_classifier(tok, seed=3), tok)
    return tok, teacher, student, reward


CONFIG = CustomPPOConfig(max_new_tokens=8, temperature=1.0, top_k=0, top_p=1.0, do_sample=True)


def test_identical_models_give_identical_text_and_zero_kl(models):
    tok, _, student, reward = models
    twin = TeacherModel(copy.deepcopy(student.pretrained_model), tok)
    result = compare(twin, student, reward, "w1 w2 w3", CONFIG, seed=7)
    assert result.teacher.text == result.student.text  # same weights, same settings, same seed
    assert result.teacher.score == pytest.approx(result.student.score)
    assert result.mean_kl == pytest.approx(0.0, abs=1e-6)
    assert len(result.tokens) == len(tok(result.student.text, add_special_tokens=False).input_ids)


def test_per_token_kl_matches_a_hand_computation(models):
    tok, teacher, student, _ = models
    prompt = tok("w1 w2", return_tensors="pt").input_ids
    response = tok("w3 w4 w5", return_tensors="pt").input_ids[0]
    kl = per_token_kl(teacher, student, prompt, response)
    full = torch.cat([prompt[0], response])[None]
    with torch.no_grad():
        p = F.softmax(teacher.model(full).logits[0], -1)
        q = F.softmax(student.pretrained_model(full).logits[0], -1)
    # the distribution at position i predicts token i + 1: response token j comes from position 1 + j
    expected = [float((p[i] * (p[i].log() - q[i].log())).sum()) for i in (1, 2, 3)]
    assert kl.tolist() == pytest.approx(expected, rel=1e-4)
    assert all(v > 0 for v in expected)


def test_scores_are_the_reward_models_score_of_prompt_plus_text(models):
    tok, teacher, student, reward = models
    result = compare(teacher, student, reward, "w4 w5", CONFIG, seed=3)
    expected = reward.score_texts(
        [f"w4 w5 {result.teacher.text}".strip(), f"w4 w5 {result.student.text}".strip()]
    ).tolist()
    assert [result.teacher.score, result.student.score] == pytest.approx(expected)
    shown = [piece for piece, _ in result.tokens if piece.strip() not in tok.all_special_tokens]
    assert "".join(shown).strip() == result.student.text.strip()  # special tokens appear by name, the rest as text


def test_seed_decides_and_callers_random_stream_is_untouched(models):
    _, teacher, student, reward = models
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    first = compare(teacher, student, reward, "w1", CONFIG, seed=5)
    assert torch.equal(torch.rand(3), expected_next)
    again = compare(teacher, student, reward, "w1", CONFIG, seed=5)
    assert (again.teacher.text, again.student.text) == (first.teacher.text, first.student.text)


def test_empty_prompt_is_rejected_by_name(models):
    _, teacher, student, reward = models
    with pytest.raises(ConfigError, match="prompt"):
        compare(teacher, student, reward, "   ", CONFIG, seed=0)


def test_highlight_scales_to_unit_range():
    assert highlight([("a", 0.5), (" b", 2.0), (" c", 0.0)]) == [("a", 0.25), (" b", 1.0), (" c", 0.0)]
    assert highlight([("a", 0.0)]) == [("a", 0.0)]
