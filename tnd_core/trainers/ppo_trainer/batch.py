"""The layout of a PPO batch: left-padded queries, right-padded responses, masks.

Layout of a batch: every row is [query block | response block]. Queries are left-padded to a common
length P and responses right-padded to a common length R, so response token t of every row sits at
column P + t and its logits come from column P + t - 1: no per-row gathering is needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from tnd_core.errors import ConfigError
from tnd_core.trainers.ppo_trainer.losses import response_mask


@dataclass
class PPOBatch:
    """Token ids [N, P + R] with their masks; `mask` [N, R] marks the response tokens that count."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    mask: torch.Tensor
    query_len: int

    @property
    def responses(self) -> torch.Tensor:
        return self.input_ids[:, self.query_len :]

    @property
    def response_len(self) -> int:
        return self.input_ids.shape[1] - self.query_len

    def select(self, idx: torch.Tensor) -> "PPOBatch":
        return PPOBatch(
            self.input_ids[idx], self.attention_mask[idx], self.position_ids[idx], self.mask[idx], self.query_len
        )

    def chunks(self, size: int) -> list["PPOBatch"]:
        return [
            self.select(torch.arange(s, min(s + size, len(self.input_ids))))
            for s in range(0, len(self.input_ids), size)
        ]

    def __len__(self) -> int:
        return len(self.input_ids)


def positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that start at 0 on the first real token (left padding aware)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def left_pad(
    seqs: Sequence[torch.Tensor], pad_id: int, device: torch.device | str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack 1-D tensors left-padded; returns (ids, attention_mask)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long, device=device)
    attn = torch.zeros((len(seqs), width), dtype=torch.long, device=device)
    for i, s in enumerate(seqs):
        if len(s):
            ids[i, width - len(s) :] = s
            attn[i, width - len(s) :] = 1
    return ids, attn


def right_pad(
    seqs: Sequence[torch.Tensor], pad_id: int, device: torch.device | str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack 1-D tensors right-padded; returns (ids, valid mask)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long, device=device)
    valid = torch.zeros((len(seqs), width), dtype=torch.long, device=device)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s
        valid[i, : len(s)] = 1
    return ids, valid


def make_batch(
    query_ids: torch.Tensor,
    query_attn: torch.Tensor,
    response_ids: torch.Tensor,
    response_valid: torch.Tensor,
    eos_token_id: int | None,
) -> PPOBatch:
    """Join a left-padded query block and a right-padded response block; tokens after the first EOS don't count."""
    mask = response_mask(response_ids, eos_token_id, response_valid)
    attention_mask = torch.cat([query_attn, response_valid.long()], dim=1)
    return PPOBatch(
        input_ids=torch.cat([query_ids, response_ids], dim=1),
        attention_mask=attention_mask,
        position_ids=positions(attention_mask),
        mask=mask,
        query_len=query_ids.shape[1],
    )


def check_samples(queries: Sequence[Any], responses: Sequence[Any], scores: Sequence[Any], per_update: int) -> None:
    """Refuse samples `step()` cannot train on, naming what is wrong."""
    if not (len(queries) == len(responses) == len(scores)):
        lengths = f"{len(queries)}, {len(responses)}, {len(scores)}"
        raise ConfigError(
            "queries", len(queries), f"queries, responses and scores must have the same length (got {lengths})"
        )
    for name, seqs in (("queries", queries), ("responses", responses)):
        bad = next(
            (i for i, s in enumerate(seqs) if not isinstance(s, torch.Tensor) or s.ndim != 1 or len(s) == 0), None
        )
        if bad is not None:
            raise ConfigError(name, f"item {bad}", "must be non-empty 1-D tensors of token ids")
    if len(queries) % per_update:
        allowed = (
            f"the number of samples must be a multiple of mini_batch_size * gradient_accumulation_steps = {per_update}"
        )
        raise ConfigError("queries", len(queries), allowed)


def batch_from_lists(
    queries: Sequence[torch.Tensor],
    responses: Sequence[torch.Tensor],
    pad_id: int,
    eos_token_id: int | None,
    device: torch.device | str,
) -> PPOBatch:
    """The batch of `step(queries, responses, scores)`: lists of 1-D token tensors."""
    q_ids, q_attn = left_pad([q.to(device) for q in queries], pad_id, device)
    r_ids, r_valid = right_pad([r.to(device) for r in responses], pad_id, device)
    return make_batch(q_ids, q_attn, r_ids, r_valid, eos_token_id)


def pad_width(ids: torch.Tensor, valid: torch.Tensor, width: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad a response block to `width` columns."""
    extra = width - ids.shape[1]
    if extra <= 0:
        return ids, valid
    return (
        torch.nn.functional.pad(ids, (0, extra), value=pad_id),
        torch.nn.functional.pad(valid, (0, extra), value=0),
    )


def decode_rows(tokenizer: Any, ids: torch.Tensor, keep: torch.Tensor) -> list[str]:
    """Decode the kept tokens of each row, without special tokens."""
    rows = [row[k.bool()].tolist() for row, k in zip(ids.cpu(), keep.cpu())]
    return tokenizer.batch_decode(rows, skip_special_tokens=True)
