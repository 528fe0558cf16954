"""Train tab: Start / Pause / Resume / Stop, progress, live plots, the latest rollout and evaluation.

A `gr.Timer` polls the runner's store about once a second; a session updates only when the store
has moved on since its last tick. Progress, status and buttons follow every tick (sent only when
they changed); plots, tables and the log are redrawn when new steps arrived, at most every
`ctx.redraw_s` while the job runs (at once for a run's first points, on pause and at the end).
"""

from __future__ import annotations

import html
import itertools
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from app import plots
from app.context import AppContext
from app.forms import Form, errors_markdown
from app.runner import TERMINAL_STATES, Snapshot
from app.services import start_run
from tnd_core import pipeline
from tnd_core.config import CustomPPOConfig
from tnd_core.errors import TndError

ROLLOUT_COLUMNS = ["prompt", "student trial", "trial score", "teacher demo", "demo score"]
LEGEND = (
    "Reward: higher is better. KL: the penalty's KL should stay in the green band around its target; "
    "teacher→student KL should fall."
)


def format_duration(seconds: float | None) -> str:
    """h:mm:ss or m:ss; '?' when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def progress_html(snap: Snapshot) -> str:
    """A progress bar that never passes 100%, with step, elapsed, ETA and pace."""
    total = max(snap.total_steps, 1)
    fraction = min(snap.step / total, 1.0)
    pace = f" · {snap.step / snap.elapsed_s:.2f} steps/s" if snap.step and snap.elapsed_s else ""
    text = (
        f"step {snap.step}/{snap.total_steps} · elapsed {format_duration(snap.elapsed_s)} · "
        f"ETA {format_duration(snap.eta_s)}{pace}"
    )
    return (
        f'<div id="train-progress" data-step="{snap.step}" data-total="{snap.total_steps}" data-state="{snap.state}">'
        f'<div style="background:#e5e7eb;border-radius:6px;height:14px;overflow:hidden">'
        f'<div style="background:#4f46e5;height:14px;width:{fraction * 100:.1f}%"></div></div>'
        f'<div style="font-size:0.9em;margin-top:4px">{html.escape(text)}</div></div>'
    )


def status_markdown(snap: Snapshot) -> str:
    """The run's state in words, with the error message when it failed."""
    text = f"**{snap.state.replace('_', ' ').capitalize()}**: {snap.message}"
    if snap.error:
        text += f"\n\n❌ {snap.error}"
        if snap.checkpoint:
            text += f"\n\nLast checkpoint: `{snap.checkpoint}`"
    return text


def rollout_frame(snap: Snapshot) -> pd.DataFrame:
    """prompt | student trial | trial score | teacher demo | demo score of the latest rollout."""
    rows = [
        [
            s.prompt,
            s.trial,
            round(s.trial_score, 4),
            s.demo or "",
            None if s.demo_score is None else round(s.demo_score, 4),
        ]
        for s in snap.rollout
    ]
    return pd.DataFrame(rows, columns=ROLLOUT_COLUMNS)


def eval_frame(snap: Snapshot) -> pd.DataFrame:
    """The latest value of every evaluation metric."""
    rows = [[name, values[-1]] for name, values in sorted(snap.eval_metrics.items()) if values]
    return pd.DataFrame(rows, columns=["metric", f"value (step {snap.eval_steps[-1] if snap.eval_steps else '-'})"])


def memory_plan_markdown(ctx: AppContext, config: CustomPPOConfig | None) -> str:
    """The run's memory plan: the verdict, the options that would make it fit when it will not, and the
    table of its parts in a fold."""
    if config is None:
        return ""
    if config.memory_check == "off":
        return "**Memory plan**: off (memory_check=off)."
    try:
        plan = pipeline.plan_without_fetching(config, ctx.bundle.ready)
    except TndError as exc:
        return f"**Memory plan**: unavailable ({ctx.policy.redact(str(exc))})."
    if plan is None:
        return "**Memory plan**: made when the run starts (its models are not on this machine yet)."
    verdict = "✅ fits" if plan.fits else "❌ will not fit"
    text = (
        f"**Memory plan**: about {plan.total_gb:.2f} GB of {plan.available_gb:.2f} GB free on {plan.device}: {verdict}"
    )
    if not plan.fits:
        text += f"\n\n{plan.suggestions_text()}"
    return f"{text}\n\n<details><summary>Part by part</summary>\n\n{plan.table()}\n\n</details>"


def is_settled(state: str) -> bool:
    """A job that will not log more steps until the user acts: paused or ended."""
    return state in TERMINAL_STATES or state == "paused"


@dataclass(frozen=True)
class TickState:
    """What a session's Train tab shows, as of its last timer tick (kept in the session's gr.State)."""

    version: int = -1  # the store's version
    run: int = -1  # the run whose curves are drawn
    role: str = ""  # 'owner', 'viewer' or 'free'
    steps: int = -1  # logged steps in the drawn plots; -1 before the first redraw
    evals: int = -1  # evaluations in the drawn evaluation plot and table
    drawn_at: float = 0.0  # time.monotonic() of the last redraw
    pending: bool = False  # new steps or evaluations arrived whose redraw was put off
    sent: tuple[str, ...] = ()  # repr of each light output as last sent, to skip unchanged ones


def should_redraw(last: TickState, state: str, new_run: bool, new_data: bool, now: float, redraw_s: float) -> bool:
    """Whether a tick redraws plots, tables and log: only with new data, and then for a run's first
    points, for a job that settled (paused or ended), or once `redraw_s` passed since the last redraw."""
    if not new_data:
        return False
    return new_run or is_settled(state) or last.steps <= 0 or now - last.drawn_at >= redraw_s


def figures(snap: Snapshot) -> list[Any]:
    """The five live figures of a snapshot."""
    cfg = snap.config
    target = cfg.target if cfg else None
    adaptive = cfg.adap_kl_ctrl if cfg else True
    return [
        plots.reward_figure(snap.steps, snap.stats),
        plots.kl_figure(snap.steps, snap.stats, target, adaptive),
        plots.loss_figure(snap.steps, snap.stats),
        plots.health_figure(snap.steps, snap.stats),
        plots.eval_figure(snap.eval_steps, snap.eval_metrics),
    ]


class FigureCache:
    """Figures of the latest snapshot, built once and shared by every session that polls."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: tuple | None = None
        self._figures: list[Any] = []

    def get(self, snap: Snapshot) -> list[Any]:
        key = (snap.run, snap.logged_steps, snap.logged_evals)
        with self._lock:
            if key != self._key:
                self._key, self._figures = key, figures(snap)
            return self._figures


def as_update(value: Any) -> Any:
    """`value` as gr.update(value=...) for an output that other ticks skip.

    Gradio 6 keeps a session's copy of a component after a gr.skip(); a later plain value then
    files that copy, with the value, under a fresh id, and nothing ever removes it: a watched Train
    tab grew the server by ~11 MB a minute. Updates always replace the session's one copy.
    """
    if isinstance(value, dict) and value.get("__type__") == "update":
        return value
    return gr.update(value=value)


def role_of(ctx: AppContext, owner: str | None) -> str:
    """'owner' of the running job, 'viewer' of someone else's, or 'free' when no job runs."""
    if not ctx.runner.running:
        return "free"
    return "owner" if ctx.runner.is_owner(owner) else "viewer"


def button_updates(ctx: AppContext, role: str) -> list[dict]:
    """Interactivity of Start, Pause, Resume and Stop for this session."""
    state = ctx.runner.store.state
    mine = role == "owner"
    return [
        gr.update(interactive=role == "free"),
        gr.update(interactive=mine and state in ("running", "starting")),
        gr.update(interactive=mine and state in ("paused", "pausing")),
        gr.update(interactive=mine and state in ("starting", "running", "pausing", "paused")),
    ]


ROLE_NOTES = {
    "owner": "You started this job: you can pause, resume and stop it.",
    "viewer": "👀 A job started by another session is running: you are watching it read-only.",
    "free": "",
}


def build(ctx: AppContext, form: Form, owner: gr.BrowserState, check_summary: gr.Markdown) -> None:
    """Create the Train tab and wire its buttons and its timer."""
    with gr.Row():
        start = gr.Button("Start", variant="primary", elem_id="btn-start")
        pause = gr.Button("Pause", interactive=False, elem_id="btn-pause")
        resume = gr.Button("Resume", interactive=False, elem_id="btn-resume")
        stop = gr.Button("Stop", variant="stop", interactive=False, elem_id="btn-stop")
    # next to Start: the verdict, what would make the run fit, and the parts, made on each page load and as the
    # form changes. Gradio also calls a value function once while building the page: that call is answered
    # without planning, whose imports (transformers, peft) would hold up the app's start.
    page_loads = itertools.count()

    def plan_on_load() -> str:
        if next(page_loads) == 0:
            return "**Memory plan**: made when the page loads."
        return memory_plan_markdown(ctx, ctx.initial_config())

    plan_box = gr.Markdown(plan_on_load, elem_id="train-memory-plan")
    message = gr.Markdown("", elem_id="train-message")
    role_note = gr.Markdown("", elem_id="train-role")
    progress = gr.HTML(progress_html(ctx.runner.store.snapshot()))
    status = gr.Markdown("", elem_id="train-status")
    warnings = gr.Markdown("", elem_id="train-warnings")
    gr.Markdown(LEGEND)
    with gr.Row():
        reward_plot = gr.Plot(show_label=False, elem_id="plot-reward")
        kl_plot = gr.Plot(show_label=False, elem_id="plot-kl")
    with gr.Row():
        loss_plot = gr.Plot(show_label=False, elem_id="plot-loss")
        health_plot = gr.Plot(show_label=False, elem_id="plot-health")
    gr.Markdown("### Latest rollout")
    rollout = gr.Dataframe(pd.DataFrame(columns=ROLLOUT_COLUMNS), interactive=False, wrap=True, elem_id="rollout-table")
    with gr.Accordion("Evaluation", open=False) as eval_box:
        with gr.Row():
            eval_plot = gr.Plot(show_label=False, elem_id="plot-eval")
            eval_table = gr.Dataframe(interactive=False)
    with gr.Accordion("Log", open=False):
        log_box = gr.Textbox(lines=12, max_lines=12, show_label=False, autoscroll=True)
    seen = gr.State(TickState())
    cache = FigureCache()
    timer = gr.Timer(ctx.poll_s)

    buttons = [start, pause, resume, stop]
    plot_outputs = [reward_plot, kl_plot, loss_plot, health_plot, eval_plot]
    light_outputs = [progress, status, warnings, role_note, *buttons]
    heavy_outputs = [log_box, rollout, eval_table, *plot_outputs, eval_box]

    def tick(token: str | None, last: TickState) -> Any:
        role = role_of(ctx, token)
        version = ctx.runner.store.version
        now = time.monotonic()
        due = now - last.drawn_at >= ctx.redraw_s
        if last.version == version and last.role == role and not (last.pending and due):
            return gr.skip()
        snap = ctx.runner.store.snapshot()
        new_run = snap.run != last.run
        new_steps = new_run or snap.logged_steps != last.steps
        new_evals = new_run or snap.logged_evals != last.evals
        redraw = should_redraw(last, snap.state, new_run, new_steps or new_evals, now, ctx.redraw_s)
        target = snap.config.target if snap.config else None
        light = [
            progress_html(snap),
            ctx.policy.redact(status_markdown(snap)),
            "\n".join(f"⚠️ {w}" for w in plots.health_warnings(snap.stats, target)),
            ROLE_NOTES[role],
            *button_updates(ctx, role),
        ]
        # send only what changed: every update makes the browser lay out and paint again
        sent = tuple(repr(value) for value in light)
        previous = last.sent or (None,) * len(sent)
        shown = TickState(
            version=snap.version,
            run=snap.run,
            role=role,
            steps=snap.logged_steps if redraw else last.steps,
            evals=snap.logged_evals if redraw else last.evals,
            drawn_at=now if redraw else last.drawn_at,
            pending=(new_steps or new_evals) and not redraw,
            sent=sent,
        )
        changed = (
            gr.skip() if key == before else as_update(value) for value, key, before in zip(light, sent, previous)
        )
        outputs: list[Any] = [shown, *changed]
        if not redraw:
            # an error or a stop can arrive without new steps: its last log lines still show
            return (
                outputs
                + [as_update(ctx.policy.redact(snap.log_tail)) if is_settled(snap.state) else gr.skip()]
                + [gr.skip()] * (len(heavy_outputs) - 1)
            )
        outputs += [
            as_update(ctx.policy.redact(snap.log_tail)),
            as_update(rollout_frame(snap)),
            as_update(eval_frame(snap)),
        ]
        figs = cache.get(snap)
        outputs += [as_update(fig) for fig in figs[:4]] if new_steps else [gr.skip()] * 4
        outputs.append(as_update(figs[4]) if new_evals else gr.skip())
        # open the evaluation panel when a run's first evaluation arrives; later the user decides
        first_eval = snap.eval_steps and (new_run or last.evals <= 0)
        outputs.append(gr.update(open=True) if first_eval else gr.skip())
        return outputs

    timer.tick(
        tick, inputs=[owner, seen], outputs=[seen, *light_outputs, *heavy_outputs], show_progress="hidden", queue=False
    )

    def on_start(
        token: str | None, request: gr.Request, profile: gr.OAuthProfile | None, *values: Any
    ) -> tuple[str, Any, str]:
        # a click that beats the page's load event has no token yet: the session's becomes the browser's
        token = ctx.owner_token(token, request.session_hash)
        cfg, errors = form.read(values)
        if cfg is None:  # the fields already show their problems: the Config tab checks as the user types
            return (
                f"❌ The config has problems (see the Config tab):\n{errors_markdown(errors)}",
                errors_markdown(errors),
                token,
            )
        try:
            cfg = start_run(ctx, cfg, token, profile.username if profile else None)
        except TndError as exc:
            return f"❌ {ctx.policy.redact(str(exc))}", gr.skip(), token
        where = f"run **{Path(cfg.output_dir).name}**" if ctx.policy.hosted else f"`{cfg.output_dir}`"
        return f"Started: {cfg.steps} steps into {where}.", gr.skip(), token

    start.click(on_start, inputs=[owner, *form.components], outputs=[message, check_summary, owner], queue=False)

    def on_form_change(*values: Any) -> str:
        cfg, _ = form.read(values)
        return memory_plan_markdown(ctx, cfg)

    # the plan follows the form as the Config tab's check does
    gr.on(
        [c.change for c in form.components],
        on_form_change,
        inputs=form.components,
        outputs=plan_box,
        trigger_mode="always_last",
        show_progress="hidden",
    )

    def control(action: str) -> Any:
        def handler(token: str | None) -> str:
            try:
                getattr(ctx.runner, action)(token)
            except TndError as exc:
                return f"❌ {exc}"
            return {
                "pause": "Pausing after the current step…",
                "resume": "Resumed.",
                "stop": "Stopping after the current step; saving a checkpoint…",
            }[action]

        return handler

    for button, action in ((pause, "pause"), (resume, "resume"), (stop, "stop")):
        button.click(control(action), inputs=owner, outputs=message, queue=False)
