"""Fair shares for per-visitor work: a per-session rate limit and a time budget beside the training run.

Compare runs between two training steps, in the training thread, so every Compare delays the run by
its own duration. `WorkBudget` caps that delay at a fixed share of wall time: a request waits until
the work done so far fits the share (a token bucket measured in seconds of work), so four visitors
calling Compare in a loop cost the run at most that share. `RateLimiter` additionally refuses a
session's calls beyond a count per minute, in words, with the wait until the next one is allowed.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from contextlib import contextmanager
from typing import Callable, Iterator

from tnd_core.errors import TndError


class TooManyRequests(TndError):
    """A session asked for more work than its share; the message says when to try again."""


class RateLimiter:
    """At most `calls` per `window_s` seconds for each key (a session); `calls` <= 0 turns it off."""

    def __init__(
        self, calls: int, window_s: float = 60.0, what: str = "requests", clock: Callable[[], float] = time.monotonic
    ):
        self.calls, self.window_s, self.what, self.clock = calls, window_s, what, clock
        self._lock = threading.Lock()
        self._seen: dict[str, deque[float]] = {}

    def check(self, key: str) -> None:
        """Count one call of `key`, or raise TooManyRequests when it already had its share."""
        if self.calls <= 0:
            return
        now = self.clock()
        with self._lock:
            # forget keys whose calls all left the window, so the table stays as small as the active sessions
            for other in [k for k, times in self._seen.items() if times[-1] <= now - self.window_s]:
                del self._seen[other]
            times = self._seen.setdefault(key, deque())
            while times and times[0] <= now - self.window_s:
                times.popleft()
            if len(times) >= self.calls:
                wait = times[0] + self.window_s - now
                raise TooManyRequests(
                    f"Too many {self.what}: at most {self.calls} per {self.window_s:g} s per session. "
                    f"Try again in {max(1, round(wait))} s."
                )
            times.append(now)


class WorkBudget:
    """Lets work run only while it stays within `share` of wall time (with a `burst_s` allowance)."""

    def __init__(self, share: float, burst_s: float = 1.0, clock: Callable[[], float] = time.monotonic):
        if not 0 < share <= 1:
            raise ValueError(f"share must be in (0, 1], not {share}")
        self.share, self.burst_s, self.clock = share, burst_s, clock
        self._lock = threading.Lock()
        self._turn = threading.Lock()  # budgeted work runs one piece at a time, whichever caller sends it
        self._credit = burst_s
        self._updated = clock()

    def _refill(self) -> float:
        now = self.clock()
        self._credit = min(self.burst_s, self._credit + (now - self._updated) * self.share)
        self._updated = now
        return self._credit

    def wait_s(self) -> float:
        """Seconds until the budget has credit again (0 when work may start now)."""
        with self._lock:
            credit = self._refill()
        return 0.0 if credit > 0 else -credit / self.share

    def acquire(self, timeout_s: float) -> None:
        """Block until work may start; TooManyRequests when that is more than `timeout_s` away."""
        deadline = self.clock() + timeout_s
        while (wait := self.wait_s()) > 0:
            if self.clock() + wait > deadline:
                raise TooManyRequests(
                    "The app is busy serving other visitors beside the training run; "
                    f"try again in {max(1, round(wait))} s."
                )
            time.sleep(min(wait, 0.5))

    def spend(self, seconds: float) -> None:
        """Charge `seconds` of work done."""
        with self._lock:
            self._refill()
            self._credit -= seconds

    @contextmanager
    def turn(self, timeout_s: float) -> Iterator[Meter]:
        """Wait for this budget's turn (one piece of work at a time) and its credit, then charge what the
        yielded meter timed. TooManyRequests when neither comes within `timeout_s`."""
        deadline = self.clock() + timeout_s
        if not self._turn.acquire(timeout=timeout_s):
            raise TooManyRequests("The app is busy serving other visitors beside the training run; try again soon.")
        meter = Meter(self.clock)
        try:
            self.acquire(max(0.0, deadline - self.clock()))
            yield meter
        finally:
            self.spend(meter.seconds)
            self._turn.release()


class Meter:
    """Seconds of work timed with `timing()`; only the work itself, not the waits around it, is charged."""

    def __init__(self, clock: Callable[[], float]):
        self.clock = clock
        self.seconds = 0.0

    @contextmanager
    def timing(self) -> Iterator[None]:
        started = self.clock()
        try:
            yield
        finally:
            self.seconds += self.clock() - started
