"""Scores before they become rewards: TnD shaping, running moments, scaling, normalisation, clipping."""

from __future__ import annotations

from typing import Any, Callable

import torch


class RunningMoments:
    """Running mean and std of every score seen (Chan et al. parallel update, as TRL 0.11)."""

    def __init__(self) -> None:
        self.mean = 0.0
        self.std = 1.0
        self.var = 1.0
        self.count = 1e-24

    @torch.no_grad()
    def update(self, xs: torch.Tensor) -> tuple[float, float]:
        """Fold a batch in; returns the batch's own mean and (unbiased) std."""
        xs = xs.float()
        xs_count = xs.numel()
        xs_var, xs_mean = torch.var_mean(xs, unbiased=False)
        xs_mean, xs_var = xs_mean.item(), xs_var.item()
        delta = xs_mean - self.mean
        tot_count = self.count + xs_count
        new_sum = xs_var * xs_count
        old_sum = self.var * self.count + delta**2 * self.count * xs_count / tot_count
        self.mean += delta * xs_count / tot_count
        new_var = (old_sum + new_sum) / tot_count
        self.std = (new_var * tot_count / (tot_count - 1)) ** 0.5
        self.var = new_var
        self.count = tot_count
        return xs_mean, (xs_var * xs_count / max(xs_count - 1, 1)) ** 0.5

    def state_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "std": self.std, "var": self.var, "count": self.count}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.mean, self.std, self.var, self.count = state["mean"], state["std"], state["var"], state["count"]


class ScoreProcessor:
    """use_score_scaling: s / (std + eps); with use_score_norm: (s - mean) / (std + eps); score_clip last.

    `gather` collects the scores of every process so that all ranks keep the same moments.
    """

    def __init__(
        self,
        use_score_scaling: bool,
        use_score_norm: bool,
        score_clip: float | None,
        gather: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        self.use_score_scaling = use_score_scaling
        self.use_score_norm = use_score_norm
        self.score_clip = score_clip
        self.running = RunningMoments()
        self.gather = gather or (lambda t: t)

    def __call__(self, scores: torch.Tensor) -> torch.Tensor:
        if self.use_score_scaling:
            self.running.update(self.gather(scores))
            eps = torch.finfo(scores.dtype).eps
            if self.use_score_norm:
                scores = (scores - self.running.mean) / (self.running.std + eps)
            else:
                scores = scores / (self.running.std + eps)
        if self.score_clip is not None:
            scores = torch.clamp(scores, -self.score_clip, self.score_clip)
        return scores

    def state_dict(self) -> dict[str, Any]:
        return {"running": self.running.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.running.load_state_dict(state["running"])


def shape_scores(scores: torch.Tensor, mode: str, baseline: float) -> torch.Tensor:
    """TnD reward shaping against a baseline b: sub -> s - b, div -> s / b, bin -> -1 if s < b else s."""
    if mode == "none":
        return scores
    if mode == "sub":
        return scores - baseline
    if mode == "div":
        return scores / baseline
    if mode == "bin":
        return torch.where(scores < baseline, torch.full_like(scores, -1.0), scores)
    raise ValueError(f"unknown reward_shaping {mode!r}")
