"""The run's own record of its events: every logged step and evaluation appended to `metrics.jsonl`,
and a line per step in the log. The trainer feeds it every event before any other subscriber."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from tnd_core import stats as S
from tnd_core.events import EvalEvent, Event, StepEvent

METRICS_FILE = "metrics.jsonl"

logger = logging.getLogger(__name__)


class MetricsLog:
    """Appends StepEvent stats and EvalEvent metrics (prefixed 'eval/') to `output_dir/metrics.jsonl`."""

    def __init__(self, output_dir: str | Path):
        self.path = Path(output_dir) / METRICS_FILE

    def __call__(self, event: Event) -> None:
        if isinstance(event, StepEvent):
            self._append({"step": event.step, **event.stats})
            stats = event.stats
            if S.REWARD_MEAN in stats:
                ts_kl = stats.get(S.TEACHER_STUDENT_KL, float("nan"))
                logger.info(
                    "step %d/%d reward %.4f kl %.4f teacher-student kl %.4f",
                    event.step,
                    event.total_steps,
                    stats[S.REWARD_MEAN],
                    stats[S.KL],
                    ts_kl,
                )
            else:
                logger.info("step %d/%d clm loss %.4f", event.step, event.total_steps, stats[S.CLM_LOSS])
        elif isinstance(event, EvalEvent):
            metrics = {k if k.startswith(S.EVAL_PREFIX) else f"{S.EVAL_PREFIX}{k}": v for k, v in event.metrics.items()}
            self._append({"step": event.step, **metrics})

    def _append(self, row: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
