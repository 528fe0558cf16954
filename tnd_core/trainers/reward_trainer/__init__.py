"""Reward-model training: pairwise (TRL RewardTrainer) and pointwise (regression, classification)."""

from tnd_core.trainers.reward_trainer.config import MODES, RewardTrainingConfig
from tnd_core.trainers.reward_trainer.reward import (
    RewardTrainingResult,
    classifier_to_reward_model,
    load_reward_data,
    small_bert_classifier,
    train_reward_model,
)

__all__ = [
    "MODES",
    "RewardTrainingConfig",
    "RewardTrainingResult",
    "classifier_to_reward_model",
    "load_reward_data",
    "small_bert_classifier",
    "train_reward_model",
]
