"""Two kinds of early stopping: of a batch's PPO epochs (target_kl) and of the whole run (patience)."""

from __future__ import annotations

from typing import Any


class EarlyStopping:
    """Epoch level: stop a batch's remaining epochs once policy KL > 1.5 * target_kl (TRL 0.11).

    Run level: stop the run after `patience` PPO steps in a row (every PPO step counts, logged or not;
    CLM steps do not) without a mean reward above the best by more than `min_delta`; patience 0 turns it off.
    """

    def __init__(self, enabled: bool, target_kl: float, patience: int = 0, min_delta: float = 0.0):
        self.enabled = enabled
        self.target_kl = target_kl
        self.patience = patience
        self.min_delta = min_delta
        self.best_reward: float | None = None
        self.steps_without_improvement = 0

    def stop_epochs(self, policykl: float) -> bool:
        """True when the remaining PPO epochs of this batch should be skipped."""
        return self.enabled and policykl > 1.5 * self.target_kl

    def stop_run(self, reward_mean: float) -> bool:
        """Record a PPO step's mean reward; True when patience has run out."""
        if self.patience == 0:
            return False
        if self.best_reward is None or reward_mean > self.best_reward + self.min_delta:
            self.best_reward = reward_mean
            self.steps_without_improvement = 0
        else:
            self.steps_without_improvement += 1
        return self.steps_without_improvement >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"best_reward": self.best_reward, "steps_without_improvement": self.steps_without_improvement}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_reward = state["best_reward"]
        self.steps_without_improvement = state["steps_without_improvement"]
