"""PPO and distillation math as small pure functions (names follow docs/ALGORITHM.md and TRL 0.11).

Shapes: B samples, R response positions, V vocabulary. `mask` is 1 on response tokens that count
(up to and including the first EOS) and 0 on padding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from trl.trainer.utils import entropy_from_logits, selective_log_softmax

from tnd_core.divergence import kd_divergence

__all__ = [
    "clm_loss",
    "compute_advantages",
    "compute_rewards",
    "entropy_from_logits",
    "kd_loss",
    "kl_penalty",
    "masked_mean",
    "masked_var",
    "masked_whiten",
    "policy_loss",
    "response_mask",
    "selective_log_softmax",
    "value_loss",
]


def masked_mean(values: torch.Tensor, mask: torch.Tensor, axis: int | None = None) -> torch.Tensor:
    """Mean of `values` where `mask` is 1."""
    if axis is not None:
        return (values * mask).sum(axis=axis) / mask.sum(axis=axis)
    return (values * mask).sum() / mask.sum()


def masked_var(values: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of `values` where `mask` is 1 (Bessel-corrected by default, as TRL 0.11)."""
    mean = masked_mean(values, mask)
    variance = masked_mean((values - mean) ** 2, mask)
    if unbiased:
        n = mask.sum()
        variance = variance * n / (n - 1).clamp(min=1)
    return variance


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """(x - mean) / std over the masked entries; with shift_mean=False the mean is added back."""
    mean, var = masked_mean(values, mask), masked_var(values, mask)
    whitened = (values - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        whitened = whitened + mean
    return whitened


def response_mask(responses: torch.Tensor, eos_token_id: int | None, valid: torch.Tensor | None = None) -> torch.Tensor:
    """1 up to and including the first EOS of each row, 0 after it (and wherever `valid` is 0)."""
    mask = torch.ones_like(responses, dtype=torch.float32) if valid is None else valid.float()
    if eos_token_id is not None:
        is_eos = (responses == eos_token_id).long()
        eos_before = is_eos.cumsum(-1) - is_eos
        mask = mask * (eos_before == 0).float()
    return mask


def kl_penalty(
    logprob: torch.Tensor,
    ref_logprob: torch.Tensor,
    kind: str,
    full_logprobs: torch.Tensor | None = None,
    ref_full_logprobs: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-token KL estimate kl_t between the policy and the reference ([B, R])."""
    if kind == "kl":
        return logprob - ref_logprob
    if kind == "abs":
        return (logprob - ref_logprob).abs()
    if kind == "mse":
        return 0.5 * (logprob - ref_logprob).square()
    if kind == "full":
        # KL(policy || ref) over the vocabulary; F.kl_div(input, target) computes KL(target || input).
        return F.kl_div(ref_full_logprobs, full_logprobs, log_target=True, reduction="none").sum(-1)
    raise ValueError(f"unknown kl_penalty {kind!r}")


def compute_rewards(
    scores: torch.Tensor, kls: torch.Tensor, mask: torch.Tensor, kl_coef: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """r_t = -beta * kl_t on every response token, plus the score at the last response token.

    Returns (rewards, non_score_rewards), both [B, R].
    """
    non_score_rewards = -kl_coef * kls
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    last = torch.where(mask.bool(), positions, -1).max(dim=1).values
    score_at_last = torch.zeros_like(non_score_rewards)
    score_at_last.scatter_(1, last.clamp(min=0).unsqueeze(1), scores.to(non_score_rewards.dtype).unsqueeze(1))
    return non_score_rewards + score_at_last, non_score_rewards


def compute_advantages(
    values: torch.Tensor,
    rewards: torch.Tensor,
    mask: torch.Tensor,
    gamma: float,
    lam: float,
    whiten_rewards: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """GAE backwards over response tokens, then whitened advantages.

    delta_t = r_t + gamma * V_{t+1} - V_t;  A_t = delta_t + gamma * lam * A_{t+1};  returns = A + V.
    Returns (masked values, whitened advantages, returns).
    """
    values = values * mask
    rewards = rewards * mask
    if whiten_rewards:
        # Re-mask: TRL 0.11 left whitened values on padding, which leaked into the GAE of the last token.
        rewards = masked_whiten(rewards, mask, shift_mean=False) * mask
    gen_len = rewards.shape[-1]
    lastgaelam = torch.zeros_like(rewards[:, 0])
    advantages_reversed = []
    for t in reversed(range(gen_len)):
        nextvalues = values[:, t + 1] if t < gen_len - 1 else 0.0
        delta = rewards[:, t] + gamma * nextvalues - values[:, t]
        lastgaelam = delta + gamma * lam * lastgaelam
        advantages_reversed.append(lastgaelam)
    advantages = torch.stack(advantages_reversed[::-1], dim=1)
    returns = advantages + values
    advantages = masked_whiten(advantages, mask).detach()
    return values, advantages, returns


def policy_loss(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, cliprange: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Clipped surrogate L_pg = mean(max(-A * rho, -A * clip(rho, 1 - eps, 1 + eps))).

    Returns (loss, clip fraction, ratio rho).
    """
    ratio = torch.exp(logprobs - old_logprobs)
    pg_losses = -advantages * ratio
    pg_losses2 = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.max(pg_losses, pg_losses2), mask)
    clipfrac = masked_mean(torch.gt(pg_losses2, pg_losses).float(), mask)
    return loss, clipfrac, ratio


def value_loss(
    vpreds: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, cliprange_value: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped value loss L_v = 0.5 * mean(max((V - R)^2, (clip(V, V_old +- eps_v) - R)^2)).

    Returns (loss, clip fraction).
    """
    vpredclipped = torch.max(torch.min(vpreds, old_values + cliprange_value), old_values - cliprange_value)
    vf_losses1 = (vpreds - returns) ** 2
    vf_losses2 = (vpredclipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.max(vf_losses1, vf_losses2), mask)
    clipfrac = masked_mean(torch.gt(vf_losses2, vf_losses1).float(), mask)
    return loss, clipfrac


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor,
    divergence: str,
    temperature: float = 1.0,
    beta: float = 0.5,
) -> torch.Tensor:
    """L_kd: masked mean of the divergence over response tokens, scaled by T^2 (Hinton et al. 2015)."""
    per_token = kd_divergence(student_logits, teacher_logits, divergence, temperature, beta)
    return masked_mean(per_token, mask) * temperature**2


def clm_loss(logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Causal-LM loss: mean negative log-likelihood of the masked tokens."""
    return masked_mean(-logprobs, mask)
