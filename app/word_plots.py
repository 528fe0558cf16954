"""The word-acquisition view's data and figures: per-word tables built from a run folder's word files
(`tnd_core.evaluation.word_log`), learning curves, the words x evaluations heat map with the words'
frequencies beside it, the across-runs scatter of acquisition ages, and their CSV exports.

Definitions (status, age, the two methods) are docs/ALGORITHM.md, "Word acquisition".
"""

from __future__ import annotations

import csv
import io
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from tnd_core import runs
from tnd_core import stats as stat
from tnd_core.evaluation.acquisition import (
    ACQUIRED,
    KNOWN_AT_START,
    NOT_ACQUIRED,
    UNSCORED,
    acquisition_ages,
    age_order,
)
from tnd_core.evaluation.word_log import (
    WORD_FREQUENCY_FILE,
    WORD_SURPRISAL_FILE,
    WordFrequencies,
    WordHistory,
    read_word_frequencies,
    read_word_history,
)

WORD_SETS = ("all words", "vocabulary", "uploaded list")
X_AXES = ("step", "student tokens")
FREQUENCY_KINDS = ("corpus", "demos", "trials")
TABLE_COLUMNS = [
    "word",
    "status",
    "age_step",
    "age_tokens",
    "method",
    "first_surprisal",
    "last_surprisal",
    "corpus",
    "demos",
    "trials",
]
MAX_HEATMAP_WORDS = 80  # rows stay readable; the table and the CSVs hold every word
CURVE_COLORS = ("#4f46e5", "#dc2626", "#16a34a", "#d97706", "#0891b2", "#9333ea", "#db2777", "#65a30d")


@dataclass
class RunWords:
    """One run's word record: the surprisal history, the latest word counts, a step -> student tokens map
    (empty when metrics.jsonl has no `tokens/student_seen`) and the per-word table."""

    history: WordHistory
    frequencies: WordFrequencies
    token_steps: tuple[list[float], list[float]]
    table: pd.DataFrame


def tokens_at(steps: Sequence[float], token_steps: tuple[list[float], list[float]]) -> list[float | None]:
    """Student tokens seen at each of `steps`, linear between logged steps (None without the record or
    outside the logged steps)."""
    xs, ys = token_steps
    if not xs:
        return [None for _ in steps]
    return [float(np.interp(s, xs, ys)) if xs[0] <= s <= xs[-1] else None for s in steps]


def _token_steps(folder: Path) -> tuple[list[float], list[float]]:
    table = runs.read_metrics(folder).steps
    seen = table.columns.get(stat.TOKENS_SEEN, [])
    pairs = [(float(s), float(v)) for s, v in zip(table.steps, seen) if v == v]
    return [s for s, _ in pairs], [v for _, v in pairs]


def word_table(
    history: WordHistory,
    frequencies: WordFrequencies,
    method: str = "threshold",
    token_steps: tuple[list[float], list[float]] = ([], []),
) -> pd.DataFrame:
    """One row per word (scored at least once, then the unscored words asked for), ordered by acquisition:
    TABLE_COLUMNS. Ages in steps and, with the token record, in student tokens."""
    ages = acquisition_ages(history.steps, history.surprisal, history.threshold, method)
    order = age_order(ages)
    rows = []
    for word in order:
        curve = [v for v in history.surprisal[word] if v is not None]
        a = ages[word]
        rows.append(
            [
                word,
                a.status,
                a.age,
                tokens_at([a.age], token_steps)[0] if a.age is not None else None,
                a.method,
                curve[0] if curve else None,
                curve[-1] if curve else None,
                *(getattr(frequencies, kind).get(word, 0) for kind in FREQUENCY_KINDS),
            ]
        )
    for word in history.unscored:
        if word not in ages:
            counts = [getattr(frequencies, kind).get(word, 0) for kind in FREQUENCY_KINDS]
            rows.append([word, UNSCORED, None, None, "", None, None, *counts])
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


_CACHE: dict[tuple[Path, str], tuple[tuple, RunWords | None]] = {}
_CACHE_LOCK = threading.Lock()
_CACHED_RUNS = 16


def files_key(folder: Path) -> tuple:
    """What changes when the run's word or metrics files grow: (mtime, size) of each (None when missing)."""
    key = []
    for name in (WORD_SURPRISAL_FILE, WORD_FREQUENCY_FILE, runs.METRICS_FILE):
        try:
            info = (folder / name).stat()
            key.append((info.st_mtime_ns, info.st_size))
        except OSError:
            key.append(None)
    return tuple(key)


def read_run_words(folder: str | Path, method: str = "threshold") -> RunWords | None:
    """The word record of the run in `folder`; None before its first evaluation that measured words.
    Cached until one of the run's word or metrics files changes (so a live view redraws only what grew)."""
    folder = Path(folder)
    key = files_key(folder)
    with _CACHE_LOCK:
        cached = _CACHE.get((folder, method))
    if cached is not None and cached[0] == key:
        return cached[1]
    history = read_word_history(folder)
    result = None
    if history is not None:
        frequencies = read_word_frequencies(folder)
        token_steps = _token_steps(folder)
        result = RunWords(history, frequencies, token_steps, word_table(history, frequencies, method, token_steps))
    with _CACHE_LOCK:
        if len(_CACHE) >= _CACHED_RUNS:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[(folder, method)] = (key, result)
    return result


def select_words(table: pd.DataFrame, history: WordHistory, word_set: str) -> pd.DataFrame:
    """The rows of `table` in `word_set`: all words, the vocabulary (those not only in the uploaded list)
    or the uploaded list."""
    if word_set == "uploaded list":
        return table[table["word"].isin(history.word_list)]
    if word_set == "vocabulary":
        only_listed = set(history.word_list) - set(history.surprisal)
        return table[~table["word"].isin(only_listed)]
    return table


def default_curve_words(table: pd.DataFrame, n: int = 6) -> list[str]:
    """`n` acquired words spread evenly from the earliest to the latest age (else the first rows)."""
    acquired = table[table["status"] == ACQUIRED]["word"].tolist() or table["word"].tolist()
    if len(acquired) <= n:
        return acquired
    picks = np.linspace(0, len(acquired) - 1, n).round().astype(int)
    return [acquired[i] for i in picks]


# ---------------------------------------------------------------------- figures
def curves_figure_empty(title: str = "No word record yet") -> go.Figure:
    """A blank figure with a title, for a run without a word record."""
    fig = go.Figure()
    fig.update_layout(title=title, height=300, margin=dict(l=50, r=20, t=40, b=40))
    return fig


def _x_values(steps: Sequence[float], token_steps, x_axis: str) -> list[float | None]:
    return tokens_at(steps, token_steps) if x_axis == "student tokens" else [float(s) for s in steps]


def curves_figure(run: RunWords, words: Sequence[str], x_axis: str = "step") -> go.Figure:
    """Surprisal of each chosen word at each evaluation (log x), the threshold, and each word's age."""
    history, table = run.history, run.table.set_index("word")
    fig = go.Figure()
    xs = _x_values(history.steps, run.token_steps, x_axis)
    for i, word in enumerate(w for w in words if w in history.surprisal):
        color = CURVE_COLORS[i % len(CURVE_COLORS)]
        fig.add_trace(
            go.Scatter(x=xs, y=history.surprisal[word], mode="lines+markers", name=word, line=dict(color=color))
        )
        age = table.loc[word, "age_tokens" if x_axis == "student tokens" else "age_step"]
        if pd.notna(age):  # the age: where the word's curve crosses the threshold (or its sigmoid's midpoint)
            fig.add_trace(
                go.Scatter(
                    x=[float(age)],
                    y=[history.threshold],
                    mode="markers",
                    marker=dict(symbol="x", size=11, color=color),
                    name=f"{word}: age {float(age):,.0f}",
                    showlegend=False,
                )
            )
    fig.add_hline(
        y=history.threshold,
        line=dict(color="gray", dash="dash"),
        annotation_text=f"threshold {history.threshold:g} bits",
    )
    fig.update_layout(
        title="Learning curves",
        uirevision="word-curves",
        height=360,
        margin=dict(l=50, r=20, t=40, b=40),
        xaxis=dict(title=x_axis, type="log"),
        yaxis_title="surprisal (bits)",
        legend=dict(orientation="h", y=-0.2),
    )
    return fig


def heatmap_data(run: RunWords, words: Sequence[str]) -> tuple[list[str], list[int], list[list[float | None]]]:
    """(words, steps, surprisal[word][evaluation]) for the heat map, words in the given (age) order."""
    present = [w for w in words if w in run.history.surprisal][:MAX_HEATMAP_WORDS]
    return present, list(run.history.steps), [list(run.history.surprisal[w]) for w in present]


def _matrix(rows: list[list[float | None]]) -> np.ndarray:
    return np.array([[math.nan if v is None else v for v in row] for row in rows], dtype=float)


def heatmap_figure(run: RunWords, words: Sequence[str]) -> go.Figure:
    """Words x evaluations coloured by surprisal, earliest-acquired word on top, with log10(1 + count) of
    each word in the corpus, the demos and the trials in a panel beside it."""
    names, steps, values = heatmap_data(run, words)
    scored = sum(1 for w in words if w in run.history.surprisal)
    shown = f"the first {len(names)} of {scored} words" if scored > len(names) else f"{len(names)} words"
    counts = [[math.log10(1 + getattr(run.frequencies, kind).get(w, 0)) for kind in FREQUENCY_KINDS] for w in names]
    raw = [[getattr(run.frequencies, kind).get(w, 0) for kind in FREQUENCY_KINDS] for w in names]
    fig = go.Figure()
    fig.add_trace(
        go.Heatmap(
            z=_matrix(values),
            x=[str(s) for s in steps],
            y=names,
            colorscale="Viridis_r",
            colorbar=dict(title="bits", x=0.74),
            hovertemplate="%{y} at step %{x}: %{z:.2f} bits<extra></extra>",
            xaxis="x",
            yaxis="y",
        )
    )
    fig.add_trace(
        go.Heatmap(
            z=np.array(counts, dtype=float),
            x=list(FREQUENCY_KINDS),
            y=names,
            customdata=np.array(raw),
            colorscale="Blues",
            colorbar=dict(title="log10(1+n)", x=1.0),
            hovertemplate="%{y} in %{x}: %{customdata} times<extra></extra>",
            xaxis="x2",
            yaxis="y",
        )
    )
    fig.update_layout(
        title=f"Surprisal by evaluation, words by acquisition age ({shown})",
        uirevision="word-heatmap",
        height=max(360, 80 + 12 * len(names)),
        margin=dict(l=90, r=20, t=40, b=40),
        xaxis=dict(domain=[0.0, 0.7], title="step", type="category"),
        xaxis2=dict(domain=[0.8, 0.95], anchor="y", title="frequency"),
        yaxis=dict(autorange="reversed", type="category"),
    )
    return fig


def scatter_table(table_a: pd.DataFrame, table_b: pd.DataFrame, column: str = "age_step") -> pd.DataFrame:
    """word | age_a | age_b | status_a | status_b for the words both runs scored, `column` the age unit."""
    a = table_a.set_index("word")[[column, "status"]]
    b = table_b.set_index("word")[[column, "status"]]
    joined = a.join(b, how="inner", lsuffix="_a", rsuffix="_b").reset_index()
    joined = joined[(joined["status_a"] != UNSCORED) & (joined["status_b"] != UNSCORED)]
    joined = joined.rename(columns={f"{column}_a": "age_a", f"{column}_b": "age_b"})
    return joined[["word", "age_a", "age_b", "status_a", "status_b"]].reset_index(drop=True)


def not_acquired_position(run_a: RunWords, run_b: RunWords, x_axis: str = "step") -> float | None:
    """Where the scatter puts "not acquired": 1.5 times the later of the two runs' last evaluations (in
    steps, or in student tokens; None without the token record)."""
    lasts = [_x_values(run.history.steps[-1:], run.token_steps, x_axis)[0] for run in (run_a, run_b)]
    return 1.5 * max(lasts) if None not in lasts else None


def scatter_figure(
    pairs: pd.DataFrame, name_a: str, name_b: str, unit: str = "step", not_acquired_at: float | None = None
) -> go.Figure:
    """Each word's acquisition age in run A against run B, with the diagonal: a word above it was acquired
    earlier in A. Words acquired (or known at start) in one run only sit on the line `not_acquired_at`
    (past both runs' last evaluation) of the other, when it is given."""
    timed = pairs["status_a"].isin([ACQUIRED, KNOWN_AT_START]) & pairs["status_b"].isin([ACQUIRED, KNOWN_AT_START])
    both = pairs[timed]
    fig = go.Figure()
    groups = [("acquired in both", both, both["age_a"], both["age_b"], "circle")]
    if not_acquired_at:
        only_a = pairs[pairs["status_a"].isin([ACQUIRED, KNOWN_AT_START]) & (pairs["status_b"] == NOT_ACQUIRED)]
        only_b = pairs[pairs["status_b"].isin([ACQUIRED, KNOWN_AT_START]) & (pairs["status_a"] == NOT_ACQUIRED)]
        edge_a, edge_b = [not_acquired_at] * len(only_a), [not_acquired_at] * len(only_b)
        groups.append(("in A only, at the top", only_a, only_a["age_a"], edge_a, "triangle-up"))
        groups.append(("in B only, at the right", only_b, edge_b, only_b["age_b"], "triangle-right"))
    for label, rows, xs, ys, symbol in groups:
        if len(rows):
            fig.add_trace(
                go.Scatter(
                    x=[float(v) for v in xs],
                    y=[float(v) for v in ys],
                    text=rows["word"].tolist(),
                    mode="markers",
                    marker=dict(symbol=symbol, size=9),
                    name=f"{label} ({len(rows)})",
                    hovertemplate="%{text}: %{x:.3g} in A, %{y:.3g} in B<extra></extra>",
                )
            )
    ages = [float(v) for v in (*both["age_a"], *both["age_b"])] + ([not_acquired_at] if not_acquired_at else [])
    if ages:
        low, high = min(ages), max(ages)
        fig.add_trace(go.Scatter(x=[low, high], y=[low, high], mode="lines", name="same age", line=dict(dash="dash")))
    fig.update_layout(
        title=f"Acquisition age ({unit}): {len(both)} words acquired in both runs",
        uirevision="word-scatter",
        height=420,
        margin=dict(l=60, r=20, t=40, b=50),
        xaxis=dict(title=f"A: {name_a}", type="log"),
        yaxis=dict(title=f"B: {name_b}", type="log"),
        legend=dict(orientation="h", y=-0.2),
    )
    return fig


# ---------------------------------------------------------------------- CSV
def table_csv(table: pd.DataFrame) -> str:
    """A table as CSV text (empty cells for missing values)."""
    return table.to_csv(index=False, lineterminator="\n")


def curves_csv(run: RunWords, words: Sequence[str] | None = None) -> str:
    """Long CSV of the learning curves: word,step,student_tokens,surprisal (one row per scored value)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["word", "step", "student_tokens", "surprisal"])
    tokens = tokens_at(run.history.steps, run.token_steps)
    for word in words if words is not None else run.history.words:
        for step, seen, value in zip(run.history.steps, tokens, run.history.surprisal.get(word, [])):
            if value is not None:
                writer.writerow([word, step, "" if seen is None else repr(seen), repr(value)])
    return buffer.getvalue()
