"""The classic TRL 0.11 PPO loop (GPT-2 and a sentiment classifier), run unchanged through tnd_core.compat.trl.

The models are look-alikes built here: a byte-level BPE tokenizer trained on a few movie-review words (GPT-2's
kind: no pad token, spaces kept in the tokens), a tiny GPT-2 from a config saved and loaded by path, and a
bag-of-words "sentiment" classifier whose positive logit counts the word "great", called like a
text-classification pipeline. The loop is the one TRL's GPT-2 sentiment example taught: for each batch of the
trainer's dataloader, generate, decode, score, step, log_stats.
"""

from __future__ import annotations

import math
import os
import random
import socket
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from tnd_tiny import one_torch_thread  # noqa: F401
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from tnd_core import stats as S
from tnd_core.compat.trl import (
    AutoModelForCausalLMWithValueHead,
    LengthSampler,
    PPOConfig,
    PPOTrainer,
    create_reference_model,
    respond_to_batch,
)
from tnd_core.config import CustomPPOConfig
from tnd_core.errors import ConfigError, TndError
from tnd_core.events import RolloutEvent, StepEvent

WORDS = "the a movie film plot actor story was is very not and but bad dull fun good great".split()
TARGET = "great"
EOS = "<|endoftext|>"
EPOCHS = 2  # the reward takes off after about 20 steps of 16 prompts

# What TRL 0.11.4's PPOTrainer.step returned under these names, for the quantities computed here too.
TRL_STEP_STATS = {
    "objective/kl",
    "objective/kl_coef",
    "objective/entropy",
    "ppo/mean_non_score_reward",
    "ppo/mean_scores",
    "ppo/loss/policy",
    "ppo/loss/value",
    "ppo/loss/total",
    "ppo/policy/entropy",
    "ppo/policy/approxkl",
    "ppo/policy/policykl",
    "ppo/policy/clipfrac",
    "ppo/returns/mean",
    "ppo/val/vpred",
    "ppo/val/error",
    "ppo/val/clipfrac",
    "ppo/learning_rate",
    "tokens/queries_len_mean",
    "tokens/queries_len_std",
    "tokens/responses_len_mean",
    "tokens/responses_len_std",
    "time/ppo/total",
}


def review_corpus(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 9))) for _ in range(n)]


def train_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level BPE over the review words, every word one token; EOS only, like GPT-2's."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(review_corpus(400, seed=0), trainers.BpeTrainer(vocab_size=90, special_tokens=[EOS]))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=EOS)
    assert tokenizer.pad_token is None  # as GPT-2's: the loop sets pad = eos itself
    return tokenizer


class BagOfWordsSentiment(torch.nn.Module):
    """Two-label classifier (NEGATIVE, POSITIVE) over words; the POSITIVE logit counts `TARGET`."""

    labels = ("NEGATIVE", "POSITIVE")

    def __init__(self):
        super().__init__()
        self.vocab = {word: i for i, word in enumerate(WORDS)}
        self.weights = torch.nn.EmbeddingBag(len(WORDS) + 1, 2, mode="sum")
        with torch.no_grad():
            self.weights.weight.zero_()
            self.weights.weight[self.vocab[TARGET]] = torch.tensor([-1.0, 1.0])

    def forward(self, texts: list[str]) -> torch.Tensor:
        ids = [[self.vocab.get(w, len(WORDS)) for w in text.split()] or [len(WORDS)] for text in texts]
        offsets = torch.tensor([0] + [len(x) for x in ids[:-1]]).cumsum(0)
        return self.weights(torch.tensor([i for x in ids for i in x]), offsets)


def sentiment_pipeline(classifier: BagOfWordsSentiment):
    """Called as a text-classification pipeline with top_k=None and function_to_apply='none'."""

    def pipe(texts: list[str], **_: object) -> list[list[dict]]:
        with torch.no_grad():
            logits = classifier(texts)
        return [[{"label": label, "score": float(v)} for label, v in zip(classifier.labels, row)] for row in logits]

    return pipe


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory):
    """A tiny random GPT-2 with its tokenizer, saved like a hub checkpoint."""
    folder = tmp_path_factory.mktemp("gpt2-imdb")
    tokenizer = train_tokenizer()
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=64,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def build_dataset(tokenizer, n: int = 256):
    """Reviews cut to their first 2-4 tokens (no TARGET in them), as 'input_ids' tensors and 'query' texts."""
    reviews = [r for r in review_corpus(4 * n, seed=1) if TARGET not in r.split()][:n]
    sampler = LengthSampler(2, 5)
    ds = datasets.Dataset.from_dict({"review": reviews})

    def tokenize(sample):
        sample["input_ids"] = tokenizer.encode(sample["review"])[: sampler()]
        sample["query"] = tokenizer.decode(sample["input_ids"])
        return sample

    ds = ds.map(tokenize)
    ds.set_format(type="torch")
    return ds


def collator(data):
    return {key: [d[key] for d in data] for key in data[0]}


def test_classic_sentiment_loop_raises_the_reward(gpt2_folder, tmp_path):
    random.seed(0)
    np.random.seed(0)
    config = PPOConfig(
        model_name=gpt2_folder,
        learning_rate=3e-3,
        batch_size=16,
        mini_batch_size=8,
        init_kl_coef=0.01,
        adap_kl_ctrl=False,
        log_with=None,
        output_dir=str(tmp_path / "run"),
        seed=0,
    )
    model = AutoModelForCausalLMWithValueHead.from_pretrained(config.model_name)
    ref_model = create_reference_model(model)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(config.model_name)
    tokenizer.pad_token = tokenizer.eos_token
    dataset = build_dataset(tokenizer)
    events = []
    ppo_trainer = PPOTrainer(
        config, model, ref_model, tokenizer, dataset=dataset, data_collator=collator, callbacks=[events.append]
    )
    sentiment_pipe = sentiment_pipeline(BagOfWordsSentiment())
    generation_kwargs = {"min_length": -1, "top_k": 0.0, "top_p": 1.0, "do_sample": True}
    generation_kwargs["pad_token_id"] = tokenizer.eos_token_id
    output_length_sampler = LengthSampler(8, 12)

    mean_rewards, all_stats = [], []
    for _epoch in range(EPOCHS):
        for batch in ppo_trainer.dataloader:
            query_tensors = batch["input_ids"]
            response_tensors = ppo_trainer.generate(
                query_tensors, return_prompt=False, length_sampler=output_length_sampler, **generation_kwargs
            )
            batch["response"] = tokenizer.batch_decode(response_tensors)
            texts = [q + r for q, r in zip(batch["query"], batch["response"])]
            pipe_outputs = sentiment_pipe(texts, top_k=None, function_to_apply="none", batch_size=16)
            rewards = [torch.tensor(output[1]["score"]) for output in pipe_outputs]
            stats = ppo_trainer.step(query_tensors, response_tensors, rewards)
            ppo_trainer.log_stats(stats, batch, rewards)
            mean_rewards.append(float(torch.stack(rewards).mean()))
            all_stats.append(stats)

    assert len(mean_rewards) == EPOCHS * (len(dataset) // config.batch_size)
    start, end = np.mean(mean_rewards[:5]), np.mean(mean_rewards[-5:])
    assert end > start + 1.0 and end > 2 * start, mean_rewards
    for stats in all_stats:
        assert TRL_STEP_STATS <= stats.keys(), TRL_STEP_STATS - stats.keys()
        assert all(math.isfinite(stats[name]) for name in TRL_STEP_STATS)
    assert all_stats[-1]["ppo/learning_rate"] == pytest.approx(3e-3)
    assert 8 <= max(s["tokens/responses_len_mean"] for s in all_stats) <= 12
    # the reference stayed frozen and the policy moved away from it
    assert all_stats[-1]["objective/kl"] > 0 and not any(p.requires_grad for p in ref_model.parameters())
    assert ppo_trainer.ref_model is ref_model and ppo_trainer.current_step == len(mean_rewards)

    # log_stats went out as the trainer's events, with the rewards and the decoded samples
    steps = [e for e in events if isinstance(e, StepEvent)]
    assert [e.step for e in steps] == list(range(1, len(mean_rewards) + 1))
    assert steps[-1].stats[S.REWARD_MEAN] == pytest.approx(mean_rewards[-1], abs=1e-5)
    rollout = [e for e in events if isinstance(e, RolloutEvent)][-1]
    assert rollout.samples[0].prompt == batch["query"][0] and rollout.samples[0].trial == batch["response"][0]
    assert (tmp_path / "run" / "metrics.jsonl").read_text().count("\n") == len(mean_rewards)

    # TRL's save_pretrained: the trained model reloads by path, value head included
    ppo_trainer.save_pretrained(tmp_path / "trained")
    reloaded = AutoModelForCausalLMWithValueHead.from_pretrained(tmp_path / "trained")
    assert torch.equal(reloaded.v_head.summary.weight, model.v_head.summary.weight)
    assert torch.equal(reloaded.pretrained_model.lm_head.weight, model.pretrained_model.lm_head.weight)


def test_config_takes_trl_names_and_defaults():
    config = PPOConfig(model_name="my-model", log_with="tensorboard", optimize_cuda_cache=True, tracker_kwargs={})
    assert config.model_name == "my-model" and config.query_dataset == "imdb"
    assert config.report_to == "tensorboard" and config.optimize_device_cache
    # TRL's defaults: plain PPO against the initial model, Adam without clipping, batches of 128
    assert (config.batch_size, config.mini_batch_size, config.optimizer_name) == (128, 128, "adam")
    assert config.max_grad_norm is None and config.kl_reference == "initial_student"
    assert config.distill_coef == 0 and not config.use_teacher_demos and not config.needs_teacher
    assert isinstance(config, CustomPPOConfig) and PPOConfig().report_to == "none"
    changed = config.replace(batch_size=4, mini_batch_size=4)
    assert changed.model_name == "my-model" and changed.batch_size == 4 and changed.report_to == "tensorboard"


def test_given_optimizer_and_scheduler_step_as_in_trl(gpt2_folder, tmp_path):
    """The optimizer passed in is the one stepped; the scheduler advances once per step() call."""
    tokenizer = PreTrainedTokenizerFast.from_pretrained(gpt2_folder)
    model = AutoModelForCausalLMWithValueHead.from_pretrained(gpt2_folder)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: 0.5**k)
    config = PPOConfig(batch_size=2, mini_batch_size=1, ppo_epochs=2, output_dir=str(tmp_path))
    trainer = PPOTrainer(config, model, None, tokenizer, optimizer=optimizer, lr_scheduler=scheduler)
    query = torch.tensor(tokenizer.encode("the movie"))
    rates = []
    for _ in range(2):
        responses = trainer.generate([query, query], return_prompt=False, max_new_tokens=3, min_new_tokens=3)
        rates.append(trainer.step([query, query], responses, [1.0, 0.0])["ppo/learning_rate"])
    assert rates == pytest.approx([0.1, 0.05])  # 4 updates per step, one scheduler step per step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.025)


@pytest.mark.parametrize(
    "values, field",
    [
        ({"log_with": "comet_ml"}, "log_with"),
        ({"log_with": "wandb", "report_to": "wandb"}, "log_with"),
        ({"accelerator_kwargs": {"cpu": True}}, "accelerator_kwargs"),
        ({"forward_batch_size": 8}, "forward_batch_size"),
        ({"remove_unused_columns": "yes"}, "remove_unused_columns"),
    ],
)
def test_config_refuses_what_behaves_differently(values, field):
    with pytest.raises(ConfigError) as caught:
        PPOConfig(**values)
    assert caught.value.field == field


def test_trainer_refuses_what_behaves_differently(gpt2_folder, tmp_path):
    tokenizer = PreTrainedTokenizerFast.from_pretrained(gpt2_folder)
    config = PPOConfig(batch_size=2, mini_batch_size=2, output_dir=str(tmp_path))
    model = AutoModelForCausalLMWithValueHead.from_pretrained(gpt2_folder)
    with pytest.raises(TndError, match="num_shared_layers"):
        PPOTrainer(config, model, None, tokenizer, num_shared_layers=1)
    with pytest.raises(TndError, match="sharing layers"):
        create_reference_model(model, num_shared_layers=2)
    with pytest.raises(TndError, match="use_lora"):
        AutoModelForCausalLMWithValueHead.from_pretrained(gpt2_folder, peft_config={"r": 8})
    with pytest.raises(TndError, match="no dropout"):
        AutoModelForCausalLMWithValueHead.from_pretrained(gpt2_folder, summary_dropout_prob=0.1)
    with pytest.raises(ConfigError) as caught:  # demos need a teacher, which the classic loop has not
        PPOTrainer(PPOConfig(use_teacher_demos=True, output_dir=str(tmp_path)), model, None, tokenizer)
    assert caught.value.field == "teacher"
    trainer = PPOTrainer(config, model, None, tokenizer)
    query = torch.tensor(tokenizer.encode("the movie"))
    response = trainer.generate([query, query], return_prompt=False, max_new_tokens=3, do_sample=True)
    with pytest.raises(TndError, match="response_masks"):
        trainer.step([query, query], response, [1.0, 0.0], response_masks=[torch.ones(3), torch.ones(3)])
    with pytest.raises(ConfigError) as caught:
        trainer.generate(query.unsqueeze(0))
    assert caught.value.field == "query_tensor"


def test_generate_shapes_follow_trl(gpt2_folder, tmp_path):
    tokenizer = PreTrainedTokenizerFast.from_pretrained(gpt2_folder)
    model = AutoModelForCausalLMWithValueHead.from_pretrained(gpt2_folder)
    trainer = PPOTrainer(PPOConfig(batch_size=2, mini_batch_size=2, output_dir=str(tmp_path)), model, None, tokenizer)
    short, long = torch.tensor(tokenizer.encode("the movie")), torch.tensor(tokenizer.encode("a very dull plot"))
    kwargs = {"max_new_tokens": 5, "min_new_tokens": 5, "do_sample": True}
    one = trainer.generate(short, **kwargs)  # a single query: [1, prompt + response], prompt included
    assert one.shape == (1, len(short) + 5) and torch.equal(one[0, : len(short)], short)
    both = trainer.generate([short, long], return_prompt=True, batch_size=1, **kwargs)
    assert [len(x) for x in both] == [len(short) + 5, len(long) + 5]  # padding removed, prompts kept
    assert torch.equal(both[1][: len(long)], long)
    responses, ref_responses = trainer.generate(
        [short, long], return_prompt=False, generate_ref_response=True, **kwargs
    )
    assert [len(x) for x in responses] == [5, 5] and [len(x) for x in ref_responses] == [5, 5]
    # remove_padding cuts each response after its first EOS, keeping the EOS
    eos, student = tokenizer.eos_token_id, trainer.engine.unwrapped()
    continuations = torch.tensor([[5, eos, 7, 7], [6, 6, 6, 6]])
    student.generate = lambda ids, attn, **_: torch.cat([ids, continuations[: len(ids)]], 1)
    assert [x.tolist() for x in trainer.generate([short, long], return_prompt=False)] == [[5, eos], [6, 6, 6, 6]]
    uncut = trainer.generate([short, long], return_prompt=False, remove_padding=False)
    assert [x.tolist() for x in uncut] == continuations.tolist()
    sampled = respond_to_batch(model, short.unsqueeze(0), txt_len=6)
    assert sampled.shape == (1, 6)


def test_saved_value_head_of_trl_is_loaded(gpt2_folder, tmp_path):
    """A checkpoint TRL saved holds the value head as v_head.* inside model.safetensors."""
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "trl-checkpoint"
    model = AutoModelForCausalLMWithValueHead.from_pretrained(gpt2_folder)
    model.pretrained_model.save_pretrained(folder)
    weights = load_file(str(folder / "model.safetensors"))
    head = {"v_head.summary.weight": torch.full((1, 32), 0.5), "v_head.summary.bias": torch.tensor([2.0])}
    save_file({**weights, **head}, str(folder / "model.safetensors"), metadata={"format": "pt"})
    loaded = AutoModelForCausalLMWithValueHead.from_pretrained(folder)
    assert torch.equal(loaded.v_head.summary.bias, torch.tensor([2.0]))
    assert torch.equal(loaded.v_head.summary.weight, torch.full((1, 32), 0.5))


def test_lora_through_the_classic_calls(gpt2_folder, tmp_path):
    """use_lora on PPOConfig: adapters and the value head train, the reference is the model without adapters."""
    tokenizer = PreTrainedTokenizerFast.from_pretrained(gpt2_folder)
    config = PPOConfig(use_lora=True, batch_size=2, mini_batch_size=2, learning_rate=1e-2, output_dir=str(tmp_path))
    model = AutoModelForCausalLMWithValueHead.from_pretrained(gpt2_folder)
    trainer = PPOTrainer(config, model, None, tokenizer)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name or name.startswith("v_head.") for name in trainable)
    query = torch.tensor(tokenizer.encode("the movie"))
    responses = trainer.generate([query, query], return_prompt=False, max_new_tokens=4, min_new_tokens=4)
    stats = trainer.step([query, query], responses, [1.0, 0.0])
    assert all(math.isfinite(stats[name]) for name in TRL_STEP_STATS)
    with pytest.raises(TndError, match="generate_ref_response"):
        trainer.generate([query], generate_ref_response=True, max_new_tokens=2)


TWO_PROCESS_WORKER = """
import json, sys
from pathlib import Path
import torch
sys.path[:0] = [{repo!r}, {tests!r}]
torch.set_num_threads(1)
from transformers import PreTrainedTokenizerFast
from test_compat_trl import build_dataset, collator
from tnd_core.compat.trl import AutoModelForCausalLMWithValueHead, PPOConfig, PPOTrainer
from tnd_core.events import StepEvent

out, folder = Path(sys.argv[1]), sys.argv[2]
tokenizer = PreTrainedTokenizerFast.from_pretrained(folder)
tokenizer.pad_token = tokenizer.eos_token
config = PPOConfig(batch_size=4, mini_batch_size=2, ppo_epochs=1, learning_rate=1e-2, output_dir=str(out / "run"))
events = []
trainer = PPOTrainer(config, AutoModelForCausalLMWithValueHead.from_pretrained(folder), None, tokenizer,
                     dataset=build_dataset(tokenizer, n=16), data_collator=collator, callbacks=[events.append])
rank, queries, rewards = trainer.accelerator.process_index, [], []
for step, batch in zip(range(2), trainer.dataloader):
    responses = trainer.generate(batch["input_ids"], return_prompt=False, max_new_tokens=3, do_sample=True)
    scores = [float(rank * 10 + step + i) for i in range(len(responses))]
    stats = trainer.step(batch["input_ids"], responses, scores)
    trainer.log_stats(stats, batch, scores)
    queries += batch["query"]
    rewards.append(scores)
weights = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
logged = [e.stats["env/reward_mean"] for e in events if isinstance(e, StepEvent)]
torch.save({{"weights": weights, "queries": queries, "rewards": rewards, "logged": logged,
             "kl_coef": trainer.kl_ctl.value}}, out / f"rank{{rank}}.pt")
"""


@pytest.mark.slow
def test_classic_loop_on_two_cpu_processes(gpt2_folder, tmp_path):
    """Under torchrun: the dataloader splits the data, log_stats averages every process's rewards, weights agree."""
    repo = Path(__file__).resolve().parents[1]
    script = tmp_path / "worker.py"
    script.write_text(TWO_PROCESS_WORKER.format(repo=str(repo), tests=str(repo / "tests")))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port)]
    proc = subprocess.run([*cmd, str(script), str(tmp_path), gpt2_folder], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    assert len(ranks[0]["queries"]) == len(ranks[1]["queries"]) == 8
    assert ranks[0]["queries"] != ranks[1]["queries"]  # each process reads its own slice of every batch
    assert torch.equal(ranks[0]["weights"], ranks[1]["weights"])  # gradients averaged across processes
    assert ranks[0]["kl_coef"] == ranks[1]["kl_coef"]
    both = [np.mean(ranks[0]["rewards"][step] + ranks[1]["rewards"][step]) for step in range(2)]
    assert ranks[0]["logged"] == pytest.approx(both) and ranks[1]["logged"] == []  # events from the main process
