"""Live plots: decimation keeps spikes and bounds, the KL figure shows the target band, health warnings fire."""

from __future__ import annotations

import math

import numpy as np

from app.plots import decimate, eval_figure, health_warnings, kl_figure, loss_figure, reward_figure
from tnd_core import stats as stat


def test_decimate_bounds_points_and_keeps_ends_and_spikes():
    steps = np.arange(100_000)
    values = np.sin(steps / 500.0)
    values[61_234] = 50.0  # a KL blow-up on one step
    x, y = decimate(steps, values, max_points=1000)
    assert len(x) <= 1000
    assert x[0] == 0 and x[-1] == 99_999
    assert 61_234 in x and y.max() == 50.0
    assert np.all(np.diff(x) > 0)


def test_decimate_drops_missing_values_and_leaves_short_series_alone():
    x, y = decimate([1, 2, 3, 4], [1.0, math.nan, 3.0, 4.0])
    assert x.tolist() == [1, 3, 4] and y.tolist() == [1.0, 3.0, 4.0]


def test_kl_figure_has_band_target_and_beta_axis():
    steps = [1, 2, 3]
    stats = {stat.KL: [5.0, 6.0, 7.0], stat.KL_COEF: [0.2, 0.21, 0.22], stat.TEACHER_STUDENT_KL: [3.0, 2.0, 1.0]}
    fig = kl_figure(steps, stats, target=6.0, adaptive=True)
    rect = [s for s in fig.layout.shapes if s.type == "rect"][0]
    assert (rect.y0, rect.y1) == (6.0 * 0.8, 6.0 * 1.2)
    beta = [t for t in fig.data if t.name == "KL coef (beta)"][0]
    assert beta.yaxis == "y2" and list(beta.y) == [0.2, 0.21, 0.22]
    assert fig.layout.uirevision == "KL"
    fixed = kl_figure(steps, stats, target=6.0, adaptive=False)
    assert not [s for s in fixed.layout.shapes if s.type == "rect"]


def test_reward_and_loss_figures_plot_what_was_logged():
    steps = [1, 2]
    stats = {stat.REWARD_MEAN: [0.1, 0.2], stat.DEMO_REWARD_MEAN: [1.0, 1.1], stat.LOSS_TOTAL: [2.0, 1.5]}
    assert [t.name for t in reward_figure(steps, stats).data] == ["trials", "demos"]
    losses = loss_figure(steps, stats)
    assert [t.name for t in losses.data] == ["total"] and list(losses.data[0].y) == [2.0, 1.5]


def test_health_warnings():
    rising = [0.1 * i for i in range(20)]
    healthy = {
        stat.REWARD_MEAN: rising,
        stat.KL: [5.5] * 20,
        stat.RESPONSE_LEN_MEAN: [16.0] * 20,
        stat.POLICY_ENTROPY: [3.0] * 20,
    }
    assert health_warnings(healthy, target=6.0) == []

    blown = dict(healthy, **{stat.KL: [5.5] * 15 + [40.0] * 5})
    assert any("KL is blowing up" in w for w in health_warnings(blown, target=6.0))

    negative = dict(healthy, **{stat.KL: [-0.5] * 20})
    assert any("KL is negative" in w for w in health_warnings(negative, target=6.0))

    collapsed = dict(healthy, **{stat.RESPONSE_LEN_MEAN: [16.0] * 10 + [2.0] * 10})
    warnings = health_warnings(collapsed, target=6.0)
    assert len(warnings) == 1 and "response length collapsed" in warnings[0]

    falling_reward = dict(collapsed, **{stat.REWARD_MEAN: rising[::-1]})
    assert health_warnings(falling_reward, target=6.0) == []


def test_eval_figure_shows_teacher_student_kl_and_keeps_the_rest_a_click_away():
    metrics = {
        "eval/vocab_size": [150.0, 160.0],
        "eval/teacher_student_kl": [2.0, 1.6],
        "eval/grammaticality": [0.0, 0.03],
    }
    fig = eval_figure([10, 20], metrics)
    visible = {t.name: t.visible for t in fig.data}
    assert visible == {"grammaticality": "legendonly", "teacher_student_kl": True, "vocab_size": "legendonly"}
    assert fig.layout.uirevision == "Evaluation"


def test_live_redraws_are_throttled_while_steps_stream_but_never_lag_a_settled_job():
    from app.train_tab import TickState, should_redraw

    redraw_s = 3.0
    last = TickState()
    drawn = []
    # a run streaming 2 steps a second, polled every second for 12 s
    for tick in range(1, 13):
        now = 100.0 + tick
        if should_redraw(last, "running", new_run=False, new_data=True, now=now, redraw_s=redraw_s):
            drawn.append(tick)
            last = TickState(steps=2 * tick, drawn_at=now)
    assert drawn[0] == 1  # the first points show at once
    assert all(b - a >= redraw_s for a, b in zip(drawn, drawn[1:])) and len(drawn) == 4
    # nothing new: nothing to draw, however long it has been
    assert not should_redraw(last, "running", new_run=False, new_data=False, now=1e6, redraw_s=redraw_s)
    # the last steps of a job that ended or paused are drawn at once
    for state in ("completed", "stopped", "failed", "paused"):
        assert should_redraw(last, state, new_run=False, new_data=True, now=last.drawn_at + 0.1, redraw_s=redraw_s)
    # a new run replaces the old curves at once
    assert should_redraw(last, "running", new_run=True, new_data=True, now=last.drawn_at + 0.1, redraw_s=redraw_s)


def test_a_watched_train_tab_keeps_one_copy_of_each_output_per_session():
    """Gradio files a session's copy of a skipped output under a fresh id when a later tick sends a plain
    value, and never removes it; the Train tab sends updates, so a session's state stays the same size."""
    import asyncio

    from gradio.state_holder import SessionState

    from app.context import AppContext, BundleManager
    from app.runner import Runner
    from app.ui import build_app
    from tnd_core.events import EvalEvent, StepEvent

    runner = Runner(run_function=lambda *a, **k: {})
    demo, _ = build_app(AppContext(runner=runner, bundle=BundleManager(), redraw_s=0.0))
    tick = next(fn for fn in demo.fns.values() if fn.name == "tick")
    session = SessionState(demo)
    runner.store.reset("alice", None)
    sizes, redraws = [], 0

    async def watch(ticks: int) -> None:
        nonlocal redraws
        for step in range(1, ticks + 1):
            if step % 2:  # new data on every other tick: the plots are redrawn, then skipped
                runner.store.on_event(StepEvent(step, ticks, {stat.REWARD_MEAN: 0.1 * step, stat.KL: 1.0}, step))
                if step % 5 == 0:
                    runner.store.on_event(EvalEvent(step, {"eval/distinct_1": 0.5}))
            out = await demo.process_api(block_fn=tick, inputs=[None, None], state=session)
            redraws += any(isinstance(v, dict) and "plot" in str(v.get("value", ""))[:200] for v in out["data"])
            sizes.append((len(session.blocks_config.blocks), len(session.config_values)))

    asyncio.run(watch(60))
    assert redraws >= 20  # the plots were sent, with skips in between
    assert sizes[-1] == sizes[10], sizes[10:]
