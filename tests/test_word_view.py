"""The word-acquisition record and view: per-word surprisals and word counts written by a run, the
uploaded word list, the readers, the heat map / scatter / curve data builders and their CSV export."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from tnd_core.errors import ConfigError
from tnd_core.evaluation.word_log import (
    WORD_FREQUENCY_FILE,
    WORD_SURPRISAL_FILE,
    WordLog,
    read_rows,
    read_word_frequencies,
    read_word_history,
)
from tnd_core.evaluation.words import MAX_WORD_LIST_BYTES, count_words, load_word_list, tokenizer_vocabulary, words_of
from tnd_core.events import EvalEvent, RolloutTextsEvent, StatusEvent, WordSurprisals


# ---------------------------------------------------------------------- a short run on the tiny bundle
def test_a_tiny_run_records_every_vocabulary_word_and_the_uploaded_list(tiny_bundle, tmp_path):
    from tnd_core.config import CustomPPOConfig
    from tnd_core.pipeline import build_trainer

    word_list = tmp_path / "cdi.txt"
    word_list.write_text("Dog\n\nball\nzebra\nchoo choo\ndog\n")
    run = tmp_path / "run"
    config = CustomPPOConfig.load(tiny_bundle.config).replace(
        steps=4,
        eval_steps=2,
        batch_size=4,
        mini_batch_size=4,
        ppo_epochs=1,
        save_steps=0,
        output_dir=str(run),
        eval_word_list=str(word_list),
    )
    texts = []
    trainer = build_trainer(config, callbacks=[lambda e: texts.append(e) if isinstance(e, RolloutTextsEvent) else None])
    trainer.train()

    rows = read_rows(run / WORD_SURPRISAL_FILE)
    assert [row["step"] for row in rows] == [2, 4]
    vocabulary = tokenizer_vocabulary(tiny_bundle.tokenizer)
    assert len(vocabulary) > 400 and "dog" in vocabulary and "<pad>" not in vocabulary and "." not in vocabulary
    for row in rows:
        scored, unscored = set(row["surprisal"]), set(row["unscored"])
        assert scored.isdisjoint(unscored)
        assert set(vocabulary) <= scored | unscored  # every vocabulary word, scored or reported
        assert all(bits > 0 for bits in row["surprisal"].values())
        assert row["word_list"] == ["dog", "ball", "zebra", "choo choo"]
        # 'zebra' is not a word of the language and 'choo choo' not one whitespace word: reported, not dropped
        assert {"zebra", "choo choo"} <= unscored and {"dog", "ball"} <= scored
    eval_words = {w for line in tiny_bundle.eval.read_text().splitlines() for w in words_of(json.loads(line)["text"])}
    assert set(rows[0]["surprisal"]) == eval_words

    # every PPO step's whole batch is counted, not only the logged samples
    assert [e.step for e in texts] == [1, 2, 3, 4] and all(len(e.trials) == 4 == len(e.demos) for e in texts)
    frequencies = read_word_frequencies(run)
    assert frequencies.step == 4
    assert frequencies.trials == dict(count_words(t for e in texts for t in e.trials))
    assert frequencies.demos == dict(count_words(d for e in texts for d in e.demos))
    corpus = count_words(tiny_bundle.corpus.read_text().splitlines())
    assert frequencies.corpus == dict(corpus) and frequencies.corpus["the"] > 100


def test_a_word_list_needs_the_bundle_student(tiny_bundle, tmp_path):
    from tnd_core.config import CustomPPOConfig
    from tnd_core.pipeline import load_components

    word_list = tmp_path / "words.txt"
    word_list.write_text("dog\n")
    config = CustomPPOConfig.load(tiny_bundle.config).replace(
        student_name_or_path=str(tiny_bundle.student), eval_word_list=str(word_list)
    )
    with pytest.raises(ConfigError, match="eval_word_list"):
        load_components(config)


# ---------------------------------------------------------------------- the word list
def test_word_list_is_read_one_word_a_line(tmp_path):
    path = tmp_path / "list.txt"
    path.write_text("  Mommy \n\nDaddy\nmommy\nteddy   bear\n")
    assert load_word_list(path) == ["mommy", "daddy", "teddy bear"]


@pytest.mark.parametrize(
    "content, match",
    [
        (None, "existing text file"),
        ("", "at least one word"),
        ("\n \n\t\n", "at least one word"),
        ("x" * (MAX_WORD_LIST_BYTES + 1), "at most 1024 KiB"),
        ("\n".join(f"w{i}" for i in range(20_001)), "at most 20,000 words"),
        ("a" * 65, "at most 64 characters"),
        (b"\xff\xfe\x00bad", "UTF-8"),
    ],
)
def test_bad_word_lists_are_refused_naming_the_field(tmp_path, content, match):
    path = tmp_path / "list.txt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=match) as caught:
        load_word_list(path)
    assert caught.value.field == "eval_word_list"


# ---------------------------------------------------------------------- the subscriber and the readers
def _words(step_bits: dict[str, float], unscored=("zebra",)) -> WordSurprisals:
    return WordSurprisals(step_bits, list(unscored), ["dog", "zebra"], 7.0)


def test_word_log_counts_every_step_and_continues_after_a_resume(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the dog runs .\nthe cat sits .\n")
    log = WordLog(tmp_path / "run", corpus)
    log(RolloutTextsEvent(1, ["the dog", "a dog"], ["the cat"]))
    log(RolloutTextsEvent(2, ["dog dog !"], []))
    log(EvalEvent(2, {}, _words({"dog": 9.0, "cat": 8.0})))
    log(RolloutTextsEvent(3, ["cat"], ["dog"]))
    log(StatusEvent(3, "completed"))
    frequencies = read_word_frequencies(tmp_path / "run")
    assert frequencies.step == 3
    assert frequencies.trials == {"the": 1, "dog": 4, "a": 1, "cat": 1}
    assert frequencies.demos == {"the": 1, "cat": 1, "dog": 1}
    assert frequencies.corpus == {"the": 2, "dog": 1, "runs": 1, "cat": 1, "sits": 1}

    # a resume from a checkpoint at step 2: the counts continue from the row of step 2, and the rows
    # after it (step 3 of the interrupted run) give way to the resumed run's
    resumed = WordLog(tmp_path / "run", corpus)
    resumed(RolloutTextsEvent(3, ["ball"], []))
    resumed(EvalEvent(3, {}, _words({"dog": 5.0, "cat": 8.0})))
    frequencies = read_word_frequencies(tmp_path / "run")
    assert frequencies.step == 3 and frequencies.trials == {"the": 1, "dog": 4, "a": 1, "ball": 1}
    history = read_word_history(tmp_path / "run")
    assert history.steps == [2, 3]
    assert history.surprisal == {"cat": [8.0, 8.0], "dog": [9.0, 5.0]}
    assert history.unscored == ["zebra"] and history.word_list == ["dog", "zebra"] and history.threshold == 7.0


def test_readers_skip_a_line_being_written_and_a_missing_file(tmp_path):
    assert read_word_history(tmp_path) is None
    assert read_word_frequencies(tmp_path).trials == {}
    (tmp_path / WORD_SURPRISAL_FILE).write_text(
        json.dumps({"step": 5, "threshold": 7.0, "surprisal": {"dog": 8.0}, "unscored": [], "word_list": []})
        + '\n{"step": 10, "surpr'
    )
    history = read_word_history(tmp_path)
    assert history.steps == [5] and history.surprisal == {"dog": [8.0]}
    (tmp_path / WORD_FREQUENCY_FILE).write_text("not json\n")
    assert read_word_frequencies(tmp_path).step == 0


def test_count_words_matches_the_surprisal_unit():
    assert words_of("The dog, runs . 42 ?") == ["the", "dog,", "runs"]
    assert count_words(["a a", "A b"]) == Counter({"a": 3, "b": 1})
