"""A teacher with another tokenizer seen through the student's vocabulary, for logit distillation
(`cross_tokenizer_distill=uld`; docs/ALGORITHM.md, "Epochs and mini-batches", its bullet on distillation
across tokenizers).

The text of each sample is re-tokenised with the teacher's tokenizer; the teacher's next-token
distribution at its j-th response token is matched with the student's at the student's j-th response
token (index alignment, as Universal Logit Distillation does), by rank: the teacher's k-th largest
probability goes on the student's k-th most likely token (tnd_core.divergence.rank_matched_logits).
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from tnd_core.divergence import rank_matched_logits, sorted_probabilities

StudentLogits = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]


def _decode(tokenizer: Any, ids: torch.Tensor, keep: torch.Tensor) -> list[str]:
    rows = [row[k.bool()].tolist() for row, k in zip(ids.cpu(), keep.cpu())]
    return tokenizer.batch_decode(rows, skip_special_tokens=True)


class RankMatchedTeacher:
    """`get_teacher_logits` over the student's vocabulary for a teacher with another tokenizer.

    `student_logits(input_ids, attention_mask, position_ids, logits_to_keep)` gives the student's logits
    on the same batch (their ranks place the teacher's probabilities). Response positions the teacher's
    re-tokenised text does not reach get the student's own logits: no divergence there.
    """

    def __init__(self, teacher: Any, student_tokenizer: Any, student_logits: StudentLogits):
        self.teacher = teacher
        self.tokenizer = student_tokenizer
        self.student_logits = student_logits

    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return self.teacher.generate(input_ids, attention_mask, **kwargs)

    @torch.no_grad()
    def teacher_sorted(self, prompts: list[str], responses: list[str], width: int) -> list[torch.Tensor]:
        """For each sample, the teacher's sorted next-token probabilities at its first `width` response tokens."""
        tok = self.teacher.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        prompt_ids = tok(prompts, add_special_tokens=True)["input_ids"]
        response_ids = [ids[:width] for ids in tok(responses, add_special_tokens=False)["input_ids"]]
        rows = [p + r for p, r in zip(prompt_ids, response_ids)]
        device = next(iter(self.teacher.parameters())).device if hasattr(self.teacher, "parameters") else "cpu"
        ids = torch.full((len(rows), max(map(len, rows))), pad, dtype=torch.long, device=device)
        attn = torch.zeros_like(ids)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row, device=device)
            attn[i, : len(row)] = 1
        logits = self.teacher.get_teacher_logits(ids, attn, (attn.cumsum(-1) - 1).clamp(min=0))
        size = logits.shape[-1]
        out = []
        for i, (p, r) in enumerate(zip(prompt_ids, response_ids)):
            # the logits at position len(p) - 1 + j predict response token j
            start = max(len(p) - 1, 0)
            out.append(sorted_probabilities(logits[i, start : start + len(r)], size))
        return out

    @torch.no_grad()
    def get_teacher_logits(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        logits_to_keep: int = 0,
    ) -> torch.Tensor:
        """Rank-matched teacher log-probabilities [B, T or logits_to_keep, V_student] for a batch laid out as
        [left-padded prompt | right-padded response], the response being the last logits_to_keep - 1 columns."""
        if position_ids is None:
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        keep = logits_to_keep or input_ids.shape[1]
        student = self.student_logits(input_ids, attention_mask, position_ids, keep).float()
        start = input_ids.shape[1] - keep + 1
        prompts = _decode(self.tokenizer, input_ids[:, :start], attention_mask[:, :start])
        responses = _decode(self.tokenizer, input_ids[:, start:], attention_mask[:, start:])
        matched = student.clone()
        for i, teacher_sorted in enumerate(self.teacher_sorted(prompts, responses, keep - 1)):
            n = len(teacher_sorted)
            if n:
                matched[i, :n] = rank_matched_logits(student[i, :n], teacher_sorted.to(student.device))
        return matched
