"""Reward-model training: pairwise (TRL RewardTrainer) and pointwise (regression, classification)."""

from tnd_core.trainers.reward_trainer.reward import (
    MODES,
    RewardTrainingResult,
    classifier_to_reward_model,
    load_reward_data,
    small_bert_classifier,
    train_reward_model,
)

__all__ = [
    "MODES",
    "RewardTrainingResult",
    "classifier_to_reward_model",
    "load_reward_data",
    "small_bert_classifier",
    "train_reward_model",
]
