"""Batches for PPO: prompts in, left-padded queries, sampled responses, masks out.

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
        return PPOBatch(self.input_ids[idx], self.attention_mask[idx], self.position_ids[idx], self.mask[idx], self.query_len)

    def chunks(self, size: int) -> list["PPOBatch"]:
        return [self.select(torch.arange(s, min(s + size, len(self.input_ids)))) for s in range(0, len(self.input_ids), size)]

    def __len__(self) -> int:
        return len(self.input_ids)


def positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that start at 0 on the first real token (left padding aware)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def left_pad(seqs: Sequence[torch.Tensor], pad_id: int, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack 1-D tensors left-padded; returns (ids, attention_mask)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long, device=device)
    attn = torch.zeros((len(seqs), width), dtype=torch.long, device=device)
    for i, s in enumerate(seqs):
        if len(s):
            ids[i, width - len(s) :] = s
            attn[i, width - len(s) :] = 1
    return ids, attn


def right_pad(seqs: Sequence[torch.Tensor], pad_id: int, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack 1-D tensors right-padded; returns (ids, valid mask)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long, device=device)
    valid = torch.zeros((len(seqs), width), dtype=torch.long, device=device)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s
        valid[i, : len(s)] = 1
    return ids, valid


def make_batch(
    query_ids: torch.Tensor, query_attn: torch.Tensor, response_ids: torch.Tensor, response_valid: torch.Tensor, eos_token_id: int | None
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


def batch_from_lists(
    queries: Sequence[torch.Tensor], responses: Sequence[torch.Tensor], pad_id: int, eos_token_id: int | None, device: torch.device | str
) -> PPOBatch:
    """The batch of `step(queries, responses, scores)`: lists of 1-D token tensors."""
    q_ids, q_attn = left_pad([q.to(device) for q in queries], pad_id, device)
    r_ids, r_valid = right_pad([r.to(device) for r in responses], pad_id, device)
    return make_batch(q_ids, q_attn, r_ids, r_valid, eos_token_id)


def generation_kwargs(config: Any, pad_token_id: int | None, eos_token_id: int | None) -> dict[str, Any]:
    """`generate` settings of trials and demos from the config (top_k 0 means off)."""
    kwargs: dict[str, Any] = {
        "max_new_tokens": config.max_new_tokens,
        "do_sample": config.do_sample,
        "pad_token_id": pad_token_id,
        "eos_token_id": eos_token_id,
    }
    if config.do_sample:
        kwargs.update(temperature=config.temperature, top_k=config.top_k or None, top_p=config.top_p)
    return kwargs


def sample(
    model: Any, query_ids: torch.Tensor, query_attn: torch.Tensor, generation_kwargs: dict[str, Any], pad_id: int, eos_token_id: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample continuations of left-padded queries; returns (response ids [N, R], valid mask)."""
    out = model.generate(query_ids, query_attn, **generation_kwargs)
    responses = out[:, query_ids.shape[1] :]
    if responses.shape[1] == 0:
        responses = torch.full((len(query_ids), 1), eos_token_id if eos_token_id is not None else pad_id, dtype=torch.long, device=query_ids.device)
    valid = response_mask(responses, eos_token_id).long()
    return responses, valid


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


def read_prompts(dataset: Any, column: str) -> list[str]:
    """Prompts from a datasets.Dataset, a list of strings or a torch Dataset of strings or dicts."""
    if dataset is None:
        raise ConfigError("train_dataset", None, "is required for train(): a datasets.Dataset, a list of strings or a torch Dataset")
    column_names = getattr(dataset, "column_names", None)
    if column_names is not None:
        if column not in column_names:
            raise ConfigError("prompt_column", column, f"must be one of the dataset's columns: {', '.join(column_names)}")
        prompts = list(dataset[column])
    elif isinstance(dataset, str):
        raise ConfigError("train_dataset", dataset[:40], "must be a collection of prompts, not one string")
    else:
        try:
            items = [dataset[i] for i in range(len(dataset))]
        except TypeError as exc:
            raise ConfigError("train_dataset", type(dataset).__name__, "must support len() and indexing") from exc
        prompts = [item[column] if isinstance(item, dict) else item for item in items]
    if not prompts:
        raise ConfigError("train_dataset", "empty", "must hold at least one prompt")
    bad = next((p for p in prompts if not isinstance(p, str)), None)
    if bad is not None:
        raise ConfigError("train_dataset", repr(bad)[:40], f"every prompt must be a string (column '{column}')")
    return prompts
