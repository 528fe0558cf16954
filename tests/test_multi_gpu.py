"""The multi-GPU examples (examples/accelerate/) and the gathering of sharded parameters around generation.

No GPU runs here: the YAML files are checked as accelerate reads them, and `unwrapped_for_generation` is
checked against stand-ins for FSDP and ZeRO-3 that record what was gathered and when.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
import transformers
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.utils import DistributedType

from tnd_core.config import CustomPPOConfig
from tnd_core.trainers.ppo_trainer.sharded_generation import sharding, unwrapped_for_generation

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((REPO / "examples" / "accelerate").glob("*.yaml"))
DEFAULTS = CustomPPOConfig()


def test_every_distributed_setup_has_an_example():
    kinds = {load_config_from_file(str(path)).distributed_type for path in EXAMPLES}
    assert kinds == {DistributedType.MULTI_GPU, DistributedType.FSDP, DistributedType.DEEPSPEED}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_parses_as_accelerate_reads_it(path):
    """accelerate refuses unknown keys and distributed types: what `accelerate launch --config_file` would."""
    config = load_config_from_file(str(path))
    assert config.distributed_type in (DistributedType.MULTI_GPU, DistributedType.FSDP, DistributedType.DEEPSPEED)
    assert config.num_processes >= 2 and not config.use_cpu
    assert "-m tnd_core.cli train --config" in path.read_text()  # each file says how to launch with it
    if config.distributed_type == DistributedType.FSDP:
        layer = config.fsdp_config["fsdp_transformer_layer_cls_to_wrap"]
        assert hasattr(transformers.models.gpt2.modeling_gpt2, layer)
    if config.distributed_type == DistributedType.DEEPSPEED:
        settings = json.loads((REPO / config.deepspeed_config["deepspeed_config_file"]).read_text())
        stage = settings["zero_optimization"]["stage"]
        assert path.stem.endswith(f"zero{stage}")
        # DeepSpeed takes these from its file: they must be the trainer's defaults, as the YAML's comment says
        assert settings["train_micro_batch_size_per_gpu"] == DEFAULTS.mini_batch_size
        assert settings["gradient_accumulation_steps"] == DEFAULTS.gradient_accumulation_steps
        assert settings["gradient_clipping"] == DEFAULTS.max_grad_norm


class FakeAccelerator:
    """What unwrapped_for_generation reads of an Accelerator."""

    def __init__(self, distributed_type, zero_stage=None, fsdp2=False):
        self.distributed_type = distributed_type
        plugin = types.SimpleNamespace(zero_stage=zero_stage) if zero_stage is not None else None
        self.state = types.SimpleNamespace(deepspeed_plugin=plugin)
        self.is_fsdp2 = fsdp2

    def unwrap_model(self, model):
        return model.inner


class ShardedModel:
    """A prepared model that records unshard/reshard (FSDP v2's calls on the outermost module)."""

    def __init__(self, log):
        self.log = log
        self.inner = types.SimpleNamespace(name="student")

    def unshard(self):
        self.log.append("gather")

    def reshard(self):
        self.log.append("release")

    def parameters(self):
        return iter(())


def generate_inside(accelerator, log):
    model = ShardedModel(log)
    with unwrapped_for_generation(accelerator, model) as unwrapped:
        log.append(f"generate with {unwrapped.name}")
    return log


def test_whole_models_are_only_unwrapped():
    for accelerator in (FakeAccelerator(DistributedType.MULTI_GPU), FakeAccelerator(DistributedType.DEEPSPEED, 2)):
        assert sharding(accelerator) == "none"
        assert generate_inside(accelerator, []) == ["generate with student"]


def test_fsdp2_unshards_the_outer_module_around_generation():
    accelerator = FakeAccelerator(DistributedType.FSDP, fsdp2=True)
    assert sharding(accelerator) == "fsdp2"
    assert generate_inside(accelerator, []) == ["gather", "generate with student", "release"]


def test_fsdp1_summons_the_outer_parameters_without_writing_back(monkeypatch):
    from torch.distributed.fsdp import FullyShardedDataParallel

    log = []

    class Summon:
        def __init__(self, module, recurse, writeback):
            log.append(f"gather recurse={recurse} writeback={writeback}")

        def __enter__(self):
            return None

        def __exit__(self, *exc):
            log.append("release")

    monkeypatch.setattr(FullyShardedDataParallel, "summon_full_params", Summon)
    accelerator = FakeAccelerator(DistributedType.FSDP)
    assert sharding(accelerator) == "fsdp1"
    assert generate_inside(accelerator, log) == [
        "gather recurse=False writeback=False",
        "generate with student",
        "release",
    ]


def test_zero3_gathers_every_parameter_and_restores_the_hooks(monkeypatch):
    log = []

    class Gathered:
        def __init__(self, parameters):
            log.append("gather")

        def __enter__(self):
            return None

        def __exit__(self, *exc):
            log.append("release")

    fake_deepspeed = types.SimpleNamespace(zero=types.SimpleNamespace(GatheredParameters=Gathered))
    monkeypatch.setitem(sys.modules, "deepspeed", fake_deepspeed)
    import trl.models.utils

    monkeypatch.setattr(trl.models.utils, "remove_hooks", lambda model: log.append("hooks off"))
    monkeypatch.setattr(trl.models.utils, "add_hooks", lambda model: log.append("hooks on"))
    accelerator = FakeAccelerator(DistributedType.DEEPSPEED, zero_stage=3)
    assert sharding(accelerator) == "zero3"
    assert generate_inside(accelerator, log) == ["gather", "hooks off", "generate with student", "hooks on", "release"]
