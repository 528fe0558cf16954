"""Divergences between a teacher's and a student's next-token distributions, per position.

The one place the forward KL (and its relatives) is written: the distillation loss, the
teacher-student KL statistic, the held-out evaluation and Compare's per-token colouring all call it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

DIVERGENCES = ("forward_kl", "reverse_kl", "jsd")


def kd_divergence(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    divergence: str,
    temperature: float = 1.0,
    beta: float = 0.5,
) -> torch.Tensor:
    """Per-position divergence between teacher p and student q at temperature T ([B, R]).

    forward_kl: KL(p || q);  reverse_kl: KL(q || p);  jsd: beta * KL(p || m) + (1 - beta) * KL(q || m)
    with m = beta * p + (1 - beta) * q (the generalised JSD of GKD, Agarwal et al. 2024, as in TRL's GKDTrainer).
    """
    log_q = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_p = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    if divergence == "forward_kl":
        return (log_p.exp() * (log_p - log_q)).sum(-1)
    if divergence == "reverse_kl":
        return (log_q.exp() * (log_q - log_p)).sum(-1)
    if divergence == "jsd":
        # The end points follow GKD's convention: beta=0 is forward KL, beta=1 reverse KL.
        if beta == 0.0:
            return kd_divergence(student_logits, teacher_logits, "forward_kl", temperature)
        if beta == 1.0:
            return kd_divergence(student_logits, teacher_logits, "reverse_kl", temperature)
        log_m = torch.logaddexp(log_p + math.log(beta), log_q + math.log1p(-beta))
        kl_p = (log_p.exp() * (log_p - log_m)).sum(-1)
        kl_q = (log_q.exp() * (log_q - log_m)).sum(-1)
        return beta * kl_p + (1.0 - beta) * kl_q
    raise ValueError(f"unknown divergence {divergence!r}; one of {', '.join(DIVERGENCES)}")


PROBABILITY_FLOOR = 1e-12  # log of the rank-matched distribution's empty ranks: finite, so 0 * log 0 stays 0


def sorted_probabilities(logits: torch.Tensor, size: int, temperature: float = 1.0) -> torch.Tensor:
    """Next-token probabilities sorted in decreasing order, cut or zero-padded to `size` ranks ([..., size])."""
    probs = F.softmax(logits.float() / temperature, dim=-1).sort(dim=-1, descending=True).values
    if probs.shape[-1] >= size:
        return probs[..., :size]
    return F.pad(probs, (0, size - probs.shape[-1]))


def sorted_l1(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Universal Logit Distillation's distance (Boizard et al. 2024) per position: the L1 distance between the
    two sorted probability vectors, the smaller vocabulary zero-padded. It needs no shared vocabulary; it is 0
    when the two distributions are permutations of each other ([B, R])."""
    size = max(student_logits.shape[-1], teacher_logits.shape[-1])
    q = sorted_probabilities(student_logits, size, temperature)
    p = sorted_probabilities(teacher_logits, size, temperature)
    return (p - q).abs().sum(-1)


def rank_matched_logits(student_logits: torch.Tensor, teacher_sorted: torch.Tensor) -> torch.Tensor:
    """Log-probabilities over the student's vocabulary that put the teacher's k-th largest probability on the
    student's k-th most likely token (`teacher_sorted`: [..., K] sorted decreasingly, cut to the student's
    vocabulary and renormalised here). Distilling towards them matches the student's sorted probability
    vector to the teacher's, as ULD does, with the usual divergences ([..., V_student])."""
    vocab = student_logits.shape[-1]
    target = teacher_sorted[..., :vocab].float()
    target = F.pad(target, (0, vocab - target.shape[-1])).clamp(min=PROBABILITY_FLOOR)
    target = target / target.sum(-1, keepdim=True)
    order = student_logits.float().argsort(dim=-1, descending=True)
    return torch.empty_like(target).scatter_(-1, order, target.log())
