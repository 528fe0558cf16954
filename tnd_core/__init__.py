"""TnD Studio's library: PPO with teacher-student distillation (Trial-and-Demonstration learning)."""

from typing import Any

from tnd_core.config import CustomPPOConfig
from tnd_core.errors import ConfigError, TndError

__all__ = ["ConfigError", "CustomPPOConfig", "CustomPPOTrainer", "TndError"]


def __getattr__(name: str) -> Any:
    # The trainer pulls in torch and transformers; `tnd config` and the app's forms need neither.
    if name == "CustomPPOTrainer":
        from tnd_core.trainers.ppo_trainer.ppo import CustomPPOTrainer

        return CustomPPOTrainer
    raise AttributeError(f"module 'tnd_core' has no attribute {name!r}")
