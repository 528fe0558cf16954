"""Generation from a student whose parameters are sharded across processes (FSDP, DeepSpeed ZeRO-3).

Under DDP and ZeRO-1/2 every process holds the whole student, and `accelerator.unwrap_model` is all that
generation needs. Under ZeRO-3 and FSDP each process holds a shard. The student's `generate` calls its inner
causal LM directly, past the hooks of the outermost wrapper, so the parameters that wrapper owns (under FSDP
with a per-layer wrap policy: the embeddings, the final norm and the value head) must be gathered around
generation; under ZeRO-3 all of them are gathered at once, which is also much faster than DeepSpeed fetching
each layer for every new token. This is what TRL's `unwrap_model_for_generation` does for ZeRO-3 and its
trainers' `summon_full_params(..., recurse=False)` for FSDP v1. None of these branches has run on GPUs in
this project: docs/MULTI_GPU.md says what is tested.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

from accelerate import Accelerator
from accelerate.utils import DistributedType


def sharding(accelerator: Accelerator) -> str:
    """How the prepared model's parameters are split: 'zero3', 'fsdp1', 'fsdp2', or 'none' (whole on each)."""
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        plugin = accelerator.state.deepspeed_plugin
        return "zero3" if plugin is not None and plugin.zero_stage == 3 else "none"
    if accelerator.distributed_type == DistributedType.FSDP:
        return "fsdp2" if getattr(accelerator, "is_fsdp2", False) else "fsdp1"
    return "none"


@contextlib.contextmanager
def unwrapped_for_generation(accelerator: Accelerator, model: Any) -> Iterator[Any]:
    """The prepared `model` without accelerate's wrappers, with the parameters generation needs gathered
    on this process until the block ends (then sharded again; nothing is written back)."""
    unwrapped = accelerator.unwrap_model(model)
    kind = sharding(accelerator)
    if kind == "zero3":
        import deepspeed
        from trl.models.utils import add_hooks, remove_hooks

        with deepspeed.zero.GatheredParameters(model.parameters()):
            remove_hooks(model)  # DeepSpeed's per-layer fetch and release would undo the gathering
            try:
                yield unwrapped
            finally:
                add_hooks(model)
    elif kind == "fsdp1":
        from torch.distributed.fsdp import FullyShardedDataParallel

        with FullyShardedDataParallel.summon_full_params(model, recurse=False, writeback=False):
            yield unwrapped
    elif kind == "fsdp2":
        model.unshard()
        try:
            yield unwrapped
        finally:
            model.reshard()
    else:
        yield unwrapped
