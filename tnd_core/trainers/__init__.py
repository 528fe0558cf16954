"""Trainers: one per algorithm."""

from typing import Any

from tnd_core.config import CustomPPOConfig

__all__ = ["CustomPPOConfig", "CustomPPOTrainer"]


def __getattr__(name: str) -> Any:
    # Importing the reward trainer (or `tnd reward`) must not pull in the PPO trainer.
    if name == "CustomPPOTrainer":
        from tnd_core.trainers.ppo_trainer.ppo import CustomPPOTrainer

        return CustomPPOTrainer
    raise AttributeError(f"module 'tnd_core.trainers' has no attribute {name!r}")
