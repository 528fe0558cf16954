"""Hub presets (docs/HUB_PRESETS.md) through the same loading code, with look-alike models saved locally:
a GPT-2 teacher, a smaller GPT-2 student sharing its byte-level BPE tokenizer, and a two-class
sentiment classifier with its own tokenizer, turned into a one-output reward."""

from __future__ import annotations

import json

import pytest
import torch

from tnd_core.config import CustomPPOConfig
from tnd_core.data.language import generate_corpus
from tnd_core.data.tokenizer import build_tokenizer
from tnd_core.errors import ConfigError
from tnd_core.events import StepEvent
from tnd_core.trainers.reward_trainer import classifier_to_reward_model


@pytest.fixture(scope="module")
def hub_like(tmp_path_factory):
    from tokenizers import ByteLevelBPETokenizer
    from transformers import (
        DistilBertConfig,
        DistilBertForSequenceClassification,
        GPT2Config,
        GPT2LMHeadModel,
        PreTrainedTokenizerFast,
    )

    root = tmp_path_factory.mktemp("hub")
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(generate_corpus(2000, seed=4), vocab_size=400, special_tokens=["<|endoftext|>"])
    gpt2_tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer, bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>"
    )
    torch.manual_seed(0)
    for name, layers in (("gpt2", 2), ("distilgpt2", 1)):
        model = GPT2LMHeadModel(
            GPT2Config(
                vocab_size=len(gpt2_tokenizer),
                n_positions=64,
                n_embd=32,
                n_layer=layers,
                n_head=2,
                bos_token_id=0,
                eos_token_id=0,
            )
        )
        model.save_pretrained(root / name)
        gpt2_tokenizer.save_pretrained(root / name)
    word_tokenizer = build_tokenizer()
    config = DistilBertConfig(
        vocab_size=len(word_tokenizer),
        dim=32,
        n_layers=1,
        n_heads=2,
        hidden_dim=64,
        max_position_embeddings=64,
        pad_token_id=word_tokenizer.pad_token_id,
        id2label={0: "NEGATIVE", 1: "POSITIVE"},
        label2id={"NEGATIVE": 0, "POSITIVE": 1},
    )
    DistilBertForSequenceClassification(config).save_pretrained(root / "sentiment")
    word_tokenizer.save_pretrained(root / "sentiment")
    (root / "prompts.jsonl").write_text(
        "".join(json.dumps({"prompt": p}) + "\n" for p in ["the dog", "where is", "a cat", "please"])
    )
    return root


def test_a_two_class_classifier_becomes_a_reward_that_scores_its_log_odds(hub_like, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tnd_core.models import load_reward_model

    out = classifier_to_reward_model(str(hub_like / "sentiment"), tmp_path / "reward", positive_label="POSITIVE")
    texts = ["the dog runs .", "where are the cats ?", "hug the baby !"]
    tokenizer = AutoTokenizer.from_pretrained(hub_like / "sentiment")
    classifier = AutoModelForSequenceClassification.from_pretrained(hub_like / "sentiment").eval()
    with torch.no_grad():
        logits = classifier(**tokenizer(texts, padding=True, return_tensors="pt")).logits
    reward = load_reward_model(str(out))
    assert torch.allclose(reward.score_texts(texts), logits[:, 1] - logits[:, 0], atol=1e-5)
    negative = load_reward_model(
        str(classifier_to_reward_model(str(hub_like / "sentiment"), tmp_path / "neg", positive_label=0))
    )
    assert torch.allclose(negative.score_texts(texts), logits[:, 0] - logits[:, 1], atol=1e-5)


def test_conversion_rejects_unknown_labels(hub_like, tmp_path):
    with pytest.raises(ConfigError, match="POSITIVE, NEGATIVE|NEGATIVE, POSITIVE"):
        classifier_to_reward_model(str(hub_like / "sentiment"), tmp_path / "r", positive_label="HAPPY")


def test_hub_style_sources_train_through_the_same_pipeline(hub_like, tmp_path):
    from tnd_core.pipeline import build_trainer

    reward = classifier_to_reward_model(str(hub_like / "sentiment"), tmp_path / "reward", positive_label="POSITIVE")
    config = CustomPPOConfig(
        teacher_name_or_path=str(hub_like / "gpt2"),
        student_name_or_path=str(hub_like / "distilgpt2"),
        reward_model_name_or_path=str(reward),
        dataset_name_or_path=str(hub_like / "prompts.jsonl"),
        steps=2,
        batch_size=4,
        mini_batch_size=4,
        ppo_epochs=1,
        max_new_tokens=6,
        save_steps=0,
        output_dir=str(tmp_path / "run"),
    )
    events = []
    trainer = build_trainer(config, callbacks=[events.append])
    assert trainer.tokenizer.pad_token_id == trainer.tokenizer.eos_token_id  # GPT-2 has no pad token
    result = trainer.train()
    steps = [e for e in events if isinstance(e, StepEvent)]
    assert result["step"] == 2 and len(steps) == 2
    for key in ("env/reward_mean", "distill/teacher_student_kl", "ppo/loss/total"):
        assert all(torch.isfinite(torch.tensor(e.stats[key])) for e in steps)
