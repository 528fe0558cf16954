"""Which kind of step comes when, how many optimizer updates a run makes, and which items each step reads.

A run is a sequence of cycles, each `clm_per_step` CLM steps then `ppo_per_step` PPO steps. Each
kind reads its own endless stream of items (prompts for PPO, corpus texts for CLM), shuffled anew
every epoch with a seed derived from the run's, so a resumed run reads exactly what the
uninterrupted one would have.
"""

from __future__ import annotations

import torch

from tnd_core.config import CustomPPOConfig


def step_kind(config: CustomPPOConfig, step: int) -> str:
    """'clm' or 'ppo' for 0-based step `step`."""
    return "clm" if step % (config.clm_per_step + config.ppo_per_step) < config.clm_per_step else "ppo"


def steps_of_kind_before(config: CustomPPOConfig, step: int, kind: str) -> int:
    """How many of the steps 0 .. step-1 are of `kind`."""
    cycle = config.clm_per_step + config.ppo_per_step
    full, pos = divmod(step, cycle)
    if kind == "clm":
        return full * config.clm_per_step + min(pos, config.clm_per_step)
    return full * config.ppo_per_step + max(0, pos - config.clm_per_step)


def samples_per_batch(config: CustomPPOConfig) -> int:
    """Samples in one PPO batch: the trials, and as many demos when demos are on."""
    return config.batch_size * (2 if config.use_teacher_demos else 1)


def total_optimizer_steps(config: CustomPPOConfig) -> int:
    """Optimizer updates of the whole run if no batch stops early (the learning-rate schedule's length)."""
    per_update = config.mini_batch_size * config.gradient_accumulation_steps
    ppo_steps = steps_of_kind_before(config, config.steps, "ppo")
    clm_steps = config.steps - ppo_steps
    ppo_updates = ppo_steps * config.ppo_epochs * (samples_per_batch(config) // per_update)
    return max(1, ppo_updates + clm_steps * (config.batch_size // per_update))


class ItemStream:
    """Indices of the items each process reads at each step of one kind, in per-epoch shuffled order."""

    def __init__(
        self, name: str, n_items: int, batch_size: int, seed: int, num_processes: int = 1, process_index: int = 0
    ):
        self.name, self.n_items, self.batch_size = name, n_items, batch_size
        self.num_processes, self.process_index = num_processes, process_index
        self._seed = seed * 1_000_003 + (1 if name == "clm" else 0)
        self._epoch = -1
        self._order = torch.empty(0, dtype=torch.long)

    def batch(self, stream_step: int) -> list[int]:
        """This process's item indices for the `stream_step`-th step of this kind."""
        start = (stream_step * self.num_processes + self.process_index) * self.batch_size
        out = []
        for pos in range(start, start + self.batch_size):
            epoch, offset = divmod(pos, self.n_items)
            out.append(int(self._permutation(epoch)[offset]))
        return out

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self._seed + epoch * 7919)
            self._epoch, self._order = epoch, torch.randperm(self.n_items, generator=generator)
        return self._order
