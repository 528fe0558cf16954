"""The PPO update of one batch, read top to bottom (docs/ALGORITHM.md, "One PPO step").

1. one no-grad pass: old log-probabilities and values of the policy, the reference's log-probabilities,
   the per-token KL penalty, and the teacher's logits (kept for every epoch's distillation loss);
2. per-token rewards (score at the last token, -beta * KL everywhere) and GAE advantages;
3. `ppo_epochs` passes over shuffled mini-batches: clipped policy loss, clipped value loss, entropy
   bonus, logit distillation and a CLM term, one backward and optimizer step each;
4. early stopping on the policy KL, the KL controller's update, and the named statistics.

With distillation, demos, CLM and entropy off this is TRL 0.11.4's `PPOTrainer.step`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from tnd_core import stats as S
from tnd_core.config import CustomPPOConfig
from tnd_core.divergence import kd_divergence
from tnd_core.errors import TrainingDiverged
from tnd_core.trainers.ppo_trainer.batch import PPOBatch
from tnd_core.trainers.ppo_trainer.early_stopping import EarlyStopping
from tnd_core.trainers.ppo_trainer.engine import Engine
from tnd_core.trainers.ppo_trainer.kl_control import FixedKLController
from tnd_core.trainers.ppo_trainer.losses import (
    clm_loss,
    compute_advantages,
    compute_rewards,
    entropy_from_logits,
    kd_loss,
    kl_penalty,
    masked_mean,
    policy_loss,
    selective_log_softmax,
    value_loss,
)


@torch.no_grad()
def old_policy_pass(
    engine: Engine, config: CustomPPOConfig, batch: PPOBatch, teacher: Any, reference: Any
) -> tuple[dict[str, torch.Tensor], float]:
    """Step 1: what the policy, the reference and the teacher say about the batch before any update.

    `reference` is the frozen initial student, or None when the teacher is the KL reference. Also
    returns the seconds spent in the teacher.
    """
    keep = batch.response_len + 1
    parts: dict[str, list[torch.Tensor]] = {
        k: [] for k in ("logprobs", "values", "ref_logprobs", "kls", "ts_kl", "teacher_logits")
    }
    teacher_s = 0.0
    chunk_size = 4 * config.mini_batch_size * config.gradient_accumulation_steps  # no-grad passes hold no activations
    for chunk in batch.chunks(chunk_size):
        tokens = chunk.responses
        logits, values = engine.model(chunk.input_ids, chunk.attention_mask, chunk.position_ids, logits_to_keep=keep)
        logits, values = logits[:, :-1].float(), values[:, :-1].float()
        policy_logits = logits / config.temperature
        logprobs = selective_log_softmax(policy_logits, tokens)
        teacher_logits = None
        if teacher is not None:
            t0 = engine.timer()
            with engine.accelerator.autocast():
                teacher_logits = teacher.get_teacher_logits(
                    chunk.input_ids, chunk.attention_mask, chunk.position_ids, logits_to_keep=keep
                )
            teacher_logits = teacher_logits[:, :-1]
            teacher_s += engine.timer() - t0
        if reference is None:
            ref_logits = teacher_logits.float()
        else:
            with engine.accelerator.autocast():
                ref_logits = reference(chunk.input_ids, chunk.attention_mask, chunk.position_ids, logits_to_keep=keep)[
                    0
                ]
            ref_logits = ref_logits[:, :-1].float()
        ref_policy_logits = ref_logits / config.temperature
        ref_logprobs = selective_log_softmax(ref_policy_logits, tokens)
        if config.kl_penalty == "full":
            kls = kl_penalty(
                logprobs, ref_logprobs, "full", policy_logits.log_softmax(-1), ref_policy_logits.log_softmax(-1)
            )
        else:
            kls = kl_penalty(logprobs, ref_logprobs, config.kl_penalty)
        parts["logprobs"].append(logprobs)
        parts["values"].append(values)
        parts["ref_logprobs"].append(ref_logprobs)
        parts["kls"].append(kls)
        if teacher_logits is not None:
            parts["ts_kl"].append(kd_divergence(logits, teacher_logits, "forward_kl"))
            if config.distill_coef > 0:
                parts["teacher_logits"].append(teacher_logits)
    return {k: torch.cat(v) for k, v in parts.items() if v}, teacher_s


def ppo_update(
    engine: Engine,
    config: CustomPPOConfig,
    batch: PPOBatch,
    scores: torch.Tensor,
    is_demo: torch.Tensor,
    *,
    teacher: Any,
    reference: Any,
    kl_ctl: FixedKLController,
    early_stopping: EarlyStopping,
    step: int,
    last_checkpoint: str | None,
) -> dict[str, float]:
    """Rewards, advantages and `ppo_epochs` passes of clipped PPO (+ distillation, entropy, CLM) over `batch`.

    `scores` are the processed scores, one per sample; `step` and `last_checkpoint` go into the
    error raised when the loss becomes NaN or infinite.
    """
    c = config
    t_start = engine.timer()
    engine.model.train()
    mask = batch.mask

    # 1-2. the old policy, rewards and advantages
    old, teacher_s = old_policy_pass(engine, c, batch, teacher, reference)
    kl_coef = kl_ctl.value
    rewards, non_score_rewards = compute_rewards(scores, old["kls"], mask, kl_coef)
    old_values, advantages, returns = compute_advantages(old["values"], rewards, mask, c.gamma, c.lam, c.whiten_rewards)
    teacher_logits = old.get("teacher_logits")

    # 3. the epochs
    n = len(batch)
    minibatch_stats: list[dict[str, torch.Tensor]] = []
    epochs_run, early_stopped = 0, False
    for _ in range(c.ppo_epochs):
        order = torch.from_numpy(np.random.permutation(n)).to(mask.device)
        epoch_losses = []
        for start in range(0, n, c.mini_batch_size):
            idx = order[start : start + c.mini_batch_size]
            mb, mb_mask = batch.select(idx), mask[idx]
            mb_old_logprobs, mb_returns = old["logprobs"][idx], returns[idx]
            with engine.accelerator.accumulate(engine.model):
                logits, vpreds = engine.model(
                    mb.input_ids, mb.attention_mask, mb.position_ids, logits_to_keep=mb.response_len + 1
                )
                logits, vpreds = logits[:, :-1].float(), vpreds[:, :-1].float()
                policy_logits = logits / c.temperature
                logprobs = selective_log_softmax(policy_logits, mb.responses)

                pg_loss, pg_clipfrac, ratio = policy_loss(
                    logprobs, mb_old_logprobs, advantages[idx], mb_mask, c.cliprange
                )
                vf_loss, vf_clipfrac = value_loss(vpreds, old_values[idx], mb_returns, mb_mask, c.cliprange_value)
                loss = pg_loss + c.vf_coef * vf_loss
                with torch.set_grad_enabled(c.entropy_coef > 0):
                    entropy = masked_mean(entropy_from_logits(policy_logits), mb_mask)
                if c.entropy_coef > 0:
                    loss = loss - c.entropy_coef * entropy  # minus: a positive coefficient raises entropy
                distill = torch.zeros((), device=loss.device)
                if teacher_logits is not None:
                    distill = kd_loss(
                        logits, teacher_logits[idx], mb_mask, c.divergence, c.distill_temperature, c.jsd_beta
                    )
                    loss = loss + c.distill_coef * distill
                clm = torch.zeros((), device=loss.device)
                if c.clm_coef > 0:
                    # the CLM term learns the sampled text itself, at temperature 1
                    lm_logprobs = logprobs if c.temperature == 1.0 else selective_log_softmax(logits, mb.responses)
                    clm = clm_loss(lm_logprobs, mb_mask)
                    loss = loss + c.clm_coef * clm

                # ratio_threshold (TRL 0.11): a mini-batch whose mean ratio is too large contributes nothing.
                keep = (masked_mean(ratio, mb_mask).detach() <= c.ratio_threshold).float()
                loss, pg_loss, vf_loss = loss * keep, pg_loss * keep, vf_loss * keep
                engine.backward_and_step(loss)

            with torch.no_grad():
                minibatch_stats.append(
                    {
                        S.LOSS_POLICY: pg_loss.detach(),
                        S.LOSS_VALUE: vf_loss.detach(),
                        S.LOSS_DISTILL: distill.detach(),
                        S.LOSS_CLM: clm.detach(),
                        S.LOSS_TOTAL: loss.detach(),
                        S.POLICY_ENTROPY: entropy.detach(),
                        S.APPROX_KL: 0.5 * masked_mean((logprobs - mb_old_logprobs) ** 2, mb_mask),
                        S.POLICY_KL: masked_mean(mb_old_logprobs - logprobs, mb_mask),
                        S.CLIPFRAC: pg_clipfrac,
                        S.VALUE_PRED: masked_mean(vpreds, mb_mask),
                        S.VALUE_ERROR: masked_mean((vpreds - mb_returns) ** 2, mb_mask),
                        S.VALUE_CLIPFRAC: vf_clipfrac,
                        S.RETURNS_MEAN: masked_mean(mb_returns, mb_mask),
                        S.SKIPPED_MINIBATCHES: 1.0 - keep,
                    }
                )
            epoch_losses.append(loss.detach())
        epochs_run += 1

        # 4. one sync per epoch: the last mini-batch's policy KL (TRL 0.11's early-stop test) and a NaN check
        check = torch.stack(
            [minibatch_stats[-1][S.POLICY_KL], (~torch.isfinite(torch.stack(epoch_losses))).any().float()]
        )
        policykl, nonfinite = engine.reduce_mean(check).tolist()
        if nonfinite > 0:
            hint = "Try a lower learning_rate, a smaller max_grad_norm, or score_clip."
            raise TrainingDiverged("the PPO loss", step, last_checkpoint, hint)
        if early_stopping.stop_epochs(policykl):
            engine.optimizer.zero_grad()
            early_stopped = True
            break

    # the statistics: rollout quantities, then the mean of every mini-batch's, in one device sync
    trials = (~is_demo).float()
    response_len = mask.sum(-1)
    rollout = {
        S.KL: (old["kls"] * mask).sum(-1).mean(),
        S.KL_COEF: torch.tensor(kl_coef, device=mask.device),
        S.ENTROPY: (-old["logprobs"] * mask).sum(-1).mean(),
        S.MEAN_NON_SCORE_REWARD: masked_mean(non_score_rewards, mask),
        S.MEAN_SCORES: scores.mean(),
        S.RESPONSE_LEN_MEAN: response_len.float().mean(),
    }
    if "ts_kl" in old:
        # the teacher-student gap is measured on the student's own trials; a batch of demos only falls back to all
        trial_mask = mask * trials.unsqueeze(1) if trials.any() else mask
        rollout[S.TEACHER_STUDENT_KL] = masked_mean(old["ts_kl"], trial_mask)
    per_minibatch = torch.stack([torch.stack([row[name] for name in S.MINIBATCH]) for row in minibatch_stats])
    means = dict(zip(S.MINIBATCH, per_minibatch.float().mean(0)))
    names = [*rollout, *means]
    values = torch.stack([v.float() for v in [*rollout.values(), *means.values()]])
    result = dict(zip(names, engine.reduce_mean(values).tolist()))

    kl_ctl.update(result[S.KL], n * engine.accelerator.num_processes)
    elapsed = engine.timer() - t_start
    n_tokens = result[S.RESPONSE_LEN_MEAN] * n
    result.update(
        {
            S.LEARNING_RATE: engine.learning_rate,
            S.EARLY_STOPPED: float(early_stopped),
            S.EPOCHS_RUN: float(epochs_run),
            S.TIME_TEACHER: teacher_s,
            S.TIME_OPTIMIZE: elapsed - teacher_s,
            S.SAMPLES_PER_S: n / max(elapsed, 1e-9),
            S.TOKENS_PER_S: n_tokens / max(elapsed, 1e-9),
        }
    )
    engine.free_cache()
    return result
