"""What the API tests ask a running app through gradio_client: its status, and waiting for a state."""

from __future__ import annotations

import time
from typing import Any, Callable


def status(client: Any) -> dict:
    """The app's `/training_status` answer."""
    return client.predict(api_name="/training_status")


def wait_for(client: Any, predicate: Callable[[dict], bool], timeout_s: float, what: str) -> dict:
    """Poll the status until `predicate` holds; fail naming `what` and the last status after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    current: dict = {}
    while time.monotonic() < deadline:
        current = status(client)
        if predicate(current):
            return current
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}; last status: {current}")
