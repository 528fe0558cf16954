"""Trainers: one per algorithm."""

from tnd_core.config import CustomPPOConfig
from tnd_core.trainers.ppo_trainer.ppo import CustomPPOTrainer

__all__ = ["CustomPPOConfig", "CustomPPOTrainer"]
