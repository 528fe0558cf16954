"""Two processes on CPU (torchrun + gloo): different prompts per rank, identical weights after training."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

WORKER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import torch
    sys.path[:0] = [{repo!r}, {tests!r}]
    torch.set_num_threads(1)
    from tnd_tiny import TargetWordReward, make_lm, make_tokenizer, prompts
    from tnd_core import CustomPPOConfig
    from tnd_core.models import StudentModel, TeacherModel
    from tnd_core.trainers import CustomPPOTrainer

    out = Path(sys.argv[1])
    tok = make_tokenizer()
    config = CustomPPOConfig(batch_size=4, mini_batch_size=2, ppo_epochs=2, steps=2, max_new_tokens=4,
                             learning_rate=1e-2, output_dir=str(out / "run"), save_steps=0, seed=0)
    trainer = CustomPPOTrainer(teacher=TeacherModel(make_lm(tok, seed=5), tok),
                               student=StudentModel(make_lm(tok, seed=1), tok),
                               reward_model=TargetWordReward("w15", 4), config=config, train_dataset=prompts(16))
    initial = torch.cat([p.detach().flatten().clone() for p in trainer.student.parameters()])
    result = trainer.train()
    final = torch.cat([p.detach().flatten() for p in trainer.student.parameters()])
    rank = trainer.accelerator.process_index
    torch.save({{"initial": initial, "final": final, "world": trainer.accelerator.num_processes,
                 "first_batch": trainer.item_stream("ppo", 16).batch(0), "kl_coef": trainer.kl_ctl.value,
                 "result_step": result["step"]}},
               out / f"rank{{rank}}.pt")
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_cpu_processes_hold_identical_weights_after_training(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(repo=str(REPO), tests=str(REPO / "tests")))
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(_free_port()),
        str(script),
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    assert all(r["world"] == 2 and r["result_step"] == 2 for r in ranks)
    assert ranks[0]["first_batch"] != ranks[1]["first_batch"]  # each rank trains on its own prompts
    assert not torch.equal(ranks[0]["initial"], ranks[0]["final"])  # training moved the weights
    assert torch.equal(ranks[0]["final"], ranks[1]["final"])  # gradients were averaged across ranks
    assert ranks[0]["kl_coef"] == ranks[1]["kl_coef"]  # statistics were reduced before the KL controller
    saved = tmp_path / "run" / "checkpoint-2"
    assert (saved / "rng_state_0.pt").is_file() and (saved / "rng_state_1.pt").is_file()
    assert (saved / "student" / "value_head.safetensors").is_file()
