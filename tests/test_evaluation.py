"""Evaluation metrics: hand-computed values on fixed-distribution models, then real bundle models."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from tnd_core.data.tokenizer import build_tokenizer
from tnd_core.errors import ConfigError, TndError
from tnd_core.evaluation import (
    Evaluator,
    bundle_evaluator,
    distinct_n,
    grammaticality_rate,
    perplexity,
    sample_texts,
    teacher_student_kl,
    vocabulary_size,
    word_surprisals,
    words_acquired,
)


class FixedDistribution(nn.Module):
    """Predicts the same next-token distribution at every position, whatever the context."""

    def __init__(self, probabilities: dict[int, float], vocab_size: int):
        super().__init__()
        logits = torch.full((vocab_size,), -1e9)
        for token, p in probabilities.items():
            logits[token] = math.log(p)
        self.register_buffer("row", logits)
        self.anchor = nn.Parameter(torch.zeros(()))

    def forward(self, input_ids, attention_mask=None):
        return type("Output", (), {"logits": self.row.expand(*input_ids.shape, -1).clone()})()


@pytest.fixture(scope="module")
def ab_tokenizer():
    return build_tokenizer(["a", "b"])  # ids: <pad> 0, <s> 1, </s> 2, <unk> 3, a 4, b 5


def test_distinct_n_and_vocabulary_by_hand():
    texts = ["a b a b", "a b c"]
    assert distinct_n(texts, 1) == pytest.approx(3 / 7)
    # bigrams: ab ba ab | ab bc -> 3 unique of 5
    assert distinct_n(texts, 2) == pytest.approx(3 / 5)
    assert distinct_n(["a"], 2) == 0.0
    assert vocabulary_size(texts) == 3


def test_perplexity_by_hand(ab_tokenizer):
    # p(a) = 1/2, p(b) = 1/4, p(</s>) = 1/4 everywhere; "a b" predicts a, b, </s>
    model = FixedDistribution({4: 0.5, 5: 0.25, 2: 0.25}, len(ab_tokenizer))
    assert perplexity(model, ["a b"], ab_tokenizer) == pytest.approx((2 * 4 * 4) ** (1 / 3), rel=1e-5)
    # a batch with padding gives the per-token mean over both sentences: a, </s> | a, b, </s>
    assert perplexity(model, ["a", "a b"], ab_tokenizer) == pytest.approx((2 * 4 * 2 * 4 * 4) ** (1 / 5), rel=1e-5)


def test_uniform_model_has_perplexity_equal_to_the_vocabulary(ab_tokenizer):
    vocab = len(ab_tokenizer)
    model = FixedDistribution({i: 1 / vocab for i in range(vocab)}, vocab)
    assert perplexity(model, ["a b a", "b"], ab_tokenizer) == pytest.approx(vocab, rel=1e-5)


def test_word_surprisal_and_words_acquired_by_hand(ab_tokenizer):
    model = FixedDistribution({4: 0.5, 5: 0.25, 2: 0.25}, len(ab_tokenizer))
    surprisals = word_surprisals(model, ["a b", "b a a"], ab_tokenizer)
    assert surprisals == {"a": pytest.approx(1.0, rel=1e-5), "b": pytest.approx(2.0, rel=1e-5)}
    assert words_acquired(surprisals, threshold=1.5) == 1
    assert words_acquired(surprisals, threshold=2.5) == 2
    assert words_acquired(surprisals, threshold=0.5) == 0
    with pytest.raises(ConfigError, match="acquisition_threshold"):
        words_acquired(surprisals, threshold=0)


def test_word_surprisal_sums_the_pieces_of_a_word_split_into_several_tokens(ab_tokenizer):
    from tokenizers import Regex, Tokenizer, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = ab_tokenizer.get_vocab()
    backend = Tokenizer(WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex("."), "isolated")]
    )
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    characters = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    model = FixedDistribution({4: 0.5, 5: 0.25, 2: 0.25}, len(ab_tokenizer))
    surprisals = word_surprisals(model, ["ab a", "bb"], characters)
    assert surprisals == {
        "a": pytest.approx(1.0, rel=1e-5),
        "ab": pytest.approx(3.0, rel=1e-5),
        "bb": pytest.approx(4.0, rel=1e-5),
    }


def test_teacher_student_kl_by_hand(ab_tokenizer):
    vocab = len(ab_tokenizer)
    teacher = FixedDistribution({4: 0.5, 5: 0.5}, vocab)
    uniform = FixedDistribution({i: 1 / vocab for i in range(vocab)}, vocab)
    # KL(teacher || uniform) = sum 0.5 * ln(0.5 * 6) = ln 3 at every position
    assert teacher_student_kl(teacher, uniform, ["a b", "b"], ab_tokenizer) == pytest.approx(math.log(3), rel=1e-5)
    assert teacher_student_kl(teacher, teacher, ["a b"], ab_tokenizer) == pytest.approx(0.0, abs=1e-6)
    wider = FixedDistribution({0: 1.0}, vocab + 1)
    with pytest.raises(TndError, match="shared vocabulary"):
        teacher_student_kl(wider, uniform, ["a"], ab_tokenizer)


def test_a_model_without_a_tokenizer_or_generate_is_a_user_error(ab_tokenizer):
    model = FixedDistribution({4: 1.0}, len(ab_tokenizer))
    with pytest.raises(TndError, match="no tokenizer"):
        perplexity(model, ["a"])
    with pytest.raises(TndError, match="cannot generate"):
        sample_texts(model, ["a"], ab_tokenizer)


def test_grammaticality_rate_counts_accepted_texts():
    assert grammaticality_rate(["the dog runs .", "dog the runs .", "where is it ?", ""]) == 0.5
    assert grammaticality_rate([]) == 0.0
    assert grammaticality_rate(["x", "y"], recognizer=lambda t: t == "x") == 0.5


# ---------------------------------------------------------------------- on the tiny bundle
@pytest.fixture(scope="module")
def bundle_models(tiny_bundle):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_bundle.tokenizer)
    teacher = AutoModelForCausalLM.from_pretrained(tiny_bundle.teacher)
    student = AutoModelForCausalLM.from_pretrained(tiny_bundle.student)
    return teacher, student, tokenizer


def test_sampling_continues_prompts_stops_at_eos_and_leaves_the_global_rng_alone(bundle_models):
    teacher, _, tokenizer = bundle_models
    before = torch.get_rng_state()
    texts = sample_texts(teacher, ["the dog", "where"], tokenizer, seed=3)
    assert torch.equal(before, torch.get_rng_state())
    assert texts == sample_texts(teacher, ["the dog", "where"], tokenizer, seed=3)
    assert texts[0].startswith("the dog") and texts[1].startswith("where")
    unconditional = sample_texts(teacher, None, tokenizer, n=40, seed=0)
    assert len(unconditional) == 40
    assert all("</s>" not in t and "<pad>" not in t for t in unconditional)
    assert sum(t.split()[-1] in {".", "?", "!"} for t in unconditional if t) > 30


def test_teacher_beats_the_from_scratch_student_on_every_metric(tiny_bundle, bundle_models):
    teacher, student, tokenizer = bundle_models
    evaluator = bundle_evaluator(tiny_bundle, tokenizer=tokenizer, num_samples=48)
    of_teacher = evaluator(teacher, teacher)
    of_student = evaluator(student, teacher)
    expected = {
        "eval/perplexity",
        "eval/word_surprisal",
        "eval/words_acquired",
        "eval/grammaticality",
        "eval/distinct_1",
        "eval/distinct_2",
        "eval/vocab_size",
        "eval/teacher_student_kl",
    }
    assert set(of_teacher) == set(of_student) == expected
    assert of_teacher["eval/teacher_student_kl"] == pytest.approx(0.0, abs=1e-5)
    assert of_student["eval/teacher_student_kl"] > 1.0
    assert of_teacher["eval/grammaticality"] > 0.5 > of_student["eval/grammaticality"]
    assert of_teacher["eval/perplexity"] < 20 < len(tokenizer) * 0.5 < of_student["eval/perplexity"]
    assert of_teacher["eval/words_acquired"] > 50 > of_student["eval/words_acquired"]
    assert len(evaluator.last_samples) == 48 and evaluator.last_surprisals


def test_wrappers_and_plain_models_give_the_same_numbers(tiny_bundle, bundle_models):
    from tnd_core.models import StudentModel, TeacherModel

    teacher, student, tokenizer = bundle_models
    evaluator = bundle_evaluator(tiny_bundle, num_samples=16, tokenizer=tokenizer)
    plain = evaluator(student, teacher)
    wrapped = bundle_evaluator(tiny_bundle, num_samples=16)(
        StudentModel(student, tokenizer), TeacherModel(teacher, tokenizer)
    )
    assert wrapped == pytest.approx(plain, rel=1e-5)


def test_evaluator_rejects_bad_settings():
    with pytest.raises(ConfigError, match="eval_texts"):
        Evaluator([])
    with pytest.raises(ConfigError, match="acquisition_threshold"):
        Evaluator(["the dog runs ."], acquisition_threshold=-1)
    with pytest.raises(ConfigError, match="num_samples"):
        Evaluator(["the dog runs ."], num_samples=0)


def test_the_trainer_emits_eval_events_every_eval_steps(tiny_bundle, tmp_path):
    from tnd_core.config import CustomPPOConfig
    from tnd_core.events import EvalEvent
    from tnd_core.pipeline import build_trainer

    config = CustomPPOConfig.load(tiny_bundle.config).replace(
        steps=2, eval_steps=1, batch_size=4, mini_batch_size=4, ppo_epochs=1, save_steps=0, output_dir=str(tmp_path)
    )
    events = []
    trainer = build_trainer(config, callbacks=[events.append])
    trainer.train()
    evals = [e for e in events if isinstance(e, EvalEvent)]
    assert [e.step for e in evals] == [1, 2]
    assert {"eval/grammaticality", "eval/words_acquired", "eval/teacher_student_kl", "eval/perplexity"} <= set(
        evals[0].metrics
    )
