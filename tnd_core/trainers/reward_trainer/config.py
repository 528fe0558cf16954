"""RewardTrainingConfig: every option of `tnd reward` and `train_reward_model`, with the metadata that
generates the command's flags, its YAML/JSON file and its validation (see `tnd_core.config`)."""

from __future__ import annotations

from tnd_core.config import MAX_BATCH, MAX_SEED, MAX_STEPS, MAX_TOKENS_PROMPT, ConfigBase, config_dataclass, option
from tnd_core.errors import ConfigError

MODES = ("pairwise", "regression", "classification")
SCRATCH = "scratch"

GROUPS: dict[str, str] = {
    "model": "Model",
    "data": "Data",
    "training": "Training",
    "run": "Run",
}


@config_dataclass
class RewardTrainingConfig(ConfigBase):
    """Options of a reward-model training run.

    `model`, `data` and `output_dir` have no default. `train_reward_model` also takes the model, the
    tokenizer and the data as objects; then the matching option stays empty.
    """

    GROUPS = GROUPS

    # --- model
    mode: str = option(
        "pairwise",
        "pairwise: chosen/rejected pairs (TRL RewardTrainer); regression or classification: text + target.",
        "model",
        choices=MODES,
    )
    model: str = option(
        "",
        f"Hub id or local folder to start from, or '{SCRATCH}' for a small BERT built for the tokenizer. Required.",
        "model",
    )
    tokenizer: str | None = option(
        None, "Tokenizer folder or hub id; empty for the model's own. `tnd reward` also takes 'bundle'.", "model"
    )

    # --- data
    data: str = option(
        "", "Training data: CSV, JSONL or JSON file, a dataset folder or a hub dataset id. Required.", "data"
    )
    eval_data: str | None = option(None, "Held-out data; empty to hold out eval_fraction of data.", "data")
    eval_fraction: float = option(
        0.1, "Share of data held out for the metrics when eval_data is empty.", "data", ge=0.0, lt=1.0
    )
    text_column: str = option("text", "Column with the text (pointwise modes).", "data")
    label_column: str = option("label", "Column with the target number or class (pointwise modes).", "data")
    chosen_column: str = option("chosen", "Column with the preferred text (pairwise).", "data")
    rejected_column: str = option("rejected", "Column with the rejected text (pairwise).", "data")
    max_length: int = option(128, "Texts are truncated to this many tokens.", "data", ge=2, le=MAX_TOKENS_PROMPT)

    # --- training
    epochs: float = option(1.0, "Passes over the training data.", "training", gt=0.0, le=10_000.0)
    max_steps: int = option(-1, "Optimizer steps; -1 trains for epochs.", "training", ge=-1, le=MAX_STEPS)
    learning_rate: float = option(1e-4, "Learning rate (AdamW, linear decay).", "training", gt=0.0, le=10.0)
    batch_size: int = option(16, "Examples (pairs in pairwise mode) per step.", "training", ge=1, le=MAX_BATCH)

    # --- run
    output_dir: str = option("", "Folder the model and tokenizer are saved to. Required.", "run")
    seed: int = option(0, "Random seed.", "run", ge=0, le=MAX_SEED)

    def _combination_errors(self) -> list[ConfigError]:
        if self.max_steps == 0:
            return [ConfigError("max_steps", 0, "must be a positive integer, or -1 to train for `epochs`")]
        return []

    def columns(self) -> dict[str, str]:
        """The columns `mode` reads: canonical name (chosen/rejected, or text/label) -> the data's column name."""
        if self.mode == "pairwise":
            return {"chosen": self.chosen_column, "rejected": self.rejected_column}
        return {"text": self.text_column, "label": self.label_column}
