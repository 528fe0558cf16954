"""Reward-model training: pairwise preferences (TRL's RewardTrainer) or pointwise targets.

- pairwise: (chosen, rejected) text pairs; Bradley-Terry loss via `trl.RewardTrainer`.
- regression: (text, number), one output trained with MSE (the paper's stage regressor).
- classification: (text, class), cross-entropy over the classes.

Texts are tokenised exactly as `tnd_core.models.RewardModel.score_texts` tokenises them at PPO time
(the tokenizer's own special tokens, no extra EOS), so scores at use time match training.
Data: a `datasets.Dataset`, a local CSV / JSONL / JSON file, a local dataset folder or a hub id.
The model and its tokenizer are written with `save_pretrained`; `reward_training.json` beside them
records the options and the held-out metrics.

Options come in a `RewardTrainingConfig` (the flags of `tnd reward` are generated from it). Torch,
transformers and TRL are imported inside functions: `tnd --help` imports this package for the config
and should stay fast.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tnd_core.errors import ConfigError, TndError
from tnd_core.trainers.reward_trainer.config import SCRATCH, RewardTrainingConfig

logger = logging.getLogger(__name__)

RESULT_FILE = "reward_training.json"


@dataclass
class RewardTrainingResult:
    """Where the model was saved and its held-out metrics.

    Pairwise: accuracy and margin; regression: pearson and mse; classification: accuracy.
    """

    output_dir: Path
    mode: str
    metrics: dict[str, float] = field(default_factory=dict)
    train_size: int = 0
    eval_size: int = 0


# ---------------------------------------------------------------------- data
def _load_dataset(data: Any, what: str) -> Any:
    import datasets

    if isinstance(data, datasets.Dataset):
        return data
    if isinstance(data, datasets.DatasetDict):
        if "train" not in data:
            raise ConfigError(what, list(data), "a DatasetDict must have a 'train' split")
        return data["train"]
    if not isinstance(data, (str, Path)) or not str(data).strip():
        raise ConfigError(
            what, data, "must be a datasets.Dataset, a local CSV/JSONL/JSON file, a dataset folder or a hub dataset id"
        )
    from tnd_core.data.prompts import TABLE_SUFFIXES, read_table

    path = Path(data).expanduser()
    if path.suffix.lower() in TABLE_SUFFIXES:
        return datasets.Dataset.from_pandas(read_table(path), preserve_index=False)
    try:
        return datasets.load_dataset(str(data), split="train")
    except Exception as exc:  # datasets raises many types (missing repo, offline mode, bad files)
        raise TndError(f"{what}: could not load dataset {str(data)!r} (train split): {exc}") from None


def load_reward_data(data: Any, config: RewardTrainingConfig, *, what: str = "data") -> Any:
    """A `datasets.Dataset` with the canonical columns of `config.mode` (chosen/rejected, or text/label),
    read from `config`'s columns of any supported source.

    Raises ConfigError naming every missing column and listing the columns that exist.
    """
    dataset = _load_dataset(data, what)
    wanted = config.columns()
    missing = [user for user in wanted.values() if user not in dataset.column_names]
    if missing:
        flags = {user: f"{canonical}_column" for canonical, user in wanted.items()}
        raise ConfigError(
            flags[missing[0]],
            missing[0],
            f"missing column(s) {', '.join(repr(m) for m in missing)} in {what} for {config.mode} training; "
            f"the data has columns: {', '.join(dataset.column_names) or '(none)'}",
        )
    dataset = dataset.select_columns(list(wanted.values()))
    renames = {user: canonical for canonical, user in wanted.items() if user != canonical}
    if renames:
        dataset = dataset.rename_columns(renames)
    if len(dataset) == 0:
        raise TndError(f"{what} has no rows")
    return dataset


# ---------------------------------------------------------------------- models
def small_bert_classifier(
    tokenizer: Any,
    num_labels: int = 1,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    max_positions: int = 64,
    seed: int = 0,
) -> Any:
    """A small BERT-style sequence classifier initialised from scratch for `tokenizer`'s vocabulary."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=4 * hidden_size,
        max_position_embeddings=max_positions,
        type_vocab_size=1,
        pad_token_id=tokenizer.pad_token_id,
        num_labels=num_labels,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(seed)
    return BertForSequenceClassification(config)


def _load_tokenizer(source: Any) -> Any:
    if source is None or not isinstance(source, (str, Path)):
        return source
    from tnd_core.models.loading import load_tokenizer

    return load_tokenizer(source, field="tokenizer")


def _prepare_model(
    model: Any, tokenizer: Any, config: RewardTrainingConfig, label_names: list[str] | None
) -> tuple[Any, Any]:
    """The model (loaded, or built from scratch) with its tokenizer, set up for `config.mode`'s outputs."""
    mode = config.mode
    num_labels = len(label_names) if label_names else 1
    if isinstance(model, (str, Path)) and str(model) == SCRATCH:
        if tokenizer is None:
            raise ConfigError(
                "tokenizer", None, f"is required with model={SCRATCH!r}: a tokenizer folder, a hub id or 'bundle'"
            )
        model = small_bert_classifier(tokenizer, num_labels=num_labels)
    elif isinstance(model, (str, Path)):
        from tnd_core.models.loading import load_sequence_classifier

        extra: dict[str, Any] = {"num_labels": num_labels}
        if mode == "regression":
            extra["problem_type"] = "regression"
        model_source = model
        model = load_sequence_classifier(model_source, field="model", ignore_mismatched_sizes=True, **extra)
        tokenizer = tokenizer if tokenizer is not None else _load_tokenizer(model_source)
    if tokenizer is None:
        raise ConfigError("tokenizer", None, "is required when the model is given as an object")
    if getattr(model.config, "num_labels", None) != num_labels:
        has = model.config.num_labels
        raise ConfigError("model", type(model).__name__, f"has num_labels={has}; {mode} training needs {num_labels}")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    if mode == "regression":
        model.config.problem_type = "regression"
    if mode == "classification":
        model.config.problem_type = "single_label_classification"
        model.config.id2label = dict(enumerate(label_names or []))
        model.config.label2id = {name: i for i, name in enumerate(label_names or [])}
    return model, tokenizer


# ---------------------------------------------------------------------- training
def _split(dataset: Any, eval_set: Any, config: RewardTrainingConfig) -> tuple[Any, Any]:
    if eval_set is not None:
        return dataset, eval_set
    if config.eval_fraction == 0 or len(dataset) < 4:
        return dataset, None
    parts = dataset.train_test_split(test_size=config.eval_fraction, seed=config.seed)
    return parts["train"], parts["test"]


def _label_names(train: Any, eval_set: Any) -> list[str]:
    values = set(train["label"]) | (set(eval_set["label"]) if eval_set is not None else set())
    return sorted(
        map(str, values), key=lambda v: (not v.lstrip("-").isdigit(), int(v) if v.lstrip("-").isdigit() else 0, v)
    )


def _training_arguments(cls: Any, config: RewardTrainingConfig, show_progress: bool, **extra: Any) -> Any:
    return cls(
        output_dir=str(Path(config.output_dir) / "trainer_state"),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=max(config.batch_size, 64),
        learning_rate=config.learning_rate,
        lr_scheduler_type="linear",
        warmup_steps=0.05,
        weight_decay=0.01,
        logging_steps=50,
        save_strategy="no",
        report_to=[],
        disable_tqdm=not show_progress,
        seed=config.seed,
        dataloader_num_workers=0,
        **extra,
    )


def _pearson(x: list[float], y: list[float]) -> float:
    import numpy as np

    if len(x) < 2 or np.std(x) == 0 or np.std(y) == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def train_reward_model(
    config: RewardTrainingConfig,
    *,
    model: Any = None,
    tokenizer: Any = None,
    data: Any = None,
    eval_data: Any = None,
    callbacks: list[Any] | None = None,
    show_progress: bool = True,
) -> RewardTrainingResult:
    """Train a reward model as `config` says; save it (model + tokenizer) with `save_pretrained` in `config.output_dir`.

    The model, tokenizer, data and eval data come from the config's options of those names or are
    given here as objects (a sequence classifier, a tokenizer, `datasets.Dataset`s); an object
    replaces its option, which must then be empty. Without eval data, `config.eval_fraction` of the
    data is held out for the metrics. `callbacks`: transformers `TrainerCallback`s (progress, early stopping).
    """
    model = _source("model", config.model, model, required=f"a hub id, a local folder or {SCRATCH!r}")
    tokenizer = _source("tokenizer", config.tokenizer, tokenizer)
    data = _source("data", config.data, data, required="a CSV, JSONL or JSON file, a dataset folder or a hub id")
    eval_data = _source("eval_data", config.eval_data, eval_data)
    if not config.output_dir:
        raise ConfigError("output_dir", config.output_dir, "is required: the folder the model is saved to")
    output_dir = Path(config.output_dir)
    mode = config.mode

    eval_set = load_reward_data(eval_data, config, what="eval_data") if eval_data is not None else None
    train_set, eval_set = _split(load_reward_data(data, config), eval_set, config)
    label_names = _label_names(train_set, eval_set) if mode == "classification" else None
    if label_names is not None and len(label_names) < 2:
        found = f"classification needs two distinct labels or more; found {label_names}"
        raise ConfigError("label_column", config.label_column, found)
    model, tokenizer = _prepare_model(model, _load_tokenizer(tokenizer), config, label_names)
    output_dir.mkdir(parents=True, exist_ok=True)

    if mode == "pairwise":
        trainer = _pairwise_trainer(model, tokenizer, train_set, eval_set, config, callbacks, show_progress)
    else:
        trainer = _pointwise_trainer(
            model, tokenizer, train_set, eval_set, config, label_names, callbacks, show_progress
        )
    if not show_progress:
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    trainer.train()
    metrics = _held_out_metrics(trainer, mode, eval_set) if eval_set is not None else {}

    trainer.model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    eval_size = len(eval_set) if eval_set is not None else 0
    result = RewardTrainingResult(output_dir, mode, metrics, len(train_set), eval_size)
    summary = {"config": config.to_dict(), "metrics": metrics, "train_size": len(train_set), "eval_size": eval_size}
    (output_dir / RESULT_FILE).write_text(json.dumps(summary, indent=2))
    _remove_tree(output_dir / "trainer_state")
    logger.info("reward model (%s) saved to %s; held-out %s", mode, output_dir, metrics)
    return result


def _source(name: str, option_value: str | None, given: Any, *, required: str = "") -> Any:
    """The object given to `train_reward_model` for `name`, else its option (None when empty)."""
    if given is not None and option_value:
        raise ConfigError(name, option_value, f"must be empty when a {name} object is given")
    if given is not None:
        return given
    if required and not option_value:
        raise ConfigError(name, option_value, f"is required: {required}")
    return option_value or None


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def _tokenize(tokenizer: Any, texts: list[str], max_length: int) -> list[list[int]]:
    return tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]


def _pairwise_trainer(
    model: Any,
    tokenizer: Any,
    train_set: Any,
    eval_set: Any,
    config: RewardTrainingConfig,
    callbacks: list[Any] | None,
    show_progress: bool,
) -> Any:
    from trl import RewardConfig, RewardTrainer

    def tokenized(dataset: Any) -> Any:
        # Pre-tokenised columns make RewardTrainer skip its own EOS appending (see the module docstring).
        return dataset.map(
            lambda batch: {
                "chosen_ids": _tokenize(tokenizer, batch["chosen"], config.max_length),
                "rejected_ids": _tokenize(tokenizer, batch["rejected"], config.max_length),
            },
            batched=True,
            remove_columns=["chosen", "rejected"],
        )

    args = _training_arguments(
        RewardConfig,
        config,
        show_progress,
        bf16=False,
        gradient_checkpointing=False,
        max_length=config.max_length,
        eval_strategy="no",
    )
    return RewardTrainer(
        model=model,
        args=args,
        train_dataset=tokenized(train_set),
        eval_dataset=tokenized(eval_set) if eval_set is not None else None,
        processing_class=tokenizer,
        callbacks=callbacks,
    )


def _pointwise_trainer(
    model: Any,
    tokenizer: Any,
    train_set: Any,
    eval_set: Any,
    config: RewardTrainingConfig,
    label_names: list[str] | None,
    callbacks: list[Any] | None,
    show_progress: bool,
) -> Any:
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    def target(value: Any) -> Any:
        if config.mode == "classification":
            return label_names.index(str(value))
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError("label_column", value, "regression targets must be numbers") from None
        if not math.isfinite(number):
            raise ConfigError("label_column", value, "regression targets must be finite numbers")
        return number

    def tokenized(dataset: Any) -> Any:
        return dataset.map(
            lambda batch: {
                "input_ids": _tokenize(tokenizer, batch["text"], config.max_length),
                "labels": [target(v) for v in batch["label"]],
            },
            batched=True,
            remove_columns=["text", "label"],
        )

    args = _training_arguments(TrainingArguments, config, show_progress, eval_strategy="no")
    return Trainer(
        model=model,
        args=args,
        train_dataset=tokenized(train_set),
        eval_dataset=tokenized(eval_set) if eval_set is not None else None,
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
        callbacks=callbacks,
    )


def _held_out_metrics(trainer: Any, mode: str, eval_set: Any) -> dict[str, float]:
    if mode == "pairwise":
        metrics = trainer.evaluate()
        return {"accuracy": float(metrics["eval_accuracy"]), "margin": float(metrics["eval_margin"])}
    output = trainer.predict(trainer.eval_dataset)
    predictions, labels = output.predictions, output.label_ids
    if mode == "regression":
        scores = predictions.reshape(-1).tolist()
        targets = labels.reshape(-1).tolist()
        mse = sum((s - t) ** 2 for s, t in zip(scores, targets)) / len(targets)
        return {"pearson": _pearson(scores, targets), "mse": float(mse)}
    return {"accuracy": float((predictions.argmax(-1) == labels).mean())}


# ---------------------------------------------------------------------- two-class classifiers as rewards
def classifier_to_reward_model(
    model_name_or_path: str | Path, output_dir: str | Path, positive_label: str | int = 1
) -> Path:
    """Save a two-class sequence classifier (e.g. a sentiment model) as a one-output reward model.

    The new head outputs logit[positive] - logit[negative], the log-odds of the positive class, so
    the reward is exactly what the classifier believes; the rest of the weights are unchanged.
    `positive_label` is a label name from the model's id2label (e.g. 'POSITIVE') or its index.
    """
    import torch
    from torch import nn

    from tnd_core.models.loading import load_sequence_classifier, load_tokenizer

    model = load_sequence_classifier(model_name_or_path, field="model")
    tokenizer = load_tokenizer(model_name_or_path, field="model")
    labels = {str(name): int(i) for i, name in model.config.id2label.items()}
    if model.config.num_labels != 2:
        count = model.config.num_labels
        raise ConfigError("model", str(model_name_or_path), f"must be a two-class classifier; it has {count} labels")
    if isinstance(positive_label, int) or str(positive_label).isdigit():
        positive = int(positive_label)
        if positive not in (0, 1):
            names = ", ".join(labels)
            raise ConfigError("positive_label", positive_label, f"must be 0 or 1, or one of the label names: {names}")
    elif str(positive_label) in labels:
        positive = labels[str(positive_label)]
    else:
        raise ConfigError("positive_label", positive_label, "must be one of the model's labels: " + ", ".join(labels))
    name, head = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear) and m.out_features == 2][-1]
    new_head = nn.Linear(head.in_features, 1, bias=head.bias is not None)
    with torch.no_grad():
        new_head.weight.copy_(head.weight[positive] - head.weight[1 - positive])
        if head.bias is not None:
            new_head.bias.copy_(head.bias[positive] - head.bias[1 - positive])
    parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
    setattr(parent, name.rpartition(".")[2], new_head)
    score_name = f"log-odds of {model.config.id2label.get(positive, positive)}"
    model.config.num_labels = 1
    model.config.id2label = {0: score_name}
    model.config.label2id = {score_name: 0}
    model.config.problem_type = "regression"
    output_dir = Path(output_dir)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return output_dir
