"""Plotly figures of a run: reward, KL against its target band, losses, policy health, evaluation.

Histories are decimated to about `MAX_POINTS` points (min/max per bucket, so spikes stay visible)
and every figure carries a fixed `uirevision`, so a redraw keeps the user's zoom where Gradio lets
Plotly do so.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import plotly.graph_objects as go

from tnd_core import stats as stat

MAX_POINTS = 1000

REWARD_STATS = {stat.REWARD_MEAN: "trials", stat.DEMO_REWARD_MEAN: "demos"}
KL_STATS = {stat.KL: "KL (penalty)", stat.TEACHER_STUDENT_KL: "KL teacher→student"}
LOSS_STATS = {
    stat.LOSS_POLICY: "policy",
    stat.LOSS_VALUE: "value",
    stat.LOSS_DISTILL: "distill",
    stat.LOSS_CLM: "CLM",
    stat.LOSS_TOTAL: "total",
}
HEALTH_STATS = {
    stat.POLICY_ENTROPY: "entropy",
    stat.CLIPFRAC: "clip fraction",
    stat.VALUE_ERROR: "value error",
}

# The adaptive controller's proportional error is clipped at +-0.2: inside this band it steers
# smoothly, outside it pushes at full strength.
KL_BAND = (0.8, 1.2)


def decimate(x: Sequence[float], y: Sequence[float], max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """At most `max_points` points of (x, y): per bucket the min and the max of y, in x order.

    Keeps the first and last points and every bucket's extremes, so a KL spike survives. NaNs
    (steps that did not log this stat) are dropped first.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    keep = ~np.isnan(y)
    x, y = x[keep], y[keep]
    if len(y) <= max_points:
        return x, y
    buckets = np.array_split(np.arange(len(y)), max(1, (max_points - 2) // 2))
    picked = {0, len(y) - 1}
    for idx in buckets:
        segment = y[idx]
        picked.add(int(idx[np.argmin(segment)]))
        picked.add(int(idx[np.argmax(segment)]))
    order = np.array(sorted(picked))
    return x[order], y[order]


def _empty(title: str, yaxis: str) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(
        title=title,
        uirevision=title,
        margin=dict(l=50, r=20, t=40, b=40),
        height=300,
        xaxis_title="step",
        yaxis_title=yaxis,
        legend=dict(orientation="h", y=-0.25),
    )
    return fig


def _add_lines(
    fig: go.Figure, steps: Sequence[int], stats: dict[str, Sequence[float]], names: dict[str, str], yaxis: str = "y"
) -> None:
    for key, label in names.items():
        if key in stats:
            x, y = decimate(steps, stats[key])
            if len(y):
                mode = "lines+markers" if len(y) < 50 else "lines"
                fig.add_trace(go.Scatter(x=x.tolist(), y=y.tolist(), mode=mode, name=label, yaxis=yaxis))


def _right_axis(fig: go.Figure, title: str) -> None:
    # a plain overlaying axis: make_subplots does the same but costs ~0.5 s per figure
    fig.update_layout(yaxis2=dict(title=title, overlaying="y", side="right", showgrid=False))


def reward_figure(steps: Sequence[int], stats: dict[str, Sequence[float]]) -> go.Figure:
    """Mean reward of the student's trials and of the teacher's demos."""
    fig = _empty("Reward", "score")
    _add_lines(fig, steps, stats, REWARD_STATS)
    return fig


def kl_figure(
    steps: Sequence[int], stats: dict[str, Sequence[float]], target: float | None, adaptive: bool
) -> go.Figure:
    """KL of the penalty and teacher→student KL, the controller's target band, and beta on a right axis."""
    fig = _empty("KL", "KL (nats)")
    _add_lines(fig, steps, stats, KL_STATS)
    _add_lines(fig, steps, stats, {stat.KL_COEF: "KL coef (beta)"}, yaxis="y2")
    _right_axis(fig, "beta")
    if target:
        shapes = [
            dict(type="line", xref="paper", x0=0, x1=1, y0=target, y1=target, line=dict(color="green", dash="dash"))
        ]
        if adaptive:
            band = dict(
                type="rect",
                xref="paper",
                x0=0,
                x1=1,
                y0=target * KL_BAND[0],
                y1=target * KL_BAND[1],
                fillcolor="green",
                opacity=0.12,
                line_width=0,
                layer="below",
            )
            shapes.insert(0, band)
        fig.update_layout(
            shapes=shapes,
            annotations=[
                dict(
                    xref="paper",
                    x=1,
                    y=target,
                    text=f"target {target:g}",
                    showarrow=False,
                    yanchor="bottom",
                    xanchor="right",
                )
            ],
        )
    return fig


def loss_figure(steps: Sequence[int], stats: dict[str, Sequence[float]]) -> go.Figure:
    """Policy, value, distillation, CLM and total loss."""
    fig = _empty("Losses", "loss")
    _add_lines(fig, steps, stats, LOSS_STATS)
    return fig


def health_figure(steps: Sequence[int], stats: dict[str, Sequence[float]]) -> go.Figure:
    """Entropy, clip fraction and value error, with the response length on a right axis."""
    fig = _empty("Policy health", "value")
    _add_lines(fig, steps, stats, HEALTH_STATS)
    _add_lines(fig, steps, stats, {stat.RESPONSE_LEN_MEAN: "response length"}, yaxis="y2")
    _right_axis(fig, "tokens")
    return fig


EVAL_FIRST = f"{stat.EVAL_PREFIX}teacher_student_kl"


def eval_figure(steps: Sequence[int], metrics: dict[str, Sequence[float]]) -> go.Figure:
    """Every evaluation metric against its step; one shown at a time, the rest a legend click away.

    The metrics live on different scales (vocabulary size, rates, nats), so they share a plot only
    when the user asks; `uirevision` keeps those legend choices across redraws.
    """
    fig = _empty("Evaluation (click the legend to add metrics)", "value")
    names = sorted(metrics)
    _add_lines(fig, steps, metrics, {k: k.removeprefix(stat.EVAL_PREFIX) for k in names})
    shown = (EVAL_FIRST if EVAL_FIRST in names else names[0]).removeprefix(stat.EVAL_PREFIX) if names else None
    for trace in fig.data:
        trace.visible = True if trace.name == shown else "legendonly"
    fig.update_layout(uirevision="Evaluation")
    return fig


def _window_mean(values: Sequence[float], first: bool, width: int) -> float:
    arr = np.asarray(values, dtype=float)
    arr = arr[~np.isnan(arr)]
    if len(arr) < 2 * width:
        return math.nan
    return float(np.mean(arr[:width] if first else arr[-width:]))


def health_warnings(stats: dict[str, Sequence[float]], target: float | None, window: int = 5) -> list[str]:
    """Plain-words warnings about the run's PPO health, newest values against the first ones.

    - KL blow-up: the recent KL is far above the controller's target (or negative, the sign of
      greedy or mis-configured sampling).
    - Collapse: reward rises while response length or entropy falls by more than half, the usual
      sign that the policy found a degenerate way to please the reward model.
    """
    warnings = []
    kl = [v for v in stats.get(stat.KL, []) if not math.isnan(v)]
    if kl:
        recent = float(np.mean(kl[-window:]))
        if target and recent > 3 * target:
            warnings.append(
                f"KL is blowing up: {recent:.3g} vs target {target:g}. Lower the learning rate or raise init_kl_coef."
            )
        if recent < -0.1:
            warnings.append(
                f"KL is negative ({recent:.3g}): trials are probably not sampled (check do_sample, top_k, top_p)."
            )
    reward_first = _window_mean(stats.get(stat.REWARD_MEAN, []), True, window)
    reward_last = _window_mean(stats.get(stat.REWARD_MEAN, []), False, window)
    if reward_last > reward_first:
        for key, label in ((stat.RESPONSE_LEN_MEAN, "response length"), (stat.POLICY_ENTROPY, "entropy")):
            first = _window_mean(stats.get(key, []), True, window)
            last = _window_mean(stats.get(key, []), False, window)
            if first > 0 and last < 0.5 * first:
                warnings.append(
                    f"Reward rises while {label} collapsed ({first:.3g} → {last:.3g}): "
                    "the student may be gaming the reward model."
                )
    return warnings


# ---------------------------------------------------------------------- several runs side by side
RUN_COLORS = (
    "#4f46e5",
    "#dc2626",
    "#059669",
    "#d97706",
    "#0891b2",
    "#9333ea",
    "#65a30d",
    "#db2777",
    "#475569",
    "#b45309",
)
DASHES = ("solid", "dash", "dot", "dashdot", "longdash")
# The side-by-side figures: title, y-axis and the statistics each overlays (one colour per run, one
# dash per statistic), the same groups as a single run's figures.
OVERLAY_GROUPS = (
    ("Reward", "score", REWARD_STATS),
    ("KL", "KL (nats)", KL_STATS),
    ("Losses", "loss", LOSS_STATS),
    ("Policy health", "value", HEALTH_STATS),
)


# room under the x-axis title for a legend of a line per run and statistic
OVERLAY_LAYOUT = dict(height=380, margin=dict(l=50, r=20, t=40, b=60), legend=dict(orientation="h", y=-0.3))


def run_color(index: int) -> str:
    """The colour of the `index`-th run in every side-by-side figure."""
    return RUN_COLORS[index % len(RUN_COLORS)]


def _overlay_lines(
    fig: go.Figure, index: int, label: str, x: Sequence[float], columns: dict[str, Sequence[float]], names: dict
) -> None:
    for j, (key, stat_label) in enumerate(names.items()):
        if key not in columns:
            continue
        xs, ys = np.asarray(x, dtype=float), np.asarray(columns[key], dtype=float)
        keep = ~np.isnan(xs)
        xs, ys = decimate(xs[keep], ys[keep])
        if not len(ys):
            continue
        name = label if len(names) == 1 else f"{label} · {stat_label}"
        fig.add_trace(
            go.Scatter(
                x=xs.tolist(),
                y=ys.tolist(),
                mode="lines+markers" if len(ys) < 50 else "lines",
                name=name,
                legendgroup=label,
                line=dict(color=run_color(index), dash=DASHES[j % len(DASHES)]),
            )
        )


def overlay_figures(series: Sequence[Any], x_title: str, eval_metric: str | None = None) -> list[go.Figure]:
    """Reward, KL, losses, policy health and one evaluation metric of several runs (`tnd_core.runs.
    OverlaySeries`, in order: run i gets colour i), on the x-axis the series were made for."""
    figures = []
    for title, yaxis, names in OVERLAY_GROUPS:
        fig = _empty(title, yaxis)
        fig.update_layout(xaxis_title=x_title, uirevision=f"overlay-{title}", **OVERLAY_LAYOUT)
        for i, run in enumerate(series):
            _overlay_lines(fig, i, run.label, run.x, run.columns, names)
        figures.append(fig)
    shown = eval_metric or EVAL_FIRST
    fig = _empty(f"Evaluation: {shown.removeprefix(stat.EVAL_PREFIX)}", "value")
    fig.update_layout(xaxis_title=x_title, uirevision="overlay-eval", **OVERLAY_LAYOUT)
    for i, run in enumerate(series):
        _overlay_lines(fig, i, run.label, run.eval_x, run.evals, {shown: shown})
    figures.append(fig)
    return figures
