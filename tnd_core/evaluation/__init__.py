"""Evaluation: word surprisal and words acquired, held-out perplexity, grammaticality of samples,
distinct-n, and teacher-to-student KL on held-out text.

Each metric works standalone on a wrapper (`TeacherModel`, `StudentModel`) or a plain causal LM with
its tokenizer. `Evaluator` bundles them into the `evaluator(student, teacher) -> dict` callable that
`CustomPPOTrainer` runs every `eval_steps`.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any, Callable

from tnd_core.data.recognizer import is_grammatical
from tnd_core.errors import ConfigError
from tnd_core.evaluation.diversity import distinct_n, vocabulary_size
from tnd_core.evaluation.grammar import grammaticality_rate, sample_texts
from tnd_core.evaluation.kl import teacher_student_kl
from tnd_core.evaluation.perplexity import perplexity
from tnd_core.evaluation.surprisal import DEFAULT_THRESHOLD_BITS, word_surprisals, words_acquired
from tnd_core.evaluation.words import load_word_list, tokenizer_vocabulary
from tnd_core.events import WordSurprisals

__all__ = [
    "DEFAULT_THRESHOLD_BITS",
    "Evaluator",
    "bundle_evaluator",
    "distinct_n",
    "grammaticality_rate",
    "load_word_list",
    "perplexity",
    "sample_texts",
    "teacher_student_kl",
    "vocabulary_size",
    "word_surprisals",
    "words_acquired",
]


class Evaluator:
    """`evaluator(student, teacher=None) -> {"eval/...": float}` on fixed held-out text and prompts.

    Metrics: eval/perplexity, eval/word_surprisal (mean over words), eval/words_acquired,
    eval/grammaticality (when a recognizer is given), eval/distinct_1, eval/distinct_2,
    eval/vocab_size, and eval/teacher_student_kl when a teacher is passed.
    The samples of the last call are kept in `last_samples`; per-word surprisals in `last_surprisals`,
    and in `last_words` with the words asked for (`vocabulary`, `word_list`) that the held-out
    sentences do not contain, which the trainer carries on its EvalEvent. `corpus_path` names the
    text whose word frequencies the run records beside them (tnd_core.evaluation.word_log).
    """

    def __init__(
        self,
        eval_texts: list[str],
        prompts: list[str] | None = None,
        tokenizer: Any = None,
        *,
        recognizer: Callable[[str], bool] | None = is_grammatical,
        acquisition_threshold: float = DEFAULT_THRESHOLD_BITS,
        num_samples: int = 64,
        max_new_tokens: int = 24,
        temperature: float = 1.0,
        batch_size: int = 64,
        seed: int = 0,
        vocabulary: list[str] | None = None,
        word_list: list[str] | None = None,
        corpus_path: str | Path | None = None,
    ):
        if not eval_texts:
            raise ConfigError("eval_texts", eval_texts, "must hold at least one held-out sentence")
        if not (acquisition_threshold > 0):
            raise ConfigError("acquisition_threshold", acquisition_threshold, "must be a number of bits > 0")
        if num_samples < 1:
            raise ConfigError("num_samples", num_samples, "must be >= 1")
        self.eval_texts = list(eval_texts)
        self.prompts = list(prompts)[:num_samples] if prompts else None
        self.tokenizer = tokenizer
        self.recognizer = recognizer
        self.acquisition_threshold = acquisition_threshold
        self.num_samples = num_samples
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.batch_size = batch_size
        self.seed = seed
        self.last_samples: list[str] = []
        self.last_surprisals: dict[str, float] = {}
        self.vocabulary = list(vocabulary or [])
        self.word_list = list(word_list or [])
        self.corpus_path = Path(corpus_path) if corpus_path is not None else None
        self.last_words: WordSurprisals | None = None

    def __call__(self, student: Any, teacher: Any = None) -> dict[str, float]:
        samples = sample_texts(
            student,
            self.prompts,
            self.tokenizer,
            n=self.num_samples,
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            batch_size=self.batch_size,
            seed=self.seed,
        )
        surprisals = word_surprisals(student, self.eval_texts, self.tokenizer, self.batch_size)
        metrics = {
            "eval/perplexity": perplexity(student, self.eval_texts, self.tokenizer, self.batch_size),
            "eval/word_surprisal": statistics.fmean(surprisals.values()) if surprisals else float("nan"),
            "eval/words_acquired": float(words_acquired(surprisals, self.acquisition_threshold)),
            "eval/distinct_1": distinct_n(samples, 1),
            "eval/distinct_2": distinct_n(samples, 2),
            "eval/vocab_size": float(vocabulary_size(samples)),
        }
        if self.recognizer is not None:
            metrics["eval/grammaticality"] = grammaticality_rate(samples, self.recognizer)
        if teacher is not None:
            metrics["eval/teacher_student_kl"] = teacher_student_kl(
                teacher, student, self.eval_texts, self.tokenizer, self.batch_size
            )
        self.last_samples = samples
        self.last_surprisals = surprisals
        wanted = dict.fromkeys([*self.vocabulary, *self.word_list])
        unscored = [word for word in wanted if word not in surprisals]
        self.last_words = WordSurprisals(dict(surprisals), unscored, list(self.word_list), self.acquisition_threshold)
        return metrics


def _jsonl_column(path: Path, column: str) -> list[str]:
    return [json.loads(line)[column] for line in path.read_text().splitlines() if line.strip()]


def bundle_evaluator(paths: Any, **kwargs: Any) -> Evaluator:
    """An `Evaluator` on the bundle's held-out sentences and held-out prompts, measuring every word of the
    bundle's vocabulary (and of `word_list`), with word frequencies from the bundle's corpus (keyword
    arguments as `Evaluator`)."""
    eval_file = Path(paths.eval)
    kwargs.setdefault("vocabulary", tokenizer_vocabulary(paths.tokenizer))
    kwargs.setdefault("corpus_path", paths.corpus)
    return Evaluator(_jsonl_column(eval_file, "text"), _jsonl_column(eval_file, "prompt"), **kwargs)
