"""The word-acquisition record and view: per-word surprisals and word counts written by a run, the
uploaded word list, the readers, the heat map / scatter / curve data builders and their CSV export."""

from __future__ import annotations

import csv
import io
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


# ---------------------------------------------------------------------- the view's data on synthetic run folders
def _sigmoid(step: float, midpoint: float) -> float:
    return 2.0 + 8.0 / (1.0 + (step / midpoint) ** 6)  # 6 bits at the midpoint, in log10(step) steepness 6 ln 10


def _write_run(folder, midpoints: dict[str, float], steps=range(10, 201, 10), tokens_per_step=100.0):
    """A run folder as a run writes it: word_surprisal.jsonl, word_frequencies.jsonl and metrics.jsonl."""
    from tnd_core import stats as S

    log = WordLog(folder)
    for step in steps:
        log(RolloutTextsEvent(step, [" ".join(midpoints)], ["dog"]))
        surprisal = {word: _sigmoid(step, m) for word, m in midpoints.items()}
        log(EvalEvent(step, {}, WordSurprisals(surprisal, ["zebra"], ["dog", "zebra"], 7.0)))
    with open(folder / "metrics.jsonl", "w") as f:
        for step in steps:
            f.write(json.dumps({"step": step, S.TOKENS_SEEN: step * tokens_per_step}) + "\n")


def test_word_table_orders_by_age_with_tokens_and_frequencies(tmp_path):
    from app import word_plots as wp

    # 'cat' crosses 7 bits where 8 / (1 + (t/m)^6) = 5: t = m * 0.6^(1/6)
    _write_run(tmp_path, {"cat": 40.0, "dog": 120.0, "sun": 1.0, "moon": 5000.0})
    run = wp.read_run_words(tmp_path)
    table = run.table
    assert table["word"].tolist() == ["sun", "cat", "dog", "moon", "zebra"]
    assert table["status"].tolist() == ["known at start", "acquired", "acquired", "not acquired", "unscored"]
    cat = table.set_index("word").loc["cat"]
    assert cat["age_step"] == pytest.approx(40.0 * 0.6 ** (1 / 6), rel=0.03)
    assert cat["age_tokens"] == pytest.approx(cat["age_step"] * 100.0)
    assert cat["trials"] == 20 and cat["demos"] == 0 and table.set_index("word").loc["dog", "demos"] == 20
    by_sigmoid = wp.read_run_words(tmp_path, "sigmoid").table.set_index("word")
    assert by_sigmoid.loc["dog", "method"] == "sigmoid" and by_sigmoid.loc["dog", "age_step"] == pytest.approx(
        120, rel=0.03
    )
    assert wp.select_words(table, run.history, "uploaded list")["word"].tolist() == ["dog", "zebra"]
    assert "zebra" not in wp.select_words(table, run.history, "vocabulary")["word"].tolist()


def test_heatmap_rows_follow_acquisition_and_carry_frequencies(tmp_path):
    from app import word_plots as wp

    _write_run(tmp_path, {"late": 150.0, "early": 20.0, "middle": 60.0})
    run = wp.read_run_words(tmp_path)
    words, steps, values = wp.heatmap_data(run, run.table["word"].tolist())
    assert words == ["early", "middle", "late"] and steps == list(range(10, 201, 10))
    assert values[0][0] == pytest.approx(_sigmoid(10, 20.0))
    fig = wp.heatmap_figure(run, run.table["word"].tolist())
    surprisal, frequency = fig.data
    assert list(surprisal.y) == words and list(frequency.x) == ["corpus", "demos", "trials"]
    assert frequency.customdata.tolist()[0] == [0, 0, 20]  # 'early': in every trial, never in a demo
    curves = wp.curves_figure(run, ["early", "late"])
    assert [t.name for t in curves.data][:1] == ["early"] and len(curves.data) == 4  # two curves, two age marks


def test_scatter_pairs_the_ages_of_two_runs(tmp_path):
    from app import word_plots as wp

    (tmp_path / "tnd").mkdir()
    (tmp_path / "clm").mkdir()
    _write_run(tmp_path / "tnd", {"dog": 20.0, "cat": 60.0, "sun": 150.0, "star": 30.0})
    _write_run(tmp_path / "clm", {"dog": 80.0, "cat": 60.0, "moon": 50.0, "star": 5000.0})
    a, b = wp.read_run_words(tmp_path / "tnd"), wp.read_run_words(tmp_path / "clm")
    pairs = wp.scatter_table(a.table, b.table).set_index("word")
    assert sorted(pairs.index) == ["cat", "dog", "star"]  # scored in both runs
    assert pairs.loc["dog", "age_a"] < pairs.loc["dog", "age_b"]
    assert pairs.loc["cat", "age_a"] == pytest.approx(pairs.loc["cat", "age_b"])
    assert pairs.loc["star", "status_b"] == "not acquired"
    edge = wp.not_acquired_position(a, b)
    assert edge == 300.0  # 1.5 x the last evaluation, step 200
    fig = wp.scatter_figure(pairs.reset_index(), "tnd", "clm", not_acquired_at=edge)
    both, only_a = fig.data[0], fig.data[1]
    assert sorted(both.text) == ["cat", "dog"]
    assert list(only_a.text) == ["star"] and list(only_a.y) == [300.0] and only_a.name.startswith("in A only")


def test_csv_exports_round_trip(tmp_path):
    import pandas as pd

    from app import word_plots as wp

    _write_run(tmp_path, {"dog": 20.0, "cat": 60.0})
    run = wp.read_run_words(tmp_path)
    table = pd.read_csv(io.StringIO(wp.table_csv(run.table)))
    assert table.columns.tolist() == wp.TABLE_COLUMNS and table["word"].tolist() == ["dog", "cat", "zebra"]
    assert table["age_step"][0] == pytest.approx(run.table["age_step"][0])
    rows = list(csv.DictReader(io.StringIO(wp.curves_csv(run))))
    assert len(rows) == 2 * 20 and rows[0].keys() == {"word", "step", "student_tokens", "surprisal"}
    cat_10 = next(r for r in rows if r["word"] == "cat" and r["step"] == "10")
    assert float(cat_10["surprisal"]) == pytest.approx(_sigmoid(10, 60.0)) and float(cat_10["student_tokens"]) == 1000


def test_the_view_follows_a_growing_run_and_refuses_other_folders(tmp_path):
    from types import SimpleNamespace

    from app import word_plots as wp
    from app import words_tab

    root = tmp_path / "runs"
    (root / "live").mkdir(parents=True)
    _write_run(root / "live", {"dog": 30.0}, steps=range(10, 51, 10))
    assert wp.read_run_words(root / "live").history.steps == [10, 20, 30, 40, 50]
    _write_run(root / "live", {"dog": 30.0}, steps=range(60, 71, 10))  # two more evaluations arrive
    assert wp.read_run_words(root / "live").history.steps[-2:] == [60, 70]

    ctx = SimpleNamespace(
        policy=SimpleNamespace(runs_root=root),
        runner=SimpleNamespace(store=SimpleNamespace(snapshot=lambda: SimpleNamespace(config=None))),
    )
    assert words_tab.run_folder(ctx, "live") == root / "live"
    for name in ("../runs/live", "/etc", "", None, "missing"):
        assert words_tab.run_folder(ctx, name) is None
    assert words_tab.summary_markdown(None, None, "threshold") == words_tab.NO_RECORD


def test_hosted_mode_takes_a_word_list_only_from_the_session_uploads_or_the_data_folder(tmp_path):
    from app.hosting import HostPolicy
    from tnd_core.config import CustomPPOConfig

    policy = HostPolicy.from_env({"TND_HOSTED": "1", "TND_DATA_ROOT": str(tmp_path / "data")})
    uploads = policy.uploads_dir("alice")
    uploads.mkdir(parents=True)
    (uploads / "cdi.txt").write_text("dog\n")
    outside = tmp_path / "words.txt"
    outside.write_text("dog\n")
    checked = policy.check_config(CustomPPOConfig(eval_word_list="upload:cdi.txt"), "alice")
    assert checked.eval_word_list == str((uploads / "cdi.txt").resolve())
    # another session's upload, a path outside the data folder, and a name that looks like a Hub id
    for value, owner in (("upload:cdi.txt", "bob"), (str(outside), "alice"), ("words.txt", "alice")):
        with pytest.raises(ConfigError, match="eval_word_list"):
            policy.check_config(CustomPPOConfig(eval_word_list=value), owner)
