"""The build's progress: each stage maps to a slice of [0, 1], reported to a callback, a tqdm bar and the log."""

from __future__ import annotations

import logging
from typing import Callable

logger = logging.getLogger(__name__)

ProgressFn = Callable[[float, str], None]


class BuildProgress:
    """Maps each build stage to a slice of [0, 1]; reports to the caller's callback, a tqdm bar and the log."""

    def __init__(self, callback: ProgressFn | None, title: str):
        from tqdm.auto import tqdm

        self.callback = callback
        self.bar = tqdm(
            total=1000,
            desc=title,
            disable=None,
            leave=True,
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining} {postfix}",
        )
        self.start, self.end, self.message = 0.0, 0.0, ""
        self.last_logged = -1.0

    def stage(self, start: float, end: float, message: str) -> None:
        """Begin the stage that covers [start, end] of the whole build."""
        self.start, self.end, self.message = start, end, message
        logger.info("bundle: %s", message)
        self.bar.set_postfix_str(message)
        self.update(0.0)

    def update(self, within: float) -> None:
        """Report that `within` (0..1) of the current stage is done."""
        fraction = self.start + max(0.0, min(1.0, within)) * (self.end - self.start)
        self.bar.n = int(fraction * 1000)
        self.bar.refresh()
        if self.callback is not None:
            self.callback(fraction, self.message)
        if fraction - self.last_logged >= 0.1:
            logger.info("bundle: %3.0f%% %s", 100 * fraction, self.message)
            self.last_logged = fraction

    def close(self) -> None:
        """Report the build as complete and close the bar."""
        self.update(1.0)
        self.bar.close()
