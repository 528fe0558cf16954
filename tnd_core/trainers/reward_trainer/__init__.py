"""Reward-model training: pairwise (TRL RewardTrainer) and pointwise (regression, classification)."""

from tnd_core.trainers.reward_trainer.reward import (
    MODES,
    RewardTrainingResult,
    add_reward_arguments,
    classifier_to_reward_model,
    load_reward_data,
    run_reward_cli,
    small_bert_classifier,
    train_reward_model,
)

__all__ = [
    "MODES",
    "RewardTrainingResult",
    "add_reward_arguments",
    "classifier_to_reward_model",
    "load_reward_data",
    "run_reward_cli",
    "small_bert_classifier",
    "train_reward_model",
]
