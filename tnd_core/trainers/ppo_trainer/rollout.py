"""Rollout of a PPO step: the student's trials and the teacher's demos for a batch of prompts,
decoded, scored by the reward model and shaped, laid out as one batch (docs/ALGORITHM.md, "Rollout")."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from tnd_core import stats as S
from tnd_core.config import CustomPPOConfig
from tnd_core.data.prompts import is_chat, render_prompts
from tnd_core.errors import ConfigError
from tnd_core.events import RolloutSample
from tnd_core.models.roles import same_vocabulary
from tnd_core.trainers.ppo_trainer.batch import PPOBatch, decode_rows, left_pad, make_batch, pad_width, right_pad
from tnd_core.trainers.ppo_trainer.engine import Engine
from tnd_core.trainers.ppo_trainer.losses import response_mask
from tnd_core.trainers.ppo_trainer.score_processing import shape_scores
from tnd_core.trainers.ppo_trainer.sharded_generation import unwrapped_for_generation

SAMPLES_SHOWN = 4


@dataclass
class Rollout:
    """One PPO batch: trials first, then demos; `scores` are shaped, `trial_scores`/`demo_scores` raw."""

    batch: PPOBatch
    scores: torch.Tensor
    is_demo: torch.Tensor
    trial_scores: torch.Tensor
    demo_scores: torch.Tensor | None
    samples: list[RolloutSample]
    generate_s: float
    score_s: float
    trial_responses: list[str] = field(default_factory=list)
    demo_responses: list[str] = field(default_factory=list)


def rollout_stats(rollout: Rollout, engine: Engine, update_stats: dict[str, float]) -> dict[str, float]:
    """The environment's and the whole step's statistics: raw reward means, time and speed."""
    trial_scores, demo_scores = rollout.trial_scores, rollout.demo_scores
    env = [trial_scores.mean(), trial_scores.std() if len(trial_scores) > 1 else trial_scores.new_zeros(())]
    if demo_scores is not None:
        env.append(demo_scores.mean())
    env_values = engine.reduce_mean(torch.stack(env)).tolist()
    stats = {S.REWARD_MEAN: env_values[0], S.REWARD_STD: env_values[1]}
    if demo_scores is not None:
        stats[S.DEMO_REWARD_MEAN] = env_values[2]
    total = rollout.generate_s + rollout.score_s + update_stats[S.TIME_TEACHER] + update_stats[S.TIME_OPTIMIZE]
    n = len(rollout.batch)
    stats.update(
        {
            S.TIME_ROLLOUT: rollout.generate_s,
            S.TIME_SCORE: rollout.score_s,
            S.TIME_STEP: total,
            S.SAMPLES_PER_S: n / max(total, 1e-9),
            S.TOKENS_PER_S: update_stats[S.RESPONSE_LEN_MEAN] * n / max(total, 1e-9),
        }
    )
    return stats


class RolloutCollector:
    """Generates, decodes, scores and shapes the samples of PPO steps for one run."""

    def __init__(
        self,
        config: CustomPPOConfig,
        engine: Engine,
        tokenizer: Any,
        teacher: Any,
        reward_model: Any,
        max_positions: int | None,
    ):
        self.config, self.engine, self.tokenizer = config, engine, tokenizer
        self.teacher, self.reward_model, self.max_positions = teacher, reward_model, max_positions
        self.eos_token_id = tokenizer.eos_token_id
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_token_id
        self.baseline: float | None = None
        # A teacher with another vocabulary writes its demos in its own tokens; they reach the student as text.
        teacher_tokenizer = getattr(teacher, "tokenizer", None)
        self.demos_as_text = teacher_tokenizer is not None and not same_vocabulary(teacher_tokenizer, tokenizer)

    def encode_prompts(self, prompts: list[str], tokenizer: Any = None) -> list[torch.Tensor]:
        """Token ids of each prompt (with the student's tokenizer unless another is given), truncated from the
        left to max_prompt_length."""
        tokenizer = tokenizer or self.tokenizer
        first = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        encoded = tokenizer(prompts, add_special_tokens=True)["input_ids"]
        return [torch.tensor(ids[-self.config.max_prompt_length :] or [first], dtype=torch.long) for ids in encoded]

    def demos_through_text(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Demos of a teacher with another tokenizer: it continues the prompts in its own tokens, the
        continuations are decoded and encoded with the student's tokenizer (at most max_new_tokens tokens;
        the student's EOS ends a demo the teacher ended). Returns (response ids [N, R], valid mask)."""
        c, device = self.config, self.engine.device
        tok = self.teacher.tokenizer
        t_eos = tok.eos_token_id
        t_pad = tok.pad_token_id if tok.pad_token_id is not None else t_eos
        ids, attn = left_pad(self.encode_prompts(prompts, tok), t_pad, device)
        out_ids, out_valid = sample(self.teacher, ids, attn, generation_kwargs(c, t_pad, t_eos), t_pad, t_eos)
        ended = ((out_ids == t_eos) & out_valid.bool()).any(1).tolist() if t_eos is not None else [False] * len(ids)
        full = decode_rows(tok, torch.cat([ids, out_ids], 1), torch.cat([attn, out_valid], 1))
        prompt_texts = decode_rows(tok, ids, attn)
        # The continuation is the decoded whole minus the decoded prompt: decoding it alone loses a leading
        # space with some tokenizers (SentencePiece).
        texts = [
            whole[len(start) :] if whole.startswith(start) else piece
            for whole, start, piece in zip(full, prompt_texts, decode_rows(tok, out_ids, out_valid))
        ]
        eos = self.eos_token_id if self.eos_token_id is not None else self.pad_token_id
        rows = []
        for i, ids_i in enumerate(self.tokenizer(texts, add_special_tokens=False)["input_ids"]):
            ids_i = ids_i[: c.max_new_tokens]
            if (ended[i] and len(ids_i) < c.max_new_tokens) or not ids_i:
                ids_i = [*ids_i, eos]
            rows.append(torch.tensor(ids_i, dtype=torch.long))
        return right_pad(rows, self.pad_token_id, device)

    def score(self, texts: list[str]) -> torch.Tensor:
        """The reward model's score of each text, as float32 on the run's device."""
        with self.engine.accelerator.autocast():
            scores = self.reward_model.score_texts(texts)
        return torch.as_tensor(scores, dtype=torch.float32).reshape(-1).to(self.engine.device)

    def shaping_baseline(self) -> float:
        """The baseline b of reward shaping: the score of `shaping_baseline_text`, else the constant."""
        if self.baseline is None:
            c = self.config
            self.baseline = (
                float(self.score([c.shaping_baseline_text])[0]) if c.shaping_baseline_text else c.shaping_baseline
            )
            if c.reward_shaping == "div" and self.baseline == 0:
                allowed = "scores 0 under the reward model; reward_shaping=div needs a non-zero baseline"
                raise ConfigError("shaping_baseline_text", c.shaping_baseline_text, allowed)
        return self.baseline

    def collect(self, prompts: list[str]) -> Rollout:
        """Trials of the student (and demos of the teacher) for `prompts`, scored and laid out as one batch."""
        c, engine = self.config, self.engine
        pad, eos = self.pad_token_id, self.eos_token_id
        q_ids, q_attn = left_pad(self.encode_prompts(prompts), pad, engine.device)
        if self.max_positions and q_ids.shape[1] + c.max_new_tokens > self.max_positions:
            raise ConfigError(
                "max_new_tokens",
                c.max_new_tokens,
                f"prompts of {q_ids.shape[1]} tokens plus max_new_tokens exceed the student's "
                f"{self.max_positions} positions; lower max_prompt_length or max_new_tokens",
            )

        t0 = engine.timer()
        gen = generation_kwargs(c, pad, eos)
        engine.model.eval()
        with engine.accelerator.autocast():
            with unwrapped_for_generation(engine.accelerator, engine.model) as student:
                trial_ids, trial_valid = sample(student, q_ids, q_attn, gen, pad, eos)
            if c.use_teacher_demos and self.demos_as_text:
                demo_ids, demo_valid = self.demos_through_text(prompts)
            elif c.use_teacher_demos:
                demo_ids, demo_valid = sample(self.teacher, q_ids, q_attn, gen, pad, eos)
        generate_s = engine.timer() - t0

        t0 = engine.timer()
        trial_texts = decode_rows(self.tokenizer, torch.cat([q_ids, trial_ids], 1), torch.cat([q_attn, trial_valid], 1))
        trial_scores = self.score(trial_texts)
        scores, is_demo = trial_scores, torch.zeros(len(trial_scores), dtype=torch.bool, device=engine.device)
        demo_scores = None
        if c.use_teacher_demos:
            if c.demo_score == "reward_model":
                demo_texts = decode_rows(
                    self.tokenizer, torch.cat([q_ids, demo_ids], 1), torch.cat([q_attn, demo_valid], 1)
                )
                demo_scores = self.score(demo_texts)
            else:
                demo_scores = torch.full_like(trial_scores, float(c.demo_score))
            scores = torch.cat([trial_scores, demo_scores])
            is_demo = torch.cat([is_demo, torch.ones_like(is_demo)])
        if c.reward_shaping != "none" and bool(torch.isfinite(scores).all()):
            scores = shape_scores(scores, c.reward_shaping, self.shaping_baseline())
        score_s = engine.timer() - t0

        if c.use_teacher_demos:
            width = max(trial_ids.shape[1], demo_ids.shape[1])
            trial_ids, trial_valid = pad_width(trial_ids, trial_valid, width, pad)
            demo_ids, demo_valid = pad_width(demo_ids, demo_valid, width, pad)
            batch = make_batch(
                torch.cat([q_ids, q_ids]),
                torch.cat([q_attn, q_attn]),
                torch.cat([trial_ids, demo_ids]),
                torch.cat([trial_valid, demo_valid]),
                eos,
            )
        else:
            batch = make_batch(q_ids, q_attn, trial_ids, trial_valid, eos)
        engine.free_cache()

        samples, trial_responses, demo_responses = [], [], []
        if engine.accelerator.is_main_process:
            # every response is decoded: the word counts of trials and demos need the whole batch
            trial_responses = decode_rows(self.tokenizer, trial_ids, trial_valid)
            demo_responses = decode_rows(self.tokenizer, demo_ids, demo_valid) if c.use_teacher_demos else []
            shown = min(SAMPLES_SHOWN, c.batch_size)
            demo_text = demo_responses[:shown] if c.use_teacher_demos else [None] * shown
            t_scores = trial_scores[:shown].tolist()
            d_scores = demo_scores[:shown].tolist() if demo_scores is not None else [None] * shown
            samples = [
                RolloutSample(prompts[i], trial_responses[i], t_scores[i], demo_text[i], d_scores[i])
                for i in range(shown)
            ]
        return Rollout(
            batch,
            scores,
            is_demo,
            trial_scores,
            demo_scores,
            samples,
            generate_s,
            score_s,
            trial_responses,
            demo_responses,
        )


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
    model: Any,
    query_ids: torch.Tensor,
    query_attn: torch.Tensor,
    generation_kwargs: dict[str, Any],
    pad_id: int,
    eos_token_id: int | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample continuations of left-padded queries; returns (response ids [N, R], valid mask)."""
    out = model.generate(query_ids, query_attn, **generation_kwargs)
    responses = out[:, query_ids.shape[1] :]
    if responses.shape[1] == 0:
        responses = torch.full(
            (len(query_ids), 1),
            eos_token_id if eos_token_id is not None else pad_id,
            dtype=torch.long,
            device=query_ids.device,
        )
    valid = response_mask(responses, eos_token_id).long()
    return responses, valid


def read_prompts(dataset: Any, column: str, tokenizer: Any = None) -> list[str]:
    """Prompts from a datasets.Dataset, a list of strings or a torch Dataset of strings or dicts.

    A prompt may be chat messages (a list of {"role", "content"}): it becomes text through `tokenizer`'s
    chat template (tnd_core.data.prompts.render_chat).
    """
    if dataset is None:
        raise ConfigError(
            "train_dataset", None, "is required for train(): a datasets.Dataset, a list of strings or a torch Dataset"
        )
    column_names = getattr(dataset, "column_names", None)
    if column_names is not None:
        if column not in column_names:
            raise ConfigError(
                "prompt_column", column, f"must be one of the dataset's columns: {', '.join(column_names)}"
            )
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
    if any(is_chat(p) for p in prompts):
        if tokenizer is None:
            raise ConfigError("prompt_column", column, "holds chat messages; pass the tokenizer that renders them")
        prompts = render_prompts(prompts, tokenizer, column)
    bad = next((p for p in prompts if not isinstance(p, str)), None)
    if bad is not None:
        raise ConfigError("train_dataset", repr(bad)[:40], f"every prompt must be a string (column '{column}')")
    return prompts


def read_texts(dataset: Any, prompt_column: str, tokenizer: Any = None) -> list[str]:
    """Corpus texts of CLM steps: a dataset's 'text' column when it has one, else `prompt_column`."""
    column = "text" if "text" in (getattr(dataset, "column_names", None) or ()) else prompt_column
    return read_prompts(dataset, column, tokenizer)
