"""Runs tab: every run under the runs root, as its folder says (status.json, metrics.jsonl, checkpoints).

The table is read from disk (`tnd_core.runs.list_runs`), so it survives server restarts: a run whose
process died shows as interrupted and can be resumed from its latest checkpoint. A run is renamed,
annotated, deleted, resumed or forked here (owner only, except fork, which leaves the old run
alone); two or more runs are overlaid on one x-axis, their differing options listed, and their
metrics exported as one long CSV. The live job's own view stays the Train tab.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path
from typing import Any, Sequence

import gradio as gr
import pandas as pd
import yaml

from app import plots, services
from app.context import AppContext
from tnd_core import runs
from tnd_core.errors import ConfigError, TndError

TABLE_COLUMNS = [
    "name",
    "run",
    "status",
    "steps done",
    "of",
    "created",
    "duration",
    "final reward",
    "final teacher-student KL",
]
AXIS_CHOICES = [(label, key) for key, label in runs.X_AXES.items()]
REFRESH_S = 5.0
CSV_NAME = "runs-metrics.csv"


def _when(seconds: float | None) -> str:
    if not seconds:
        return ""
    return dt.datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _round(value: float | None) -> float | None:
    return None if value is None or value != value else round(value, 4)


def runs_frame(records: Sequence[runs.RunRecord]) -> pd.DataFrame:
    """One row per run: name, folder, status, steps, created, duration, final reward and teacher-student
    KL, then one column per final evaluation metric (any run has)."""
    eval_names = sorted({name for record in records for name in record.eval_metrics})
    rows = []
    for r in records:
        status = r.status.replace("_", " ") + (f": {r.message}" if r.status == "failed" and r.message else "")
        row = [
            r.label,
            r.name,
            status,
            r.steps_done,
            r.total_steps or None,
            _when(r.created),
            _duration(r.duration_s),
            _round(r.final_reward),
            _round(r.final_teacher_student_kl),
        ]
        row += [_round(r.eval_metrics.get(name)) for name in eval_names]
        rows.append(row)
    columns = TABLE_COLUMNS + [name.removeprefix("eval/") for name in eval_names]
    return pd.DataFrame(rows, columns=columns)


def run_label(record: runs.RunRecord) -> str:
    """How a run is called in legends and the CSV: its label, with the folder when it was renamed."""
    return record.name if record.label == record.name else f"{record.label} ({record.name})"


def overlay(
    ctx: AppContext, names: Sequence[str], axis: str, eval_metric: str | None
) -> tuple[list[Any], pd.DataFrame]:
    """The five side-by-side figures of the runs `names` and their config diff table."""
    records = [runs.read_run(services.run_path(ctx, name)) for name in names]
    series = [runs.overlay_series(run_label(r), runs.read_metrics(r.path), axis) for r in records]
    figures = plots.overlay_figures(series, runs.X_AXES[axis], eval_metric or None)
    return figures, config_diff_frame(records)


def config_diff_frame(records: Sequence[runs.RunRecord]) -> pd.DataFrame:
    """option | one column per run: only the options whose values differ."""
    diff = runs.config_diff({run_label(r): runs.read_config(r.path) for r in records})
    columns = ["option", *[run_label(r) for r in records]]
    return pd.DataFrame([[name, *[_cell(v) for v in values]] for name, values in diff], columns=columns)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    # one line per value: flow style for lists and mappings, without YAML's document end marker
    text = value if isinstance(value, str) else yaml.safe_dump(value, default_flow_style=True, width=1000)
    return text.strip().removesuffix("...").strip()


def export_csv(ctx: AppContext, names: Sequence[str]) -> str:
    """The selected runs' metrics as one long CSV (run, step, metric, value) in a fresh temporary folder."""
    if not names:
        raise TndError("Pick one or more runs to export.")
    records = [runs.read_run(services.run_path(ctx, name)) for name in names]
    rows = runs.long_rows({run_label(r): runs.read_metrics(r.path) for r in records})
    path = Path(tempfile.mkdtemp(prefix="tnd-runs-")) / CSV_NAME
    runs.write_long_csv(rows, path)
    return str(path)


def parse_changes(text: str) -> dict[str, Any]:
    """A fork's changed options from 'option: value' lines (YAML)."""
    if not (text or "").strip():
        return {}
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError("changed options", text, f"'option: value' lines ({exc.__class__.__name__})") from None
    if not isinstance(values, dict):
        raise ConfigError("changed options", text, "'option: value' lines")
    return values


def build(ctx: AppContext, owner: gr.BrowserState) -> None:
    """Create the Runs tab."""
    gr.Markdown(
        f"Every run under the runs root (`{ctx.policy.redact(str(ctx.policy.runs_root))}`), read from its folder, "
        "so runs outlive the server. Click a column header to sort. A run whose process died shows as "
        "*interrupted*: resume it from its latest checkpoint. Fork starts a new run from any checkpoint."
    )
    first = services.run_records(ctx)
    names = [r.name for r in first]
    with gr.Row():
        refresh = gr.Button("Refresh", size="sm", elem_id="btn-runs-refresh", scale=0)
        note = gr.Markdown("", elem_id="runs-note")
    table = gr.Dataframe(
        runs_frame(first), interactive=False, wrap=True, label="Runs", elem_id="runs-table", show_search="search"
    )
    with gr.Row():
        pick = gr.Dropdown(names, value=names[0] if names else None, label="Run", elem_id="runs-pick", scale=2)
        resume = gr.Button("Resume from the latest checkpoint", elem_id="btn-runs-resume", variant="primary")
        delete = gr.Button("Delete", elem_id="btn-runs-delete", variant="stop")
    with gr.Row():
        label_box = gr.Textbox(label="New name", elem_id="runs-label", scale=2)
        rename = gr.Button("Rename", elem_id="btn-runs-rename")
        note_box = gr.Textbox(label="Note", elem_id="runs-note-text", scale=3)
        save_note = gr.Button("Save note", elem_id="btn-runs-save-note")
    with gr.Accordion("Fork: a new run from a checkpoint, with changed options", open=False):
        with gr.Row():
            fork_step = gr.Dropdown([], label="Checkpoint (step)", elem_id="runs-fork-step")
            fork_name = gr.Textbox(label="New run name", elem_id="runs-fork-name")
        fork_changes = gr.Textbox(
            label="Changed options (YAML, e.g. 'learning_rate: 2.0e-5' and 'steps: 400')",
            lines=3,
            elem_id="runs-fork-changes",
        )
        fork = gr.Button("Fork", elem_id="btn-runs-fork")
        gr.Markdown(
            "The fork gets a copy of the checkpoint and continues from it: the student's weights, optimizer, "
            "learning-rate schedule, KL controller, score normalisation, random state and the metrics up to "
            "that step. Schedule options (learning rate, steps, batch sizes) may change; optimizer options may not."
        )

    gr.Markdown("### Side by side")
    with gr.Row():
        chosen = gr.CheckboxGroup(names, label="Runs to overlay", elem_id="runs-compare", scale=3)
        axis = gr.Radio(AXIS_CHOICES, value="steps", label="x-axis", elem_id="runs-axis", scale=2)
        metric = gr.Dropdown([], label="Evaluation metric", elem_id="runs-eval-metric", allow_custom_value=True)
    with gr.Row():
        show = gr.Button("Overlay", elem_id="btn-runs-overlay")
        export = gr.Button("Export metrics as CSV (run, step, metric, value)", elem_id="btn-runs-export")
    csv_file = gr.File(label="Metrics CSV", elem_id="runs-csv", interactive=False, visible=False)
    with gr.Row():
        reward_plot, kl_plot = gr.Plot(elem_id="runs-plot-reward"), gr.Plot(elem_id="runs-plot-kl")
    with gr.Row():
        loss_plot, health_plot = gr.Plot(elem_id="runs-plot-loss"), gr.Plot(elem_id="runs-plot-health")
    eval_plot = gr.Plot(elem_id="runs-plot-eval")
    diff = gr.Dataframe(
        pd.DataFrame(columns=["option"]), interactive=False, wrap=True, label="Options that differ", elem_id="runs-diff"
    )
    timer = gr.Timer(REFRESH_S)

    def token_of(token: str | None, request: gr.Request) -> str:
        return ctx.owner_token(token, request.session_hash if request else None)

    shown_listing = gr.State("")  # what this session's table shows, to skip timer ticks that change nothing

    def listing(current: str | None, selected: list[str] | None, message: str = "") -> list[Any]:
        records = services.run_records(ctx)
        known = [r.name for r in records]
        keep = current if current in known else (known[0] if known else None)
        frame = runs_frame(records)
        return [
            gr.update(value=frame),
            gr.update(choices=known, value=keep),
            gr.update(choices=known, value=[n for n in selected or [] if n in known]),
            gr.update(value=message) if message else gr.skip(),
            frame.to_json(),
        ]

    listed = [table, pick, chosen, note, shown_listing]

    def on_refresh(current: str | None, selected: list[str] | None, shown: str) -> list[Any]:
        answer = listing(current, selected)
        if answer[-1] == shown:
            return [gr.skip()] * len(listed)
        return answer

    refresh.click(on_refresh, inputs=[pick, chosen, shown_listing], outputs=listed, queue=False)
    timer.tick(on_refresh, inputs=[pick, chosen, shown_listing], outputs=listed, queue=False, show_progress="hidden")

    def on_pick(name: str | None) -> list[Any]:
        if not name:
            return [gr.update(choices=[], value=None), gr.update(value=""), gr.update(value="")]
        try:
            record = runs.read_run(services.run_path(ctx, name))
        except TndError:
            return [gr.update(choices=[], value=None), gr.update(value=""), gr.update(value="")]
        steps = record.checkpoints
        return [
            gr.update(choices=steps, value=steps[-1] if steps else None),
            gr.update(value=record.label),
            gr.update(value=record.note),
        ]

    pick.change(on_pick, inputs=pick, outputs=[fork_step, label_box, note_box], queue=False)

    def act(action: str):
        def handler(
            token: str | None,
            name: str | None,
            selected: list[str] | None,
            label: str,
            text: str,
            step: Any,
            new_name: str,
            changes: str,
            request: gr.Request,
        ) -> list[Any]:
            token = token_of(token, request)
            try:
                message = _do(ctx, action, token, name or "", label, text, step, new_name, changes, request)
            except (TndError, ValueError) as exc:
                message = f"❌ {ctx.policy.redact(str(exc))}"
            return listing(name, selected, message)

        return handler

    form = [owner, pick, chosen, label_box, note_box, fork_step, fork_name, fork_changes]
    for button, action in (
        (rename, "rename"),
        (save_note, "note"),
        (delete, "delete"),
        (resume, "resume"),
        (fork, "fork"),
    ):
        button.click(act(action), inputs=form, outputs=listed, concurrency_limit=1, concurrency_id="runs-actions")

    def on_overlay(selected: list[str] | None, axis_key: str, eval_name: str | None) -> list[Any]:
        if not selected:
            return [gr.update()] * 5 + [gr.update(), gr.update(), gr.update(value="Pick runs to overlay.")]
        try:
            figures, diff_frame = overlay(ctx, selected, axis_key or "steps", eval_name)
        except TndError as exc:
            return [gr.update()] * 7 + [gr.update(value=f"❌ {ctx.policy.redact(str(exc))}")]
        metrics = sorted({m for n in selected for m in runs.read_run(services.run_path(ctx, n)).eval_metrics})
        shown = eval_name if eval_name in metrics else (plots.EVAL_FIRST if plots.EVAL_FIRST in metrics else None)
        return [
            *[gr.update(value=f) for f in figures],
            gr.update(value=diff_frame),
            gr.update(choices=metrics, value=shown),
            gr.update(value=f"Overlaid {len(selected)} runs; {len(diff_frame)} options differ."),
        ]

    gr.on(
        [show.click, axis.change, metric.input],
        on_overlay,
        inputs=[chosen, axis, metric],
        outputs=[reward_plot, kl_plot, loss_plot, health_plot, eval_plot, diff, metric, note],
        concurrency_limit=2,
        concurrency_id="runs-overlay",
    )

    def on_export(selected: list[str] | None) -> list[Any]:
        try:
            return [gr.update(value=export_csv(ctx, selected or []), visible=True), gr.update(value="")]
        except TndError as exc:
            return [gr.update(value=None, visible=False), gr.update(value=f"❌ {ctx.policy.redact(str(exc))}")]

    export.click(on_export, inputs=chosen, outputs=[csv_file, note], concurrency_limit=1, concurrency_id="runs-export")


def _do(
    ctx: AppContext,
    action: str,
    token: str,
    name: str,
    label: str,
    text: str,
    step: Any,
    new_name: str,
    changes: str,
    request: gr.Request,
) -> str:
    username = getattr(request, "username", None)
    if action == "rename":
        record = services.rename_run(ctx, name, label, token)
        return f"Run {record.name} is now called **{record.label}**."
    if action == "note":
        services.note_run(ctx, name, text, token)
        return f"Note saved for run {name}."
    if action == "delete":
        services.delete_run(ctx, name, token)
        return f"Run {name} deleted."
    if action == "resume":
        config = services.resume_run(ctx, name, token, username)
        return f"Resuming run **{Path(config.output_dir).name}** from its latest checkpoint: watch it in the Train tab."
    step_value = None if step in (None, "") else int(step)
    config = services.fork_run(ctx, name, step_value, parse_changes(changes), new_name, token, username)
    return f"Forked run **{Path(config.output_dir).name}** from {name}: watch it in the Train tab."
