"""Errors meant for people: the CLI and the app show their message instead of a traceback."""

from __future__ import annotations

from typing import Any


class TndError(Exception):
    """Base of every error whose message is written for the user."""


class ConfigError(TndError, ValueError):
    """A bad input value: names the field, the value given and what is allowed."""

    def __init__(self, field_name: str, value: Any, allowed: str):
        self.field = field_name
        self.value = value
        self.allowed = allowed
        super().__init__(f"{field_name}={value!r} is invalid: {allowed}")


class TrainingDiverged(TndError):
    """A quantity the run depends on became NaN or infinite; the run stops and its last good checkpoint stays."""

    def __init__(self, what: str, step: int, last_checkpoint: str | None, hint: str = ""):
        self.what = what
        self.step = step
        self.last_checkpoint = last_checkpoint
        advice = f" {hint}" if hint else ""
        super().__init__(
            f"training diverged at step {step}: {what} became NaN or infinite.{advice} "
            f"Last good checkpoint: {last_checkpoint or 'none'}"
        )
