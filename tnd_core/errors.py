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
