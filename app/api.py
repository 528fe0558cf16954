"""Named API endpoints (for `gradio_client` and scripts): the Train and Compare tabs without a browser.

Control calls carry the caller's owner token, like a browser session does; status never reveals it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr

from app.context import AppContext
from app.runner import describe_exception
from app.services import STUDENT_CHOICE, TEACHER_CHOICE, parse_seed, run_compare, run_compare_models, start_run
from tnd_core.config import CustomPPOConfig, parse_config_text
from tnd_core.errors import ConfigError, TndError

if TYPE_CHECKING:
    from tnd_core.evaluation.compare import ModelComparison


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def start_training(ctx: AppContext, owner: str, config_yaml: str, username: str | None = None) -> str:
    """What `/start_training` answers: 'started: …', or 'error: …' with the project's error in words.

    The config is the app's default with the options given in YAML changed; the YAML comes from a
    stranger, so it is parsed with `tnd_core.config.parse_config_text` (size, alias and depth limits).
    """
    try:
        if not isinstance(config_yaml, str):
            raise ConfigError("config_yaml", config_yaml, "must be YAML text")
        changes = parse_config_text(config_yaml)
        config = CustomPPOConfig.from_dict({**ctx.initial_config().to_dict(), **changes})
        config = start_run(ctx, config, owner, username)
    except TndError as exc:
        return f"error: {ctx.policy.redact(str(exc))}"
    where = Path(config.output_dir).name if ctx.policy.hosted else config.output_dir
    return f"started: {config.steps} steps into {where}"


def status(ctx: AppContext) -> dict[str, Any]:
    """State, progress, the latest value of every statistic, the latest rollout and evaluation."""
    snap = ctx.runner.store.snapshot()
    last = {k: _finite(v[-1]) for k, v in snap.stats.items() if v}
    redact = ctx.policy.redact
    return {
        "state": snap.state,
        "message": redact(snap.message),
        "error": redact(snap.error) if snap.error else None,
        "step": snap.step,
        "total_steps": snap.total_steps,
        "logged_steps": snap.logged_steps,
        "elapsed_s": snap.elapsed_s,
        "eta_s": snap.eta_s,
        "first_step_wall_s": snap.first_step_wall_s,
        "last_stats": last,
        "rollout": [vars(s) for s in snap.rollout],
        "eval": {k: _finite(v[-1]) for k, v in snap.eval_metrics.items() if v},
        "checkpoint": Path(snap.checkpoint).name if snap.checkpoint and ctx.policy.hosted else snap.checkpoint,
    }


def comparison_answer(result: ModelComparison, labels: dict[str, str]) -> dict[str, Any]:
    """What `/compare_models` answers: per side its label, mean reward, spread and mean KL, and every sample
    (seed, text, reward score, tokens with the KL of the other side)."""

    def side(which: str, other: str, data: Any) -> dict[str, Any]:
        return {
            "model": labels[which],
            "mean_score": data.mean_score,
            "score_std": data.score_std,
            "mean_kl": data.mean_kl,
            "kl": f"KL({other} || {which})",
            "samples": [
                {
                    "seed": s.seed,
                    "text": s.text,
                    "score": s.score,
                    "mean_kl": s.mean_kl,
                    "tokens": [{"text": t, "kl": kl} for t, kl in s.tokens],
                }
                for s in data.samples
            ],
        }

    left, right = side("left", "right", result.left), side("right", "left", result.right)
    return {"left": left, "right": right, "note": result.note}


def register(ctx: AppContext) -> None:
    """Add the endpoints to the Blocks being built."""

    def start_training_endpoint(owner: str, config_yaml: str, profile: gr.OAuthProfile | None) -> str:
        """Start a run owned by `owner`: the app's default config with the options given in YAML changed."""
        return start_training(ctx, owner, config_yaml, profile.username if profile else None)

    def control(action: str) -> Any:
        def endpoint(owner: str) -> str:
            try:
                getattr(ctx.runner, action)(owner)
            except TndError as exc:
                return f"error: {exc}"
            return f"{action} requested"

        endpoint.__name__ = f"{action}_training"
        endpoint.__doc__ = f"{action.capitalize()} the running job (only its owner may)."
        return endpoint

    def training_status() -> dict:
        """The current job's state, progress and latest statistics."""
        return status(ctx)

    def compare_prompt(prompt: str, seed: int = 0, request: gr.Request = None) -> dict:
        """Teacher and student continue `prompt` with the app's generation settings and `seed`."""
        try:
            session = request.session_hash if request is not None else None
            result, who = run_compare(ctx, str(prompt), ctx.initial_config(), parse_seed(seed), session)
        except Exception as exc:  # returned in words to the API caller
            return {"error": ctx.policy.redact(describe_exception(exc))}
        return {
            "student_model": who,
            "teacher": vars(result.teacher),
            "student": vars(result.student),
            "tokens": [{"text": t, "kl": kl} for t, kl in result.tokens],
            "mean_kl": result.mean_kl,
            "note": result.note,
        }

    def compare_models_endpoint(
        prompt: str,
        seed: int = 0,
        left: str = TEACHER_CHOICE,
        right: str = STUDENT_CHOICE,
        samples: int = 4,
        owner: str = "",
        request: gr.Request = None,
    ) -> dict:
        """Two of 'teacher', 'student' (the current one) and '<run>/checkpoint-<step>' continue `prompt`
        `samples` times each (sample i with seed + i on both sides), with reward scores and per-token
        KL(other side || this side); `owner` (the caller's token) opens its runs' checkpoints on a hosted app."""
        try:
            session = request.session_hash if request is not None else None
            config = ctx.initial_config()
            result, labels = run_compare_models(
                ctx, str(prompt), config, parse_seed(seed), str(left), str(right), samples, session, owner or None
            )
        except Exception as exc:  # returned in words to the API caller
            return {"error": ctx.policy.redact(describe_exception(exc))}
        return comparison_answer(result, labels)

    gr.api(start_training_endpoint, api_name="start_training")
    for action in ("pause", "resume", "stop"):
        gr.api(control(action), api_name=f"{action}_training")
    gr.api(training_status, api_name="training_status")
    # one Compare at a time across the API and the Compare tab; the rest wait in Gradio's queue
    gr.api(compare_prompt, api_name="compare", concurrency_limit=1, concurrency_id="compare")
    gr.api(compare_models_endpoint, api_name="compare_models", concurrency_limit=1, concurrency_id="compare")
