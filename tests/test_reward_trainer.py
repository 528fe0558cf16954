"""Reward trainer: pairwise (TRL RewardTrainer), regression, classification; data sources; CLI; errors."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from datasets import Dataset

from tnd_core.cli import main as tnd_main
from tnd_core.data.language import LEXICON, generate_corpus
from tnd_core.data.tokenizer import build_tokenizer
from tnd_core.errors import ConfigError
from tnd_core.trainers.reward_trainer import load_reward_data, small_bert_classifier, train_reward_model

NOUNS = set(LEXICON["N_sg"]) | set(LEXICON["N_pl"])


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="module")
def sentences():
    return [s for s in dict.fromkeys(generate_corpus(900, seed=21)) if any(w in NOUNS for w in s.split())]


def _without_nouns(sentence: str) -> str:
    return " ".join("blorp" if w in NOUNS else w for w in sentence.split())


def _kind(sentence: str) -> str:
    return {".": "statement", "?": "question", "!": "imperative"}[sentence.split()[-1]]


def _scores(model_dir, texts):
    from tnd_core.models import RewardModel

    return RewardModel.from_pretrained(model_dir).score_texts(texts)


def test_pairwise_training_learns_the_preference_and_saves_a_loadable_model(tokenizer, sentences, tmp_path):
    data = Dataset.from_dict({"chosen": sentences, "rejected": [_without_nouns(s) for s in sentences]})
    model = small_bert_classifier(tokenizer, hidden_size=32, num_layers=1)
    result = train_reward_model(model, data, tmp_path / "rm", tokenizer=tokenizer, max_steps=40, learning_rate=5e-3, batch_size=16, eval_fraction=0.2, show_progress=False)
    assert result.mode == "pairwise" and result.eval_size == pytest.approx(0.2 * len(sentences), abs=1)
    assert result.metrics["accuracy"] >= 0.9
    saved = json.loads((tmp_path / "rm" / "reward_training.json").read_text())
    assert saved["metrics"]["accuracy"] == result.metrics["accuracy"]
    fresh = [s for s in generate_corpus(200, seed=99) if any(w in NOUNS for w in s.split())][:50]
    chosen, rejected = _scores(tmp_path / "rm", fresh), _scores(tmp_path / "rm", [_without_nouns(s) for s in fresh])
    assert (chosen > rejected).float().mean() >= 0.9


def test_regression_learns_numeric_targets_from_a_jsonl_file_with_named_columns(tokenizer, sentences, tmp_path):
    path = tmp_path / "stage.jsonl"
    path.write_text("".join(json.dumps({"utterance": s, "stage": 3.0 if s.endswith("?") else -1.0}) + "\n" for s in sentences))
    model = small_bert_classifier(tokenizer, hidden_size=32, num_layers=1)
    result = train_reward_model(model, str(path), tmp_path / "reg", mode="regression", tokenizer=tokenizer, text_column="utterance", label_column="stage", max_steps=40, learning_rate=5e-3, batch_size=16, eval_fraction=0.2, show_progress=False)
    assert result.metrics["pearson"] > 0.9
    assert result.metrics["mse"] < 1.0
    scores = _scores(tmp_path / "reg", ["where is the dog ?", "the dog runs ."])
    assert scores[0] > scores[1] + 2


def test_classification_learns_string_labels_from_csv(tokenizer, sentences, tmp_path):
    path = tmp_path / "kinds.csv"
    pd.DataFrame({"text": sentences, "kind": [_kind(s) for s in sentences]}).to_csv(path, index=False)
    model_dir = tmp_path / "clf"
    model = small_bert_classifier(tokenizer, num_labels=3)
    result = train_reward_model(model, str(path), model_dir, mode="classification", tokenizer=tokenizer, label_column="kind", max_steps=60, learning_rate=3e-3, batch_size=16, eval_fraction=0.2, show_progress=False)
    assert result.metrics["accuracy"] >= 0.9
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    assert sorted(model.config.id2label.values()) == ["imperative", "question", "statement"]


def test_starting_from_a_saved_causal_lm_gives_it_a_reward_head(tiny_bundle, sentences, tmp_path):
    data = Dataset.from_dict({"chosen": sentences[:200], "rejected": [_without_nouns(s) for s in sentences[:200]]})
    result = train_reward_model(str(tiny_bundle.teacher), data, tmp_path / "from_lm", max_steps=30, learning_rate=1e-3, batch_size=16, eval_fraction=0.25, show_progress=False)
    assert result.metrics["accuracy"] >= 0.9
    from transformers import AutoConfig

    assert AutoConfig.from_pretrained(tmp_path / "from_lm").num_labels == 1


def test_missing_columns_are_named_with_the_columns_that_exist(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps({"good": "a", "bad": "b"}) + "\n")
    with pytest.raises(ConfigError) as info:
        load_reward_data(str(path), "pairwise")
    message = str(info.value)
    assert info.value.field == "chosen_column"
    assert "'chosen'" in message and "'rejected'" in message and "good, bad" in message
    assert len(load_reward_data(str(path), "pairwise", chosen_column="good", rejected_column="bad")) == 1
    with pytest.raises(ConfigError, match="label_column"):
        load_reward_data(Dataset.from_dict({"text": ["a"]}), "regression")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"mode": "listwise"}, "mode"),
        ({"epochs": 0}, "epochs"),
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"batch_size": 0}, "batch_size"),
        ({"eval_fraction": 1.0}, "eval_fraction"),
        ({"max_steps": 0}, "max_steps"),
    ],
)
def test_bad_settings_are_config_errors(kwargs, field, tmp_path):
    with pytest.raises(ConfigError) as info:
        train_reward_model("scratch", Dataset.from_dict({"chosen": ["a"], "rejected": ["b"]}), tmp_path, **kwargs)
    assert info.value.field == field


def test_regression_targets_must_be_numbers(tokenizer, tmp_path):
    data = Dataset.from_dict({"text": ["the dog runs ."] * 8, "label": ["high"] * 8})
    with pytest.raises(ConfigError, match="numbers"):
        train_reward_model("scratch", data, tmp_path, mode="regression", tokenizer=tokenizer, max_steps=1, show_progress=False)


def test_cli_trains_and_reports_and_turns_user_errors_into_messages(tiny_bundle, sentences, tmp_path, capsys):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"chosen": s, "rejected": _without_nouns(s)}) + "\n" for s in sentences[:120]))
    out = tmp_path / "cli_rm"
    code = tnd_main(["reward", "--model", "scratch", "--tokenizer", "bundle", "--data", str(path), "--output_dir", str(out), "--max_steps", "5", "--batch_size", "8"])
    assert code == 0
    assert "accuracy=" in capsys.readouterr().out
    assert (out / "config.json").is_file() and (out / "tokenizer.json").is_file()
    code = tnd_main(["reward", "--model", "scratch", "--tokenizer", "bundle", "--data", str(path), "--output_dir", str(out), "--chosen_column", "preferred"])
    assert code == 2
    assert "'preferred'" in capsys.readouterr().err
