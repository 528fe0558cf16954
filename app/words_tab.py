"""Words tab: which words a run's student learns when (docs/ALGORITHM.md, "Word acquisition").

Pick a run (every run under the runs root, and the current job's folder): per-word learning curves, a
heat map of words x evaluations ordered by acquisition age with each word's frequency in the corpus,
the demos and the trials beside it, the per-word table, and for a second run a scatter of each word's
age in one against the other. Everything exports as CSV. A timer redraws when the run's word files
grow, so the view follows a run while it trains.
"""

from __future__ import annotations

import html
import tempfile
import time
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from app import word_plots as wp
from app.context import AppContext
from app.hosting import run_name
from tnd_core import runs
from tnd_core.evaluation.acquisition import ACQUIRED, KNOWN_AT_START, METHODS, NOT_ACQUIRED, UNSCORED

REFRESH_S = 5.0
DISPLAY_DECIMALS = {"age_step": 1, "age_tokens": 0, "first_surprisal": 3, "last_surprisal": 3}
CSV_KEEP_S = 3600.0
UNSCORED_SHOWN = 40
NO_RECORD = (
    "No word record yet: a run writes one at each evaluation (`eval_steps` > 0) when the student is the bundle's."
)


def run_choices(ctx: AppContext) -> list[str]:
    """Names of the runs under the runs root, newest first, with the current job's folder first when it
    lies elsewhere (a local run given an absolute output_dir)."""
    names = [record.name for record in runs.list_runs(ctx.policy.runs_root)]
    current = _current_folder(ctx)
    if current is not None and current.parent.resolve() != ctx.policy.runs_root.resolve():
        names.insert(0, current.name)
    return names


def _current_folder(ctx: AppContext) -> Path | None:
    config = ctx.runner.store.snapshot().config
    return Path(config.output_dir) if config is not None else None


def run_folder(ctx: AppContext, name: str | None) -> Path | None:
    """The folder of the run called `name`: under the runs root, else the current job's; None for anything else."""
    if not name or run_name(name) != name:
        return None
    folder = ctx.policy.runs_root / name
    if folder.is_dir():
        return folder
    current = _current_folder(ctx)
    return current if current is not None and current.name == name and current.is_dir() else None


def summary_markdown(run: wp.RunWords | None, table: pd.DataFrame | None, method: str) -> str:
    """Counts by status, the evaluated steps, and the words that could not be scored."""
    if run is None or table is None:
        return NO_RECORD
    counts = table["status"].value_counts().to_dict()
    steps = run.history.steps
    text = (
        f"**{len(table)} words** at {len(steps)} evaluations (steps {steps[0]}–{steps[-1]}), threshold "
        f"{run.history.threshold:g} bits: **{counts.get(ACQUIRED, 0)} acquired**, "
        f"{counts.get(KNOWN_AT_START, 0)} known at start, {counts.get(NOT_ACQUIRED, 0)} not acquired, "
        f"{counts.get(UNSCORED, 0)} unscored."
    )
    if method == "sigmoid":
        fitted = int((table["method"] == "sigmoid").sum())
        text += f" Ages from a sigmoid fit: {fitted} of {counts.get(ACQUIRED, 0)} acquired words (the rest: threshold)."
    unscored = table[table["status"] == UNSCORED]["word"].tolist()
    if unscored:
        shown = ", ".join(html.escape(w) for w in unscored[:UNSCORED_SHOWN])
        more = f" and {len(unscored) - UNSCORED_SHOWN} more" if len(unscored) > UNSCORED_SHOWN else ""
        text += f"\n\nNot in the held-out sentences, so not scored: {shown}{more}."
    if not run.token_steps[0]:
        text += "\n\n(No `tokens/student_seen` in this run's metrics: ages in steps only.)"
    return text


def _csv_file(text: str, stem: str) -> str:
    """Write `text` to a fresh file for a download; files older than an hour are removed."""
    folder = Path(tempfile.gettempdir()) / "tnd-words-csv"
    folder.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for old in folder.glob("*.csv"):
        try:
            if now - old.stat().st_mtime > CSV_KEEP_S:
                old.unlink()
        except OSError:
            pass  # another session removed it first
    with tempfile.NamedTemporaryFile("w", suffix=".csv", prefix=f"{run_name(stem)}-", dir=folder, delete=False) as f:
        f.write(text)
    return f.name


def build(ctx: AppContext) -> None:
    """Create the Words tab."""
    gr.Markdown(
        "Which words the student learns, and when. Each evaluation measures every word's surprisal on the "
        "held-out sentences; a word is **acquired** when its curve ends under the threshold, at the step where it "
        "crosses it (or, by *sigmoid*, the midpoint of a sigmoid fitted to surprisal against log step). Add words "
        "to follow with the `eval_word_list` option (a file, one word a line)."
    )
    names = run_choices(ctx)
    with gr.Row():
        run_pick = gr.Dropdown(names, value=names[0] if names else None, label="Run", elem_id="words-run", scale=2)
        method = gr.Radio(list(METHODS), value="threshold", label="Age of acquisition", elem_id="words-method")
        word_set = gr.Radio(list(wp.WORD_SETS), value="all words", label="Words", elem_id="words-set")
        x_axis = gr.Radio(list(wp.X_AXES), value="step", label="x-axis", elem_id="words-axis")
        refresh = gr.Button("Refresh", size="sm", elem_id="btn-words-refresh", scale=0)
    summary = gr.Markdown(elem_id="words-summary")
    words = gr.Dropdown([], multiselect=True, label="Words to plot", elem_id="words-pick")
    curves = gr.Plot(elem_id="words-curves", show_label=False)
    heatmap = gr.Plot(elem_id="words-heatmap", show_label=False)
    table = gr.Dataframe(
        pd.DataFrame(columns=wp.TABLE_COLUMNS),
        interactive=False,
        label="Words by acquisition age",
        elem_id="words-table",
        max_height=400,
        show_search="search",
    )
    with gr.Row():
        table_btn = gr.Button("Export the word table as CSV", elem_id="btn-words-table-csv")
        curves_btn = gr.Button("Export the learning curves as CSV", elem_id="btn-words-curves-csv")
    csv_file = gr.File(label="CSV", elem_id="words-csv", interactive=False)

    gr.Markdown("### Two runs: acquisition age in one against the other")
    with gr.Row():
        other_pick = gr.Dropdown(names, value=None, label="Run B", elem_id="words-run-b", scale=2)
        scatter_btn = gr.Button("Export the ages of both runs as CSV", elem_id="btn-words-scatter-csv")
    scatter = gr.Plot(elem_id="words-scatter", show_label=False)
    timer = gr.Timer(REFRESH_S)
    drawn = gr.State("")  # what this session shows (run, files, options), to skip ticks that change nothing

    def load(name: str | None, how: str) -> wp.RunWords | None:
        folder = run_folder(ctx, name)
        return wp.read_run_words(folder, how) if folder is not None else None

    def shown_table(run: wp.RunWords | None, chosen_set: str) -> pd.DataFrame | None:
        return wp.select_words(run.table, run.history, chosen_set) if run is not None else None

    def draw_key(name: str | None, other: str | None, *options: Any) -> str:
        folders = [run_folder(ctx, n) for n in (name, other)]
        files = [wp.files_key(f) if f is not None else None for f in folders]
        return repr((name, other, files, options))

    def draw(name: str | None, how: str, chosen_set: str, axis: str, picked: list[str] | None, other: str | None):
        run = load(name, how)
        shown = shown_table(run, chosen_set)
        if run is None or shown is None:
            empty = wp.curves_figure_empty()
            return [NO_RECORD, gr.update(choices=[], value=[]), empty, empty, pd.DataFrame(columns=wp.TABLE_COLUMNS)]
        choices = shown["word"].tolist()
        keep = [w for w in picked or [] if w in choices] or wp.default_curve_words(shown)
        return [
            summary_markdown(run, shown, how),
            gr.update(choices=choices, value=keep),
            wp.curves_figure(run, keep, axis),
            wp.heatmap_figure(run, choices),
            shown.round(DISPLAY_DECIMALS),  # the CSV exports keep every digit
        ]

    def draw_scatter(name: str | None, other: str | None, how: str, chosen_set: str, axis: str):
        run_a, run_b = load(name, how), load(other, how)
        if run_a is None or run_b is None:
            return wp.curves_figure_empty("Pick run B (a run with a word record) to compare ages")
        unit = "age_tokens" if axis == "student tokens" else "age_step"
        pairs = wp.scatter_table(shown_table(run_a, chosen_set), shown_table(run_b, chosen_set), unit)
        return wp.scatter_figure(pairs, name, other, axis, wp.not_acquired_position(run_a, run_b, axis))

    main_outputs = [summary, words, curves, heatmap, table]
    main_inputs = [run_pick, method, word_set, x_axis, words, other_pick]

    def on_change(name, how, chosen_set, axis, picked, other):
        key = draw_key(name, other, how, chosen_set, axis)
        return [
            *draw(name, how, chosen_set, axis, picked, other),
            draw_scatter(name, other, how, chosen_set, axis),
            key,
        ]

    everything = [*main_outputs, scatter, drawn]
    for control in (run_pick, method, word_set, x_axis):
        control.change(on_change, inputs=main_inputs, outputs=everything, queue=False, show_progress="hidden")
    other_pick.change(
        lambda name, other, how, chosen_set, axis: draw_scatter(name, other, how, chosen_set, axis),
        inputs=[run_pick, other_pick, method, word_set, x_axis],
        outputs=scatter,
        queue=False,
    )

    def on_words(name, how, picked, axis):
        run = load(name, how)
        return wp.curves_figure(run, picked or [], axis) if run is not None else wp.curves_figure_empty()

    words.input(on_words, inputs=[run_pick, method, words, x_axis], outputs=curves, queue=False)

    def on_tick(name, how, chosen_set, axis, picked, other, shown_key):
        known = run_choices(ctx)
        keep = name if name in known else (known[0] if known else None)
        lists = [
            gr.update(choices=known, value=keep),
            gr.update(choices=known, value=other if other in known else None),
        ]
        key = draw_key(keep, other, how, chosen_set, axis)
        if key == shown_key:
            return [*lists, *[gr.skip()] * len(everything)]
        draws = draw(keep, how, chosen_set, axis, picked, other)
        return [*lists, *draws, draw_scatter(keep, other, how, chosen_set, axis), key]

    tick_inputs = [*main_inputs, drawn]
    tick_outputs = [run_pick, other_pick, *everything]
    timer.tick(on_tick, inputs=tick_inputs, outputs=tick_outputs, queue=False, show_progress="hidden")
    refresh.click(lambda *a: on_tick(*a[:-1], ""), inputs=tick_inputs, outputs=tick_outputs, queue=False)

    def export(kind: str):
        def handler(name, how, chosen_set, picked, other):
            run = load(name, how)
            if run is None:
                raise gr.Error(NO_RECORD)
            shown = shown_table(run, chosen_set)
            if kind == "table":
                return _csv_file(wp.table_csv(shown), f"{name}-words")
            if kind == "curves":
                return _csv_file(wp.curves_csv(run, shown["word"].tolist()), f"{name}-curves")
            run_b = load(other, how)
            if run_b is None:
                raise gr.Error("Pick run B, a run with a word record, first.")
            pairs = wp.scatter_table(shown, shown_table(run_b, chosen_set))
            return _csv_file(wp.table_csv(pairs), f"{name}-vs-{other}")

        return handler

    export_inputs = [run_pick, method, word_set, words, other_pick]
    table_btn.click(export("table"), inputs=export_inputs, outputs=csv_file, api_name="words_table_csv")
    curves_btn.click(export("curves"), inputs=export_inputs, outputs=csv_file, api_name="words_curves_csv")
    scatter_btn.click(export("scatter"), inputs=export_inputs, outputs=csv_file, api_name="words_ages_csv")
