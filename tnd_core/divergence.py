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
