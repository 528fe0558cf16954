"""Model wrappers: from_pretrained round trips through local folders, freezing, protocols, loading errors."""

from __future__ import annotations

import pytest
import torch
from tnd_tiny import ConstantReward, make_classifier, make_lm, one_torch_thread  # noqa: F401

from tnd_core.errors import ConfigError, TndError
from tnd_core.models import (
    RewardLike,
    RewardModel,
    StudentModel,
    TeacherLike,
    TeacherModel,
    as_reward_model,
    as_student,
    as_teacher,
    load_reward_model,
    load_student,
    load_teacher,
)


def _ids(tok, text):
    enc = tok([text], return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def test_student_round_trip_keeps_policy_and_value_head(tok, tmp_path):
    student = StudentModel(make_lm(tok, seed=1), tok)
    assert student.v_head.summary.weight.abs().max() < 0.1  # small init
    with torch.no_grad():
        student.v_head.summary.bias.fill_(0.25)
    student.save_pretrained(tmp_path / "s")
    loaded = load_student(str(tmp_path / "s"))
    ids, mask = _ids(tok, "w1 w2 w3")
    logits, values = student(ids, mask)
    logits2, values2 = loaded(ids, mask)
    assert torch.allclose(logits, logits2) and torch.allclose(values, values2)
    assert loaded.tokenizer.get_vocab() == tok.get_vocab()


def test_student_has_no_dropout_and_keeps_last_logits(tok):
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(
        GPT2Config(vocab_size=len(tok), n_positions=32, n_embd=16, n_layer=1, n_head=2, resid_pdrop=0.5)
    )
    student = StudentModel(model, tok).train()
    assert all(m.p == 0 for m in student.modules() if isinstance(m, torch.nn.Dropout))
    ids, mask = _ids(tok, "w1 w2 w3 w4")
    full_logits, full_values = student(ids, mask)
    last_logits, last_values = student(ids, mask, logits_to_keep=2)
    assert torch.allclose(full_logits[:, -2:], last_logits, atol=1e-6) and torch.allclose(
        full_values[:, -2:], last_values, atol=1e-6
    )
    assert torch.allclose(student.get_student_logits(ids, mask), full_logits, atol=1e-6)


def test_teacher_loads_frozen_and_stays_in_eval(tok, tmp_path):
    lm = make_lm(tok, seed=2)
    lm.save_pretrained(tmp_path / "t")
    tok.save_pretrained(tmp_path / "t")
    teacher = TeacherModel.from_pretrained(tmp_path / "t")
    assert not any(p.requires_grad for p in teacher.parameters())
    teacher.train()
    assert not teacher.model.training
    ids, mask = _ids(tok, "w3 w4")
    assert torch.allclose(
        teacher.get_teacher_logits(ids, mask), lm(input_ids=ids, attention_mask=mask).logits, atol=1e-6
    )
    out = teacher.generate(ids, mask, max_new_tokens=3, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[1] <= ids.shape[1] + 3


def test_reward_model_scores_text_independent_of_batch_padding(tok, tmp_path):
    make_classifier(tok, seed=3).save_pretrained(tmp_path / "r")
    tok.save_pretrained(tmp_path / "r")
    reward = load_reward_model(str(tmp_path / "r"))
    alone = reward.score_texts(["w1 w2"])
    batch = reward.score_texts(["w1 w2", "w3 w4 w5 w6 w7 w8"])
    assert batch.shape == (2,) and torch.allclose(alone[0], batch[0], atol=1e-5)
    assert not any(p.requires_grad for p in reward.parameters())


def test_reward_model_must_have_one_output(tok):
    from transformers import GPT2Config, GPT2ForSequenceClassification

    two = GPT2ForSequenceClassification(GPT2Config(vocab_size=len(tok), n_embd=16, n_layer=1, n_head=2, num_labels=2))
    with pytest.raises(ConfigError, match="num_labels=1"):
        RewardModel(two, tok)


@pytest.mark.parametrize(
    "loader, field",
    [
        (load_teacher, "teacher_name_or_path"),
        (load_student, "student_name_or_path"),
        (load_reward_model, "reward_model_name_or_path"),
    ],
)
def test_missing_model_names_the_field(loader, field, tmp_path):
    with pytest.raises(ConfigError) as err:
        loader(str(tmp_path / "nowhere"))
    assert err.value.field == field and "local model folder" in str(err.value)


@pytest.mark.parametrize(
    "loader, make", [(load_teacher, make_lm), (load_student, make_lm), (load_reward_model, make_classifier)]
)
def test_a_model_folder_without_a_tokenizer_loads_with_a_separate_tokenizer_folder(loader, make, tok, tmp_path):
    make(tok).save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "tokenizer")
    loaded = loader(tmp_path / "model", tmp_path / "tokenizer")
    assert loaded.tokenizer.get_vocab() == tok.get_vocab()


def test_protocols_accept_duck_typed_objects(tok):
    class RuleReward:
        def score_texts(self, texts):
            return torch.ones(len(texts))

    class LookupTeacher:
        tokenizer = tok

        def get_teacher_logits(self, input_ids, attention_mask, position_ids=None, logits_to_keep=0):
            return torch.zeros(*input_ids.shape, len(tok))

        def generate(self, input_ids, attention_mask, **kwargs):
            return input_ids

    assert isinstance(RuleReward(), RewardLike) and as_reward_model(RuleReward()).score_texts(["a"]).tolist() == [1.0]
    teacher = LookupTeacher()
    assert isinstance(teacher, TeacherLike) and as_teacher(teacher) is teacher
    assert isinstance(as_reward_model(ConstantReward()), RewardLike)


def test_plain_transformers_models_are_wrapped(tok):
    assert isinstance(as_student(make_lm(tok), tok), StudentModel)
    assert isinstance(as_teacher(make_lm(tok), tok), TeacherModel)
    assert isinstance(as_reward_model(make_classifier(tok), tok), RewardModel)


@pytest.mark.parametrize(
    "wrap, name", [(as_teacher, "teacher"), (as_student, "student"), (as_reward_model, "reward_model")]
)
def test_objects_of_the_wrong_kind_are_rejected_by_name(wrap, name):
    with pytest.raises(TndError, match=f"^{name}:"):
        wrap(object())
