"""The run's own record of its events: every logged step and evaluation appended to `metrics.jsonl`,
the run's `status.json` (`tnd_core.runs.RunStatusWriter`), and a line per step in the log. The
trainer feeds it every event before any other subscriber.

One folder holds one run's curves. At its first logged step (or evaluation) the log settles the
file: rows at or after that step belong to an earlier run in the folder, or to steps after the
checkpoint a resume continues from, and are dropped; what is left before it continues. A fresh run
into a used folder therefore starts its metrics clean, and a resumed run continues its curves with
no step twice. Each step's row also carries the running totals `time/wall_clock` and
`tokens/student_seen`, continued from the last row kept.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from tnd_core import stats as S
from tnd_core.events import EvalEvent, Event, StepEvent
from tnd_core.runs import METRICS_FILE, RunStatusWriter

__all__ = ["METRICS_FILE", "MetricsLog"]

logger = logging.getLogger(__name__)


class MetricsLog:
    """Appends StepEvent stats and EvalEvent metrics (prefixed 'eval/') to `output_dir/metrics.jsonl`
    and keeps `output_dir/status.json` current."""

    def __init__(self, output_dir: str | Path):
        self.path = Path(output_dir) / METRICS_FILE
        self.status = RunStatusWriter(output_dir)
        self._settled = False
        self._wall_before = 0.0
        self._tokens = 0.0
        self._last_step = 0

    def __call__(self, event: Event) -> None:
        if isinstance(event, (StepEvent, EvalEvent)) and not self._settled:
            self._settle(event.step)
        if isinstance(event, StepEvent):
            totals = self._totals(event)
            self._append({"step": event.step, **event.stats, **totals})
            self.status.add_totals(totals)
            self._log_line(event)
        elif isinstance(event, EvalEvent):
            metrics = {k if k.startswith(S.EVAL_PREFIX) else f"{S.EVAL_PREFIX}{k}": v for k, v in event.metrics.items()}
            self._append({"step": event.step, **metrics})
        self.status(event)

    def _totals(self, event: StepEvent) -> dict[str, float]:
        stats = event.stats
        per_s, seconds = stats.get(S.TOKENS_PER_S), stats.get(S.TIME_STEP)
        if per_s is not None and seconds is not None and math.isfinite(per_s * seconds):
            # a logged step stands for the unlogged ones since the previous row (logging_steps > 1)
            self._tokens += round(per_s * seconds) * max(1, event.step - self._last_step)
        self._last_step = event.step
        return {S.WALL_CLOCK: self._wall_before + event.elapsed_s, S.TOKENS_SEEN: float(self._tokens)}

    def _settle(self, first_step: int) -> None:
        self._settled = True
        kept: list[dict[str, Any]] = []
        if self.path.is_file():
            for line in self.path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except ValueError:
                    continue  # a line cut by a crash mid-write
                if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] < first_step:
                    kept.append(row)
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            tmp.write_text("".join(json.dumps(row) + "\n" for row in kept))
            tmp.replace(self.path)
        for row in kept:
            if S.WALL_CLOCK in row:
                self._wall_before = float(row[S.WALL_CLOCK])
            if S.TOKENS_SEEN in row:
                self._tokens = float(row[S.TOKENS_SEEN])
            if not any(k.startswith(S.EVAL_PREFIX) for k in row):
                self._last_step = row["step"]
        self.status.begin_segment(resumed=bool(kept), wall_before=self._wall_before)

    def _log_line(self, event: StepEvent) -> None:
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
        elif S.CLM_LOSS in stats:
            logger.info("step %d/%d clm loss %.4f", event.step, event.total_steps, stats[S.CLM_LOSS])

    def _append(self, row: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
