"""The model families users bring, as look-alikes built locally (tests/families.py): each causal-LM family
trains as student and teacher through `tnd train` with a reward model of another family, and its checkpoint
reloads with `from_pretrained`; reward models score a padded batch as each row alone; a teacher with another
tokenizer gives its demos as text; chat-format prompts go through the student's chat template; a Llama
student learns."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from families import CHAT_TEMPLATE, causal_lm, make_tokenizer, save_pair, save_reward, write_prompts
from tnd_tiny import one_torch_thread  # noqa: F401

from tnd_core.cli import main
from tnd_core.config import CustomPPOConfig
from tnd_core.errors import ConfigError
from tnd_core.events import RolloutEvent, StepEvent

TEACHER_STUDENT_KL = "distill/teacher_student_kl"
# each causal-LM family with a reward model of another family and tokenizer; every reward family is used
PAIRS = [("gpt2", "distilbert"), ("llama", "qwen2"), ("qwen2", "bert"), ("neox", "roberta"), ("opt", "bert")]


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> Path:
    """Every family saved under one folder, with a prompts file."""
    root = tmp_path_factory.mktemp("families")
    for family in {family for family, _ in PAIRS}:
        save_pair(root, family)
    for family in {reward for _, reward in PAIRS}:
        save_reward(root, family)
    save_pair(root, "qwen2", vocab_size=300, name="qwen2-other-vocab")
    write_prompts(root / "prompts.jsonl")
    return root


def _train(root: Path, teacher: Path, student: Path, reward: Path, out: Path, *flags: str) -> int:
    args = ["--teacher_name_or_path", str(teacher), "--student_name_or_path", str(student)]
    args += ["--reward_model_name_or_path", str(reward), "--dataset_name_or_path", str(root / "prompts.jsonl")]
    args += ["--steps", "2", "--batch_size", "4", "--mini_batch_size", "2", "--ppo_epochs", "1"]
    args += ["--max_new_tokens", "6", "--output_dir", str(out), *flags]
    return main(["train", *args])


def _steps(out: Path) -> list[dict]:
    """The step statistics of a run, one dict per logged step (metrics.jsonl)."""
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("family, reward", PAIRS)
def test_each_family_trains_with_tnd_train_and_its_checkpoint_reloads(zoo, family, reward, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    saved_student = zoo / family / "student"
    out = tmp_path / "run"
    assert _train(zoo, zoo / family / "teacher", saved_student, zoo / f"reward-{reward}", out) == 0
    steps = _steps(out)
    assert len(steps) == 2
    for stats in steps:
        for name in ("env/reward_mean", TEACHER_STUDENT_KL, "ppo/loss/total"):
            assert math.isfinite(stats[name]), (name, stats)

    trained = out / "checkpoint-2" / "student"
    before = AutoModelForCausalLM.from_pretrained(saved_student)
    after = AutoModelForCausalLM.from_pretrained(trained)
    assert type(after) is type(before)
    assert any(not torch.equal(a, b) for a, b in zip(after.state_dict().values(), before.state_dict().values()))
    tokenizer = AutoTokenizer.from_pretrained(trained)
    assert tokenizer.get_vocab() == AutoTokenizer.from_pretrained(saved_student).get_vocab()
    ids = tokenizer(["the dog"], return_tensors="pt")
    assert torch.isfinite(after(**ids).logits).all()


def test_opt_prompts_keep_the_bos_the_tokenizer_prepends(zoo):
    tok = make_tokenizer("opt")
    assert tok("the dog")["input_ids"][0] == tok.bos_token_id == tok.eos_token_id  # OPT's '</s>' starts every text
    from tnd_core.models import load_student

    student = load_student(zoo / "opt" / "student")
    assert student.tokenizer.pad_token_id != student.tokenizer.eos_token_id


@pytest.mark.parametrize("family", ["bert", "distilbert", "roberta", "qwen2", "llama"])
def test_reward_models_score_a_padded_batch_as_each_row_alone(family, tmp_path):
    from tnd_core.models import load_reward_model

    # a Llama classifier with GPT-2's tokenizer has no pad token at all (SmolLM-style)
    kind = {"llama": "gpt2"}.get(family, family)
    tok = make_tokenizer(kind)
    from families import save_model, sequence_classifier

    torch.manual_seed(3)
    folder = save_model(tmp_path / family, sequence_classifier(family, tok), tok)
    reward = load_reward_model(folder)
    texts = ["the dog", "where is the big ball of the cat ?", "a cat runs ."]
    batch = reward.score_texts(texts)
    alone = torch.cat([reward.score_texts([t]) for t in texts])
    assert torch.allclose(batch, alone, atol=1e-5), (batch, alone)
    assert reward.model.config.pad_token_id == reward.tokenizer.pad_token_id is not None


def test_a_decoder_reward_whose_config_has_a_wrong_pad_id_is_scored_at_the_last_real_token(tmp_path):
    """A config pad id that is a real token, unlike the one the tokenizer pads with: transformers alone
    scores every padded row at a pad token; RewardModel gives the model the tokenizer's pad id."""
    from families import save_model, sequence_classifier

    from tnd_core.models import load_reward_model

    tok = make_tokenizer("qwen2")  # pads with its EOS
    wrong = tok.convert_tokens_to_ids("Ġthe")
    torch.manual_seed(3)
    classifier = sequence_classifier("qwen2", tok, pad_token_id=wrong)
    texts = ["a cat runs .", "where is the big ball of the cat ?"]
    enc = tok(texts, padding=True, padding_side="right", return_tensors="pt")
    with torch.no_grad():
        raw = classifier(**enc).logits[:, 0]
        raw_alone = classifier(**tok(texts[:1], return_tensors="pt")).logits[0, 0]
    assert not torch.allclose(raw[0], raw_alone, atol=1e-4)  # the bug this guards against

    reward = load_reward_model(save_model(tmp_path / "rm", classifier, tok))
    assert torch.allclose(reward.score_texts(texts)[0], reward.score_texts(texts[:1])[0], atol=1e-5)
    assert torch.allclose(reward.score_texts(texts[:1])[0], raw_alone, atol=1e-5)


def test_a_two_class_sentiment_classifier_scores_the_log_odds_of_positive(tmp_path):
    from families import save_model, sequence_classifier

    from tnd_core.models import RewardModel, load_reward_model

    tok = make_tokenizer("distilbert")
    labels = {"id2label": {0: "NEGATIVE", 1: "POSITIVE"}, "label2id": {"NEGATIVE": 0, "POSITIVE": 1}}
    torch.manual_seed(3)
    classifier = sequence_classifier("distilbert", tok, num_labels=2, **labels).eval()
    texts = ["the dog runs .", "where is the cat ?"]
    with torch.no_grad():
        logits = classifier(**tok(texts, padding=True, return_tensors="pt")).logits
    reward = load_reward_model(save_model(tmp_path / "sentiment", classifier, tok))
    assert torch.allclose(reward.score_texts(texts), logits[:, 1] - logits[:, 0], atol=1e-5)
    for bad in (sequence_classifier("distilbert", tok, num_labels=2), sequence_classifier("bert", tok, num_labels=3)):
        with pytest.raises(ConfigError, match="num_labels=1.*POSITIVE"):
            RewardModel(bad, tok)


def test_a_teacher_with_another_tokenizer_gives_demos_as_text_with_distillation_off(zoo, tmp_path):
    """Teacher: Qwen2 over a 300-token vocabulary; student: Llama over a 400-token one."""
    from tnd_core import CustomPPOTrainer
    from tnd_core.models import load_reward_model, load_student, load_teacher

    teacher = load_teacher(zoo / "qwen2-other-vocab" / "teacher")
    student = load_student(zoo / "llama" / "student")
    assert teacher.tokenizer.get_vocab() != student.tokenizer.get_vocab()
    prompts = ["the dog", "a cat", "where is", "we sleep"]
    config = CustomPPOConfig(
        steps=1, batch_size=4, mini_batch_size=2, ppo_epochs=1, max_new_tokens=6, do_sample=False,
        distill_coef=0.0, kl_reference="initial_student", save_steps=0, output_dir=str(tmp_path / "run"),
    )  # fmt: skip
    events = []
    reward = load_reward_model(zoo / "reward-bert")
    trainer = CustomPPOTrainer(teacher, student, reward, config, prompts, callbacks=[events.append])
    trainer.train()
    (stats,) = [e.stats for e in events if isinstance(e, StepEvent)]
    assert math.isfinite(stats["env/demo_reward_mean"]) and TEACHER_STUDENT_KL not in stats
    samples = next(e for e in events if isinstance(e, RolloutEvent)).samples
    # the demo is the teacher's own greedy continuation, in words
    t_tok = teacher.tokenizer
    for sample in samples:
        enc = t_tok([sample.prompt], return_tensors="pt")
        out = teacher.generate(
            enc.input_ids, enc.attention_mask, max_new_tokens=6, do_sample=False,
            pad_token_id=t_tok.pad_token_id, eos_token_id=t_tok.eos_token_id,
        )  # fmt: skip
        whole = t_tok.decode(out[0], skip_special_tokens=True)
        assert whole.startswith(sample.prompt) and sample.demo == whole[len(sample.prompt) :]
        assert sample.demo, "a random-init teacher writes some text in 6 tokens"


@pytest.mark.parametrize(
    "flags, named",
    [
        (["--distill_coef", "0.5", "--kl_reference", "initial_student"], "distill_coef=0.5"),
        (["--distill_coef", "0", "--kl_reference", "teacher"], "kl_reference='teacher'"),
    ],
)
def test_distillation_across_tokenizers_is_refused_naming_the_option(zoo, flags, named, capsys, tmp_path):
    teacher, student = zoo / "qwen2-other-vocab" / "teacher", zoo / "llama" / "student"
    assert _train(zoo, teacher, student, zoo / "reward-bert", tmp_path / "run", *flags) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert named in line and "tokenizer differs" in line and "kl_reference=initial_student" in line


def test_chat_prompts_go_through_the_students_chat_template(zoo, tmp_path):
    from tnd_core.pipeline import build_trainer

    pair = save_pair(tmp_path, "qwen2", name="chat", chat_template=CHAT_TEMPLATE)
    prompts = write_prompts(tmp_path / "chat.jsonl", n=4, chat=True)
    first = json.loads(prompts.read_text().splitlines()[0])["prompt"][0]["content"]
    config = CustomPPOConfig(
        teacher_name_or_path=str(pair.teacher), student_name_or_path=str(pair.student),
        reward_model_name_or_path=str(zoo / "reward-bert"), dataset_name_or_path=str(prompts),
        steps=1, batch_size=4, mini_batch_size=2, ppo_epochs=1, max_new_tokens=4, output_dir=str(tmp_path / "run"),
    )  # fmt: skip
    trainer = build_trainer(config)
    assert trainer.train_prompts[0] == f"<|im_start|>user\n{first}<|im_end|>\n<|im_start|>assistant\n"
    assert trainer.train()["step"] == 1

    plain = config.replace(student_name_or_path=str(zoo / "qwen2" / "student"))
    with pytest.raises(ConfigError) as err:
        build_trainer(plain)
    assert err.value.field == "prompt_column" and "chat template" in str(err.value)


def test_a_template_that_writes_bos_keeps_one_bos_when_the_tokenizer_adds_it():
    from tnd_core.data.prompts import render_chat

    tok = make_tokenizer("opt")
    tok.chat_template = "{{ bos_token }}" + CHAT_TEMPLATE
    text = render_chat([{"role": "user", "content": "the dog"}], tok, "prompt")
    ids = tok(text)["input_ids"]
    assert ids.count(tok.bos_token_id) == 1 and ids[0] == tok.bos_token_id


class SpaceReward:
    """Rule reward that more words earn: spaces in the text per generated token."""

    def __init__(self, max_new_tokens: int):
        self.max_new_tokens = max_new_tokens

    def score_texts(self, texts: list[str]) -> torch.Tensor:
        return torch.tensor([t.count(" ") / self.max_new_tokens for t in texts])


def test_a_llama_student_learns_to_raise_its_reward(tmp_path):
    """Plain PPO on a tied-embedding Llama student with a byte-level BPE tokenizer: the reward rises
    (measured 0.32 -> 0.51, first three steps against the last three)."""
    from families import corpus

    from tnd_core import CustomPPOTrainer
    from tnd_core.models import StudentModel

    tok = make_tokenizer("llama")
    torch.manual_seed(2)
    student = StudentModel(causal_lm("llama", tok, layers=1), tok)
    prompts = [" ".join(s.split()[:2]) for s in corpus(32, seed=9)]
    config = CustomPPOConfig(
        steps=10, batch_size=16, mini_batch_size=8, ppo_epochs=4, max_new_tokens=8, learning_rate=1e-2,
        init_kl_coef=0.0, adap_kl_ctrl=False, distill_coef=0.0, use_teacher_demos=False,
        kl_reference="initial_student", save_steps=0, output_dir=str(tmp_path / "run"),
    )  # fmt: skip
    events = []
    trainer = CustomPPOTrainer(None, student, SpaceReward(8), config, prompts, callbacks=[events.append])
    trainer.train()
    rewards = [e.stats["env/reward_mean"] for e in events if isinstance(e, StepEvent)]
    assert sum(rewards[-3:]) / 3 > sum(rewards[:3]) / 3 + 0.1, rewards
