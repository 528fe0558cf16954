"""The schedule's CLM steps: a plain causal-LM update on corpus text (docs/ALGORITHM.md, "CLM steps")."""

from __future__ import annotations

import math
from typing import Any

import torch

from tnd_core import stats as S
from tnd_core.config import CustomPPOConfig
from tnd_core.errors import TrainingDiverged
from tnd_core.trainers.ppo_trainer.batch import positions
from tnd_core.trainers.ppo_trainer.engine import Engine
from tnd_core.trainers.ppo_trainer.losses import clm_loss, selective_log_softmax


def clm_step(
    engine: Engine,
    config: CustomPPOConfig,
    tokenizer: Any,
    texts: list[str],
    *,
    max_positions: int | None,
    step: int,
    last_checkpoint: str | None,
) -> dict[str, float]:
    """One CLM update on `texts`, in mini-batches; `step` and `last_checkpoint` name a divergence."""
    t0 = engine.timer()
    # Each text ends with EOS, as the bundle's teacher learned it: a student that never sees EOS never stops.
    eos = tokenizer.eos_token or ""
    max_length = min(config.max_prompt_length + config.max_new_tokens, max_positions or math.inf)
    enc = tokenizer(
        [t + eos for t in texts],
        truncation=True,
        max_length=max_length,
        padding=True,
        padding_side="right",
        return_tensors="pt",
    )
    ids, attn = enc["input_ids"].to(engine.device), enc["attention_mask"].to(engine.device)
    pos = positions(attn)
    engine.model.train()
    losses = []
    for start in range(0, len(ids), config.mini_batch_size):
        sl = slice(start, start + config.mini_batch_size)
        with engine.accelerator.accumulate(engine.model):
            logits, values = engine.model(ids[sl], attn[sl], pos[sl])
            logprobs = selective_log_softmax(logits[:, :-1].float(), ids[sl, 1:])
            loss = clm_loss(logprobs, attn[sl, 1:].float())
            # The value head takes no part here; a zero-weighted term keeps DDP's gradient buckets complete.
            engine.backward_and_step(loss + 0.0 * values.sum())
        losses.append(loss.detach())
    mean_loss = engine.reduce_mean(torch.stack(losses).mean().reshape(1))
    if not torch.isfinite(mean_loss).all():
        raise TrainingDiverged(
            "the CLM loss", step, last_checkpoint, "Try a lower learning_rate or a smaller max_grad_norm."
        )
    return {
        S.CLM_LOSS: float(mean_loss.item()),
        S.LEARNING_RATE: engine.learning_rate,
        S.TIME_OPTIMIZE: engine.timer() - t0,
    }
