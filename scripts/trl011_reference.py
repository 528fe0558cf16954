"""Record TRL 0.11.4's PPOTrainer.step on a tiny GPT-2, for tests/test_ppo_math.py to replay.

Needs the classic stack, which the project itself does not use; run it in a throwaway venv:
    python -m venv --system-site-packages /tmp/trl011
    /tmp/trl011/bin/pip install "trl==0.11.4" "transformers==4.46.3"
    /tmp/trl011/bin/python scripts/trl011_reference.py tests/data/trl011

Writes, per variant, the initial model, two batches of (queries, responses, scores), TRL's stats
and the final weights. Variant "extra" fixes two TRL 0.11.4 bugs first (see `_fix_trl_bugs`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast
from trl import AutoModelForCausalLMWithValueHead, PPOConfig, PPOTrainer
from trl.trainer import ppo_trainer as trl_ppo

VARIANTS = {
    "plain": {},
    "extra": dict(
        score_clip=1.5,
        whiten_rewards=True,
        kl_penalty="full",
        gradient_accumulation_steps=2,
        max_grad_norm=0.5,
        early_stopping=True,
        target_kl=0.002,
    ),
}
BASE = dict(
    batch_size=8,
    mini_batch_size=4,
    ppo_epochs=3,
    learning_rate=1e-3,
    init_kl_coef=0.2,
    adap_kl_ctrl=True,
    target=6,
    horizon=10000,
    gamma=1.0,
    lam=0.95,
    cliprange=0.2,
    cliprange_value=0.2,
    vf_coef=0.1,
    ratio_threshold=10.0,
    kl_penalty="kl",
    seed=0,
    max_grad_norm=None,
)


def _fix_trl_bugs(trainer: PPOTrainer) -> None:
    # 1. model_params is a generator, exhausted by the first clip_grad_norm_: later steps were never clipped.
    trainer.model_params = [p for p in trainer.model.parameters() if p.requires_grad]
    # 2. whitened rewards were left non-zero on padding, where the GAE loop picked them up.
    original = trl_ppo.masked_whiten
    trl_ppo.masked_whiten = lambda values, mask, shift_mean=True: (
        original(values, mask, shift_mean) * (1 if shift_mean else mask)
    )


def record(variant: str, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    vocab = {w: i for i, w in enumerate(["<pad>", "<eos>", "<unk>"] + [f"w{i}" for i in range(24)])}
    word_level = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    word_level.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=word_level, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )
    tokenizer.padding_side = "right"  # TRL 0.11 passes no position ids: right padding keeps positions right
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(vocab),
        n_positions=64,
        n_embd=32,
        n_layer=2,
        n_head=2,
        resid_pdrop=0,
        embd_pdrop=0,
        attn_pdrop=0,
        bos_token_id=1,
        eos_token_id=1,
        pad_token_id=0,
    )
    GPT2LMHeadModel(config).save_pretrained(out / "init")
    tokenizer.save_pretrained(out / "init")
    model = AutoModelForCausalLMWithValueHead.from_pretrained(str(out / "init"), summary_dropout_prob=0.0)
    torch.save(model.v_head.state_dict(), out / "init_value_head.pt")

    options = {**BASE, **VARIANTS[variant]}
    trainer = PPOTrainer(PPOConfig(**options), model, ref_model=None, tokenizer=tokenizer)
    if variant != "plain":
        _fix_trl_bugs(trainer)
    g = torch.Generator().manual_seed(1)
    batches, all_stats = [], []
    np.random.seed(0)
    for _ in range(2):
        queries = [torch.randint(3, len(vocab), (int(n),), generator=g) for n in torch.randint(2, 6, (8,), generator=g)]
        responses = [
            torch.randint(3, len(vocab), (int(n),), generator=g) for n in torch.randint(1, 7, (8,), generator=g)
        ]
        scores = [torch.tensor(float(x)) for x in torch.randn(8, generator=g)]
        stats = trainer.step(queries, responses, scores)
        batches.append({"queries": queries, "responses": responses, "scores": torch.stack(scores)})
        all_stats.append({k: float(v) for k, v in stats.items() if np.ndim(v) == 0 and not k.startswith("time")})
    torch.save(
        {"batches": batches, "lm": model.pretrained_model.state_dict(), "value_head": model.v_head.state_dict()},
        out / "result.pt",
    )
    (out / "stats.json").write_text(json.dumps({"options": options, "stats": all_stats}, indent=1))


if __name__ == "__main__":
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "tests/data/trl011")
    for name in VARIANTS:
        record(name, root / name)
        print(f"recorded {root / name}")
