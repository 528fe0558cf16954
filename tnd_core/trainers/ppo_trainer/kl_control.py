"""KL coefficient (beta) controllers of the per-token KL penalty (Ziegler et al. 2019; TRL 0.11)."""

from __future__ import annotations

from typing import Any

import numpy as np


class FixedKLController:
    """beta stays at its initial value."""

    def __init__(self, kl_coef: float):
        self.value = kl_coef

    def update(self, current: float, n_steps: int) -> None:
        """Nothing to adapt."""

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.value = state["value"]


class AdaptiveKLController(FixedKLController):
    """e = clip(KL / target - 1, -0.2, 0.2);  beta <- beta * (1 + e * n / horizon)."""

    def __init__(self, init_kl_coef: float, target: float, horizon: float):
        super().__init__(init_kl_coef)
        self.target = target
        self.horizon = horizon

    def update(self, current: float, n_steps: int) -> None:
        """Move beta towards the value that keeps the observed KL near `target`; n_steps = samples in the batch."""
        proportional_error = float(np.clip(current / self.target - 1, -0.2, 0.2))
        self.value *= 1 + proportional_error * n_steps / self.horizon


def make_kl_controller(config: Any) -> FixedKLController:
    """The controller a CustomPPOConfig asks for."""
    if config.adap_kl_ctrl:
        return AdaptiveKLController(config.init_kl_coef, config.target, config.horizon)
    return FixedKLController(config.init_kl_coef)
