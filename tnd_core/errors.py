"""Errors meant for people: the CLI and the app show their message instead of a traceback."""

from __future__ import annotations

from typing import Any

# The most characters of an offending value (or name) that a message quotes: a 10 MB value stays a short message.
MAX_QUOTED_CHARS = 200


def short_repr(value: Any, limit: int = MAX_QUOTED_CHARS) -> str:
    """repr(value) cut to about `limit` characters, with an ellipsis and the full length when cut.

    Never raises: integers too long for str() (Python's 4300-digit limit) and structures too deep
    to repr are described instead.
    """
    try:
        text = repr(value)
    except ValueError:  # an int over the digit limit of int -> str conversion
        digits = int(value.bit_length() * 0.30103) + 1 if isinstance(value, int) else None
        return f"<an integer of about {digits} digits>" if digits else f"<{type(value).__name__}>"
    except RecursionError:
        return f"<{type(value).__name__} nested too deeply to show>"
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text):,} characters)"


def short_text(text: str, limit: int = MAX_QUOTED_CHARS) -> str:
    """`text` cut to about `limit` characters, with an ellipsis and the full length when cut."""
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text):,} characters)"


class TndError(Exception):
    """Base of every error whose message is written for the user."""


class ConfigError(TndError, ValueError):
    """A bad input value: names the field, the value given and what is allowed.

    `field`, `value` and `allowed` keep what was given; the message quotes at most about
    MAX_QUOTED_CHARS characters of the field name and of the value.
    """

    def __init__(self, field_name: str, value: Any, allowed: str):
        self.field = field_name
        self.value = value
        self.allowed = allowed
        name = field_name if isinstance(field_name, str) else repr(field_name)
        super().__init__(f"{short_text(name)}={short_repr(value)} is invalid: {allowed}")


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
