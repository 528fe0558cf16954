"""TnD Studio's library: PPO with teacher-student distillation (Trial-and-Demonstration learning)."""

from tnd_core.config import CustomPPOConfig
from tnd_core.errors import ConfigError, TndError
from tnd_core.trainers import CustomPPOTrainer

__all__ = ["ConfigError", "CustomPPOConfig", "CustomPPOTrainer", "TndError"]
