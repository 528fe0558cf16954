"""Assemble the TnD Studio app: one tab per module, one shared form, one runner per process."""

from __future__ import annotations

import threading
from typing import Any

import gradio as gr

from app import api, compare_tab, config_tab, data_tab, export_tab, models_tab, runs_tab, train_tab, words_tab
from app.context import AppContext, BundleManager, on_space
from app.forms import Form, config_from_form
from app.hosting import LIMIT_BY_NAME, HostPolicy
from app.runner import Runner
from app.services import training_run_function
from app.throttle import RateLimiter, WorkBudget
from tnd_core.config import CustomPPOConfig

CSS = """
.tnd-invalid { border-left: 3px solid #dc2626 !important; }
.tnd-invalid .info, .tnd-invalid [data-testid="block-info"] { color: #dc2626 !important; }
"""
OWNER_KEY = "tnd_studio_owner"
FORM_KEY = "tnd_studio_form"


def make_context(
    runner: Runner | None = None, poll_s: float | None = None, policy: HostPolicy | None = None
) -> AppContext:
    """The shared objects of one app process; starts preparing the bundle in the background.

    `policy` defaults to what the environment asks for (`HostPolicy.from_env`: hosted on a Space).
    """
    policy = policy or HostPolicy.from_env()
    bundle = BundleManager()
    if runner is None:
        runner = Runner()
        runner.run_function = training_run_function(bundle, runner.store, policy)
    ctx = AppContext(
        runner=runner,
        bundle=bundle,
        policy=policy,
        compare_budget=WorkBudget(policy.compare_share),
        compare_limiter=RateLimiter(policy.limit("compare_per_minute") if policy.hosted else 0, what="Compare calls"),
        poll_s=poll_s or (2.5 if on_space() else 1.0),
    )
    bundle.start()
    threading.Thread(target=_warm_up, name="tnd-warm-up", daemon=True).start()
    return ctx


def locked_options(policy: HostPolicy) -> dict[str, str]:
    """Options a visitor cannot change on this app, with the reason (hosted mode: remote code)."""
    if policy.hosted and not policy.allow_remote_code:
        return {"trust_remote_code": "(Off on this hosted app: a model's own code never runs here.)"}
    return {}


def hosted_banner(policy: HostPolicy) -> str:
    """One paragraph telling a visitor what a hosted app allows."""
    limits = ", ".join(
        f"{policy.limit(name):,} {LIMIT_BY_NAME[name].what}" for name in ("steps", "batch_size", "max_new_tokens")
    )
    who = "Signed-in users start runs" if policy.require_login else "One run at a time"
    return (
        f"🔒 **Hosted mode.** {who}; everyone can watch. Limits: at most {limits}. "
        "Runs are named, not placed: `output_dir` is the run's name. Models and prompts come from the bundle, "
        "the Hugging Face Hub, or files you upload in this session."
    )


def login_available() -> bool:
    """Whether a Sign-in button can work: on a Space (OAuth), or locally with a Hugging Face token
    (Gradio then signs in as that account), without which Gradio refuses to start."""
    if on_space():
        return True
    from huggingface_hub import get_token

    return get_token() is not None


def _warm_up() -> None:
    # importing the trainer (accelerate, TRL) takes seconds; doing it now keeps them off the
    # path from the Start click to the first plotted step
    from tnd_core import CustomPPOTrainer  # noqa: F401
    from tnd_core.evaluation import compare  # noqa: F401


def build_app(ctx: AppContext | None = None) -> tuple[gr.Blocks, Form]:
    """The Gradio app and its option form (every CustomPPOConfig field has a control in it)."""
    ctx = ctx or make_context()
    config = ctx.initial_config()
    form = Form(locked=locked_options(ctx.policy))
    with gr.Blocks(title="TnD Studio") as demo:
        owner = gr.BrowserState(None, storage_key=OWNER_KEY)
        saved_form = gr.BrowserState(None, storage_key=FORM_KEY)
        gr.Markdown(
            "# TnD Studio\nTrain a small student language model by **Trials and Demonstrations**: PPO on its own "
            "trials scored by a reward model, plus the teacher's demonstrations and logits (distillation)."
        )
        if ctx.policy.hosted:
            gr.Markdown(hosted_banner(ctx.policy), elem_id="hosted-banner")
        if ctx.policy.require_login and login_available():
            gr.LoginButton()
        with gr.Tabs():
            with gr.Tab("Models", id="models"):
                models_tab.build(ctx, form, config, owner)
            with gr.Tab("Data", id="data"):
                data_tab.build(ctx, form, config, owner)
            with gr.Tab("Config", id="config"):
                summary = config_tab.build(ctx, form, config, saved_form, owner)
            with gr.Tab("Train", id="train"):
                train_tab.build(ctx, form, owner, summary)
            with gr.Tab("Runs", id="runs"):
                runs_tab.build(ctx, owner)
            with gr.Tab("Words", id="words"):
                words_tab.build(ctx)
            with gr.Tab("Compare", id="compare"):
                compare_tab.build(ctx, form, owner)
            with gr.Tab("Export", id="export"):
                export_tab.build(ctx, form)

        def on_load(token: str | None, saved: dict | None, request: gr.Request) -> list[Any]:
            # a browser keeps its owner token across reloads, so it reattaches to the job it started
            token = ctx.owner_token(token, request.session_hash)
            restored = _restore(form, saved) or ctx.initial_config()
            if restored == config:  # the controls already show it: leave them (and any early typing) alone
                return [token, *[gr.skip()] * len(form.components)]
            return [token, *form.fill(restored)]

        api.register(ctx)
        demo.load(on_load, inputs=[owner, saved_form], outputs=[owner, *form.components], queue=False)
    return demo, form


def _restore(form: Form, saved: dict | None) -> CustomPPOConfig | None:
    """The form a browser saved before a reload, if it still describes a valid config."""
    if not isinstance(saved, dict):
        return None
    base = dict(zip(form.names, form.fill(CustomPPOConfig())))
    base.update({k: v for k, v in saved.items() if k in base})
    config, _ = config_from_form(form.names, [base[n] for n in form.names])
    return config
