"""The run's per-word record: each evaluation's word surprisals and the word frequencies of the corpus,
the teacher's demos and the student's trials, in the run folder beside metrics.jsonl.

`WordLog` is an event subscriber (attached by `tnd_core.pipeline.build_trainer` when the run has an
evaluator). The readers below are what the app's word view uses, during a run and after it: they
skip a last line still being written and, after a resume, keep the rows of the resumed run.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tnd_core.evaluation.words import count_words
from tnd_core.events import EvalEvent, Event, RolloutTextsEvent, StatusEvent

WORD_SURPRISAL_FILE = "word_surprisal.jsonl"
WORD_FREQUENCY_FILE = "word_frequencies.jsonl"
ENDED_STATES = ("completed", "stopped", "early_stopped", "failed")


class WordLog:
    """Appends a row to `word_surprisal.jsonl` at each evaluation that measured words, and the running
    word counts of trials and demos (with the corpus's) to `word_frequencies.jsonl` at each evaluation
    and when the run ends.

    Trials and demos are counted at every PPO step from `RolloutTextsEvent` (the main process's batch).
    A resumed run starts from the counts of the last row before its first step.
    """

    def __init__(self, output_dir: str | Path, corpus_path: str | Path | None = None):
        self.output_dir = Path(output_dir)
        self.corpus_path = Path(corpus_path) if corpus_path is not None else None
        self.trials: Counter = Counter()
        self.demos: Counter = Counter()
        self.counted_step = 0
        self._written_step = -1
        self._corpus: dict[str, int] | None = None
        self._started = False

    def __call__(self, event: Event) -> None:
        if isinstance(event, RolloutTextsEvent):
            if not self._started:
                self._continue_counts(event.step)
            count_words(event.trials, self.trials)
            count_words(event.demos, self.demos)
            self.counted_step = event.step
        elif isinstance(event, EvalEvent) and event.words is not None:
            words = event.words
            row = {
                "step": event.step,
                "threshold": words.threshold,
                "surprisal": words.surprisal,
                "unscored": words.unscored,
                "word_list": words.word_list,
            }
            self._append(WORD_SURPRISAL_FILE, row)
            self._write_counts(event.step)
        elif isinstance(event, StatusEvent) and event.state in ENDED_STATES and self.counted_step > self._written_step:
            self._write_counts(self.counted_step)

    def _continue_counts(self, first_step: int) -> None:
        self._started = True
        earlier = [row for row in read_rows(self.output_dir / WORD_FREQUENCY_FILE) if row["step"] < first_step]
        if earlier:
            self.trials.update(earlier[-1].get("trials", {}))
            self.demos.update(earlier[-1].get("demos", {}))

    def corpus_counts(self) -> dict[str, int]:
        """Word counts of the corpus, counted once (on first use, so that building the trainer stays quick)."""
        if self._corpus is None:
            self._corpus = {}
            if self.corpus_path is not None and self.corpus_path.is_file():
                with open(self.corpus_path, encoding="utf-8") as f:
                    self._corpus = dict(count_words(f))
        return self._corpus

    def _write_counts(self, step: int) -> None:
        row = {"step": step, "corpus": self.corpus_counts(), "trials": dict(self.trials), "demos": dict(self.demos)}
        self._append(WORD_FREQUENCY_FILE, row)
        self._written_step = step

    def _append(self, name: str, row: dict[str, Any]) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        with open(self.output_dir / name, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")


# ---------------------------------------------------------------------- reading
def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a word file in step order, as the run now stands: a line that is not (yet) JSON is
    skipped, and where the steps go back (a resume, or a new run in the same folder) the later rows
    replace every earlier row from that step on. Empty when the file does not exist."""
    path = Path(path)
    if not path.is_file():
        return []
    rows: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line still being written
            if not isinstance(row, dict) or not isinstance(row.get("step"), int):
                continue
            while rows and rows[-1]["step"] >= row["step"]:
                rows.pop()
            rows.append(row)
    return rows


@dataclass
class WordHistory:
    """Every evaluation's word surprisals of one run: `surprisal[word]` lists one value per step in
    `steps` (None where that evaluation did not score the word)."""

    steps: list[int]
    surprisal: dict[str, list[float | None]]
    threshold: float
    unscored: list[str] = field(default_factory=list)
    word_list: list[str] = field(default_factory=list)

    @property
    def words(self) -> list[str]:
        return sorted(self.surprisal)


def read_word_history(run_dir: str | Path) -> WordHistory | None:
    """The run's `word_surprisal.jsonl` as a `WordHistory`; None when it has no row yet."""
    rows = read_rows(Path(run_dir) / WORD_SURPRISAL_FILE)
    if not rows:
        return None
    words = sorted({word for row in rows for word in row.get("surprisal", {})})
    by_row = [row.get("surprisal", {}) for row in rows]
    surprisal = {word: [values.get(word) for values in by_row] for word in words}
    last = rows[-1]
    return WordHistory(
        steps=[row["step"] for row in rows],
        surprisal=surprisal,
        threshold=float(last.get("threshold", 0.0)),
        unscored=list(last.get("unscored", [])),
        word_list=list(last.get("word_list", [])),
    )


@dataclass
class WordFrequencies:
    """How often each word occurs in the corpus, in the teacher's demos and in the student's trials
    (demos and trials counted up to `step`)."""

    step: int = 0
    corpus: dict[str, int] = field(default_factory=dict)
    demos: dict[str, int] = field(default_factory=dict)
    trials: dict[str, int] = field(default_factory=dict)


def read_word_frequencies(run_dir: str | Path) -> WordFrequencies:
    """The run's latest word counts (all empty when it recorded none)."""
    rows = read_rows(Path(run_dir) / WORD_FREQUENCY_FILE)
    if not rows:
        return WordFrequencies()
    last = rows[-1]
    return WordFrequencies(last["step"], *(dict(last.get(kind, {})) for kind in ("corpus", "demos", "trials")))
