"""The baby language: generator, exact recognizer, perturbations, tokenizer."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from tnd_core.data.language import LEXICON, NOUNS, generate_corpus, sentence_prefixes, vocabulary, zipf_weights
from tnd_core.data.perturb import PERTURBATIONS, break_agreement, perturb
from tnd_core.data.recognizer import is_grammatical
from tnd_core.errors import ConfigError

GRAMMATICAL = [
    "the dog runs .",
    "the dogs run .",
    "a dog runs .",
    "an apple falls .",
    "an old dog sleeps .",
    "these dogs see an egg .",
    "this cat likes the big balls .",
    "the children sleep in the house .",
    "the mice hide under my bed .",
    "sam hugs her .",
    "they can swim now .",
    "she can see the moon .",
    "does the dog run ?",
    "do the dogs run ?",
    "do you like it ?",
    "is the ball red ?",
    "are the balls red ?",
    "where is the cat ?",
    "where are my shoes ?",
    "what does the baby want ?",
    "what do the babies want ?",
    "who runs ?",
    "who sees the dog ?",
    "hug the baby !",
    "please eat the apple !",
    "The Dog Runs.",
]

UNGRAMMATICAL = [
    "",
    "the dog run .",
    "the dogs runs .",
    "a dogs run .",
    "a apple falls .",
    "an dog runs .",
    "these dog runs .",
    "this dogs run .",
    "does the dogs run ?",
    "do the dog run ?",
    "does the dog runs ?",
    "is the balls red ?",
    "are the ball red ?",
    "where is the cats ?",
    "who run ?",
    "she can sees the moon .",
    "he run .",
    "they runs .",
    "the dog runs",
    "dog the runs .",
    "the the dog runs .",
    "the dog runs . the cat runs .",
    "the dog runs ?",
    "the dog sees .",
    "the dog sleeps the cat .",
    "the zorp runs .",
    "hugs the baby !",
    "the dog runs , .",
]


@pytest.mark.parametrize("sentence", GRAMMATICAL)
def test_recognizer_accepts_grammatical_sentences(sentence):
    assert is_grammatical(sentence)


@pytest.mark.parametrize("sentence", UNGRAMMATICAL)
def test_recognizer_rejects_ungrammatical_sentences(sentence):
    assert not is_grammatical(sentence)


def test_generator_is_deterministic_per_seed_and_only_writes_grammatical_sentences():
    corpus = generate_corpus(3000, seed=11)
    assert corpus == generate_corpus(3000, seed=11)
    assert corpus != generate_corpus(3000, seed=12)
    assert all(is_grammatical(s) for s in corpus)
    kinds = Counter(s.split()[-1] for s in corpus)
    assert set(kinds) == {".", "?", "!"}  # statements, questions and imperatives
    assert min(kinds.values()) > 300


def test_vocabulary_has_a_few_hundred_words_and_every_form_is_used():
    words = vocabulary()
    assert 300 <= len(words) <= 600
    assert len(words) == len(set(words))
    used = {w for s in generate_corpus(20000, seed=0) for w in s.split()}
    assert {"dog", "dogs", "runs", "run", "an", "?", "!"} <= used
    assert len(used) > 0.9 * len(words)


def test_word_frequencies_follow_a_zipf_like_law():
    counts = Counter(w for s in generate_corpus(20000, seed=0) for w in s.split())
    singular_nouns = LEXICON["N_sg"]
    # within a class, frequency falls with rank roughly as 1/rank: rank 1 vs rank 10 is ~10x
    ratio = counts[singular_nouns[0]] / counts[singular_nouns[9]]
    assert 6 < ratio < 16
    rare = [w for w in singular_nouns[-20:]]
    assert all(counts[w] < counts[singular_nouns[0]] / 50 for w in rare)
    assert zipf_weights(3) == [1.0, 0.5, pytest.approx(1 / 3)]


def test_prefixes_are_one_to_three_words_of_the_sentence():
    sentences = generate_corpus(200, seed=3)
    prefixes = sentence_prefixes(sentences, seed=0)
    assert len(prefixes) == len(sentences)
    for sentence, prefix in zip(sentences, prefixes):
        assert sentence.startswith(prefix + " ")
        assert 1 <= len(prefix.split()) <= 3
        assert prefix.split()[-1] not in {".", "?", "!"}


@pytest.mark.parametrize("kind", PERTURBATIONS)
def test_each_perturbation_makes_ungrammatical_variants(kind):
    rng = random.Random(0)
    made = 0
    for sentence in generate_corpus(200, seed=5):
        result = perturb(sentence, rng, kind)
        if result is not None:
            variant, used = result
            assert used == kind and variant != sentence and not is_grammatical(variant)
            made += 1
    assert made > 150


def test_perturbation_kinds_do_what_they_say():
    rng = random.Random(1)
    words = "the big dog sees the cats .".split()
    shuffled = perturb(" ".join(words), rng, "shuffle")[0].split()
    assert sorted(shuffled) == sorted(words) and shuffled != words
    dropped = perturb(" ".join(words), rng, "drop")[0].split()
    assert len(dropped) == len(words) - 1
    repeated = perturb(" ".join(words), rng, "repeat")[0].split()
    assert len(repeated) == len(words) + 1 and any(a == b for a, b in zip(repeated, repeated[1:]))
    broken = break_agreement("the dog runs .".split(), random.Random(0))
    assert broken in (["the", "dogs", "runs", "."], ["the", "dog", "run", "."])


def test_perturb_gives_up_on_sentences_it_cannot_break_and_rejects_unknown_kinds():
    assert perturb("wiggle !", random.Random(0), "agreement") is not None  # wiggle -> wiggles
    assert perturb(". .", random.Random(0), "shuffle") is None  # nothing to reorder
    assert perturb("hello world .", random.Random(0), "agreement") is None  # no word with a number twin
    with pytest.raises(ConfigError, match="kind"):
        perturb("the dog runs .", random.Random(0), "reverse")


def test_tokenizer_round_trips_sentences_and_keeps_pad_apart_from_eos(tmp_path):
    from transformers import AutoTokenizer

    from tnd_core.data.tokenizer import save_tokenizer

    save_tokenizer(tmp_path / "tok")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert len(tokenizer) == len(vocabulary()) + 4
    ids = {tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id}
    assert len(ids) == 4
    for sentence in generate_corpus(50, seed=2):
        encoded = tokenizer(sentence)["input_ids"]
        assert encoded[0] == tokenizer.bos_token_id and encoded[-1] != tokenizer.eos_token_id
        assert len(encoded) == len(sentence.split()) + 1  # one id per word, no <unk>
        assert tokenizer.unk_token_id not in encoded
        assert tokenizer.decode(encoded, skip_special_tokens=True) == sentence
    assert tokenizer("The dog runs.")["input_ids"] == tokenizer("the dog runs .")["input_ids"]
    assert tokenizer.unk_token_id in tokenizer("the zorp runs")["input_ids"]


def test_irregular_plurals_agree():
    assert ("child", "children") in NOUNS
    assert is_grammatical("the children run .") and not is_grammatical("the children runs .")
    assert is_grammatical("the child runs .") and not is_grammatical("the childs run .")
