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
from tnd_core.trainers.reward_trainer import (
    RewardTrainingConfig,
    load_reward_data,
    small_bert_classifier,
    train_reward_model,
)

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
    config = RewardTrainingConfig(
        output_dir=str(tmp_path / "rm"), max_steps=40, learning_rate=5e-3, batch_size=16, eval_fraction=0.2
    )
    result = train_reward_model(config, model=model, tokenizer=tokenizer, data=data, show_progress=False)
    assert result.mode == "pairwise" and result.eval_size == pytest.approx(0.2 * len(sentences), abs=1)
    assert result.metrics["accuracy"] >= 0.9
    saved = json.loads((tmp_path / "rm" / "reward_training.json").read_text())
    assert saved["metrics"]["accuracy"] == result.metrics["accuracy"]
    fresh = [s for s in generate_corpus(200, seed=99) if any(w in NOUNS for w in s.split())][:50]
    chosen, rejected = _scores(tmp_path / "rm", fresh), _scores(tmp_path / "rm", [_without_nouns(s) for s in fresh])
    assert (chosen > rejected).float().mean() >= 0.9


def test_regression_learns_numeric_targets_from_a_jsonl_file_with_named_columns(tokenizer, sentences, tmp_path):
    path = tmp_path / "stage.jsonl"
    path.write_text(
        "".join(json.dumps({"utterance": s, "stage": 3.0 if s.endswith("?") else -1.0}) + "\n" for s in sentences)
    )
    model = small_bert_classifier(tokenizer, hidden_size=32, num_layers=1)
    config = RewardTrainingConfig(
        mode="regression",
        data=str(path),
        output_dir=str(tmp_path / "reg"),
        text_column="utterance",
        label_column="stage",
        max_steps=40,
        learning_rate=5e-3,
        batch_size=16,
        eval_fraction=0.2,
    )
    result = train_reward_model(config, model=model, tokenizer=tokenizer, show_progress=False)
    assert result.metrics["pearson"] > 0.9
    assert result.metrics["mse"] < 1.0
    scores = _scores(tmp_path / "reg", ["where is the dog ?", "the dog runs ."])
    assert scores[0] > scores[1] + 2


def test_classification_learns_string_labels_from_csv(tokenizer, sentences, tmp_path):
    path = tmp_path / "kinds.csv"
    pd.DataFrame({"text": sentences, "kind": [_kind(s) for s in sentences]}).to_csv(path, index=False)
    model_dir = tmp_path / "clf"
    model = small_bert_classifier(tokenizer, num_labels=3)
    config = RewardTrainingConfig(
        mode="classification",
        data=str(path),
        output_dir=str(model_dir),
        label_column="kind",
        max_steps=60,
        learning_rate=3e-3,
        batch_size=16,
        eval_fraction=0.2,
    )
    result = train_reward_model(config, model=model, tokenizer=tokenizer, show_progress=False)
    assert result.metrics["accuracy"] >= 0.9
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    assert sorted(model.config.id2label.values()) == ["imperative", "question", "statement"]


def test_starting_from_a_saved_causal_lm_gives_it_a_reward_head(tiny_bundle, sentences, tmp_path):
    data = Dataset.from_dict({"chosen": sentences[:200], "rejected": [_without_nouns(s) for s in sentences[:200]]})
    config = RewardTrainingConfig(
        model=str(tiny_bundle.teacher),
        output_dir=str(tmp_path / "from_lm"),
        max_steps=30,
        learning_rate=1e-3,
        batch_size=16,
        eval_fraction=0.25,
    )
    result = train_reward_model(config, data=data, show_progress=False)
    assert result.metrics["accuracy"] >= 0.9
    from transformers import AutoConfig

    assert AutoConfig.from_pretrained(tmp_path / "from_lm").num_labels == 1


def test_missing_columns_are_named_with_the_columns_that_exist(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps({"good": "a", "bad": "b"}) + "\n")
    with pytest.raises(ConfigError) as info:
        load_reward_data(str(path), RewardTrainingConfig())
    message = str(info.value)
    assert info.value.field == "chosen_column"
    assert "'chosen'" in message and "'rejected'" in message and "good, bad" in message
    assert len(load_reward_data(str(path), RewardTrainingConfig(chosen_column="good", rejected_column="bad"))) == 1
    with pytest.raises(ConfigError, match="label_column"):
        load_reward_data(Dataset.from_dict({"text": ["a"]}), RewardTrainingConfig(mode="regression"))


PAIRS = Dataset.from_dict({"chosen": ["a"], "rejected": ["b"]})


@pytest.mark.parametrize(
    ("options", "objects", "field"),
    [
        ({"data": "pairs.jsonl", "output_dir": "rm"}, {}, "model"),
        ({"model": "scratch", "output_dir": "rm"}, {}, "data"),
        ({"model": "scratch", "data": "pairs.jsonl"}, {}, "output_dir"),
        ({"output_dir": "rm"}, {"data": PAIRS}, "model"),
        ({"model": "scratch", "output_dir": "rm"}, {"model": object(), "data": PAIRS}, "model"),
        ({"data": "pairs.jsonl", "output_dir": "rm"}, {"model": object(), "data": PAIRS}, "data"),
    ],
)
def test_required_sources_and_options_given_twice_are_config_errors(options, objects, field, tmp_path):
    with pytest.raises(ConfigError) as info:
        train_reward_model(RewardTrainingConfig(**options), **objects)
    assert info.value.field == field


def test_regression_targets_must_be_numbers(tokenizer, tmp_path):
    data = Dataset.from_dict({"text": ["the dog runs ."] * 8, "label": ["high"] * 8})
    config = RewardTrainingConfig(mode="regression", model="scratch", output_dir=str(tmp_path), max_steps=1)
    with pytest.raises(ConfigError, match="numbers"):
        train_reward_model(config, tokenizer=tokenizer, data=data, show_progress=False)


def test_cli_trains_and_reports_and_turns_user_errors_into_messages(tiny_bundle, sentences, tmp_path, capsys):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"chosen": s, "rejected": _without_nouns(s)}) + "\n" for s in sentences[:120]))
    out = tmp_path / "cli_rm"
    code = tnd_main(
        [
            "reward",
            "--model",
            "scratch",
            "--tokenizer",
            "bundle",
            "--data",
            str(path),
            "--output_dir",
            str(out),
            "--max_steps",
            "5",
            "--batch_size",
            "8",
        ]
    )
    assert code == 0
    assert "accuracy=" in capsys.readouterr().out
    assert (out / "config.json").is_file() and (out / "tokenizer.json").is_file()
    code = tnd_main(
        [
            "reward",
            "--model",
            "scratch",
            "--tokenizer",
            "bundle",
            "--data",
            str(path),
            "--output_dir",
            str(out),
            "--chosen_column",
            "preferred",
        ]
    )
    assert code == 2
    assert "'preferred'" in capsys.readouterr().err


def test_cli_trains_from_a_config_file_with_flags_on_top(tokenizer, sentences, tmp_path, capsys):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"good": s, "bad": _without_nouns(s)}) + "\n" for s in sentences[:120]))
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    out = tmp_path / "file_rm"
    config_file = tmp_path / "reward.yaml"
    config = RewardTrainingConfig(
        model="scratch",
        tokenizer=str(tmp_path / "tokenizer"),
        data=str(pairs),
        output_dir=str(out),
        chosen_column="good",
        rejected_column="bad",
        max_steps=3,
        batch_size=8,
        eval_fraction=0.25,
    )
    config.save(config_file)
    assert tnd_main(["reward", "--config", str(config_file), "--max_steps", "4"]) == 0
    assert "accuracy=" in capsys.readouterr().out
    saved = json.loads((out / "reward_training.json").read_text())
    assert RewardTrainingConfig.from_dict(saved["config"]) == config.replace(max_steps=4)
    assert saved["train_size"] == 90 and saved["eval_size"] == 30
    assert (out / "config.json").is_file() and (out / "tokenizer.json").is_file()
    assert tnd_main(["reward", "--config", str(config_file), "--model", ""]) == 2
    assert "model='' is invalid: is required" in capsys.readouterr().err
