"""Run folders that outlast the process: a status file written as the run goes, and cheap listings.

A run folder holds the run's `config.yaml` (as started), `metrics.jsonl` (every logged step and
evaluation), `train.log`, its `checkpoint-<step>` folders, `status.json` and, once a user renames it
or adds a note, `run.json`. `RunStatusWriter` subscribes to the trainer's events and keeps
`status.json` current, written atomically (temp file, fsync, `os.replace`) on every change of state
and every few seconds while the run lives (a heartbeat). A reader (`read_run`, `list_runs`) tells an
*interrupted* run from a live one without any help from the writer: the status says running or
paused, but the writing process is gone (its pid is not alive on this host, or is another process
now), or, for a run written on another host, its heartbeat is older than `STALE_S`.

Listing many runs is cheap: a record comes from `status.json` (which carries the latest value of
every statistic) and a folder scan, cached by modification time; metrics.jsonl is read only by
`read_metrics` (plots, exports), also cached by modification time.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
import shutil
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import yaml

from tnd_core import stats as S
from tnd_core.errors import ConfigError, TndError
from tnd_core.events import CheckpointEvent, ErrorEvent, EvalEvent, Event, StatusEvent, StepEvent

log = logging.getLogger(__name__)

STATUS_FILE = "status.json"
META_FILE = "run.json"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
# A checkpoint counts once its trainer state (written last by an atomic save) is there.
CHECKPOINT_STATE_FILE = "trainer_state.json"
CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")

LIVE_STATES = ("running", "paused")
ENDED_STATES = ("completed", "stopped", "early_stopped", "failed")
STATES = (*LIVE_STATES, *ENDED_STATES, "interrupted")
# States a run can be resumed from (from its latest checkpoint).
RESUMABLE_STATES = ("stopped", "failed", "interrupted", "early_stopped")
HEARTBEAT_S = 5.0
# A run written on another host counts as interrupted once its heartbeat is this old.
STALE_S = 60.0
# Options that name where a run lives rather than what it does: left out of config diffs.
PLACE_OPTIONS = ("output_dir", "resume_from_checkpoint")
_TRAINER_STATES = {"started": "running", "resumed": "running"}
# What a new segment of a run (a resume) keeps from the status before it.
CARRIED_FIELDS = ("created", "duration_s", "total_steps", "last_checkpoint", "last_checkpoint_step")


# ---------------------------------------------------------------------- processes
def _proc_start(pid: int) -> int | None:
    """The start time of process `pid` in clock ticks since boot (Linux), None where /proc can't tell."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2 :].split()
    if fields and fields[0] in ("Z", "X"):  # a zombie has exited: only its parent has not reaped it
        return -1
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def pid_alive(pid: int, started: int | None = None) -> bool:
    """Whether process `pid` runs on this host and, when `started` is known, is the same process (not a reused pid)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: alive
    now_started = _proc_start(pid)
    if now_started == -1:
        return False
    return started is None or now_started is None or now_started == started


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def write_json(path: str | Path, data: Mapping[str, Any]) -> None:
    """Write `data` as JSON to `path` atomically: a reader sees the old file or the new one, never half."""
    _atomic_write(Path(path), json.dumps(data, indent=1, allow_nan=True))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


# ---------------------------------------------------------------------- the writer
class RunStatusWriter:
    """Keeps `<folder>/status.json` current from the trainer's events (a subscriber; see module doc).

    `begin_segment` is told by the metrics log, at the run's first logged step, whether the run
    continues earlier steps (a resume) or starts the folder afresh.
    """

    def __init__(self, folder: str | Path, heartbeat_s: float = HEARTBEAT_S, clock: Callable[[], float] = time.time):
        self.folder = Path(folder)
        self.path = self.folder / STATUS_FILE
        self.heartbeat_s, self.clock = heartbeat_s, clock
        self._lock = threading.Lock()
        self._status: dict[str, Any] = {}
        self._written_at = 0.0
        self._beat: threading.Event | None = None

    def __call__(self, event: Event) -> None:
        with self._lock:
            if isinstance(event, StatusEvent):
                self._on_status(event)
            elif isinstance(event, StepEvent):
                self._on_step(event)
            elif isinstance(event, EvalEvent):
                self._status["last_eval"] = {
                    (k if k.startswith(S.EVAL_PREFIX) else f"{S.EVAL_PREFIX}{k}"): float(v)
                    for k, v in event.metrics.items()
                }
                self._write(force=False)
            elif isinstance(event, CheckpointEvent):
                self._status["last_checkpoint"] = Path(event.path).name
                self._status["last_checkpoint_step"] = event.step
                self._write(force=True)
            elif isinstance(event, ErrorEvent):
                self._status.update(state="failed", message=event.message, error_type=event.error_type)
                if event.last_checkpoint:
                    self._status["last_checkpoint"] = Path(event.last_checkpoint).name
                self._write(force=True)

    def _on_status(self, event: StatusEvent) -> None:
        state = _TRAINER_STATES.get(event.state, event.state)
        now = self.clock()
        if event.state == "started":
            previous = _read_json(self.path)
            self._status = {
                **{k: previous[k] for k in CARRIED_FIELDS if k in previous},
                "state": "running",
                "message": "",
                "step": event.step,
                "started": now,
                "pid": os.getpid(),
                "pid_started": _proc_start(os.getpid()),
                "hostname": socket.gethostname(),
            }
            self._status.setdefault("created", now)
            self.folder.mkdir(parents=True, exist_ok=True)
            self._start_heartbeat()
        else:
            said_why = self._status.get("state") == "failed"  # the ErrorEvent's message stays
            self._status.update(state=state, step=event.step)
            if state in ENDED_STATES and not said_why:
                self._status["message"] = event.detail
        if state in ENDED_STATES:
            self._status["ended"] = now
            self._stop_heartbeat()
        self._write(force=True)

    def begin_segment(self, resumed: bool, wall_before: float) -> None:
        """Called at the first logged step: a fresh run restarts the folder's clock and creation time."""
        with self._lock:
            if not resumed:
                self._status["created"] = self._status.get("started", self.clock())
                self._status.pop("last_checkpoint", None)
                self._status.pop("last_checkpoint_step", None)
            self._status["duration_s"] = wall_before

    def add_totals(self, totals: Mapping[str, float]) -> None:
        """The running totals the metrics log adds to a step's row (wall clock, tokens seen)."""
        with self._lock:
            self._status.setdefault("last_stats", {}).update(totals)
            if S.WALL_CLOCK in totals:
                self._status["duration_s"] = totals[S.WALL_CLOCK]

    def _on_step(self, event: StepEvent) -> None:
        stats = {k: float(v) for k, v in event.stats.items()}
        self._status.update(step=event.step, total_steps=event.total_steps)
        self._status.setdefault("last_stats", {}).update(stats)
        self._write(force=False)

    def _write(self, force: bool) -> None:
        now = self.clock()
        if not self._status or (not force and now - self._written_at < self.heartbeat_s):
            return
        self._status["heartbeat"] = now
        try:
            write_json(self.path, self._status)
            self._written_at = now
        except OSError as exc:  # a full disk must not end the training
            log.warning("cannot write %s: %s", self.path, exc)

    def _start_heartbeat(self) -> None:
        self._stop_heartbeat()
        stop = self._beat = threading.Event()

        def beat() -> None:
            while not stop.wait(self.heartbeat_s):
                with self._lock:
                    if stop.is_set():
                        return
                    self._write(force=True)

        threading.Thread(target=beat, name="tnd-run-heartbeat", daemon=True).start()

    def _stop_heartbeat(self) -> None:
        if self._beat is not None:
            self._beat.set()
            self._beat = None

    def close(self) -> None:
        """Stop the heartbeat (the run's terminal status does this by itself)."""
        with self._lock:
            self._stop_heartbeat()


def mark(folder: str | Path, state: str, message: str = "", **extra: Any) -> None:
    """Set a run's state outside the trainer (the app: a run that failed before its trainer started,
    or one that is loading its models), keeping what status.json already says."""
    if state not in STATES:
        raise ConfigError("state", state, f"one of {', '.join(STATES)}")
    path = Path(folder) / STATUS_FILE
    status = _read_json(path)
    now = time.time()
    status.setdefault("created", now)
    status.update(state=state, message=message, heartbeat=now, **extra)
    if state in LIVE_STATES:
        status.update(pid=os.getpid(), pid_started=_proc_start(os.getpid()), hostname=socket.gethostname())
    else:
        status["ended"] = now
    Path(folder).mkdir(parents=True, exist_ok=True)
    write_json(path, status)


# ---------------------------------------------------------------------- reading one run
@dataclass
class RunRecord:
    """What the Runs tab lists for one run folder.

    `name` is the folder's name (the run's id; `output_dir` names it), `label` what the user renamed it
    to (else the name). `status` is as a reader sees it now: 'interrupted' for a run whose writer is
    gone, 'unknown' for a folder with metrics but no status file (written before status files).
    `final_stats` holds the latest logged value of every statistic and evaluation metric.
    """

    name: str
    path: Path
    status: str
    label: str = ""
    note: str = ""
    message: str = ""
    steps_done: int = 0
    total_steps: int = 0
    created: float | None = None
    updated: float | None = None
    duration_s: float | None = None
    checkpoints: list[int] = field(default_factory=list)
    last_checkpoint: Path | None = None
    final_stats: dict[str, float] = field(default_factory=dict)
    forked_from: dict[str, Any] | None = None
    pid: int | None = None
    hostname: str | None = None

    @property
    def final_reward(self) -> float | None:
        return self.final_stats.get(S.REWARD_MEAN)

    @property
    def final_teacher_student_kl(self) -> float | None:
        return self.final_stats.get(S.TEACHER_STUDENT_KL)

    @property
    def eval_metrics(self) -> dict[str, float]:
        return {k: v for k, v in self.final_stats.items() if k.startswith(S.EVAL_PREFIX)}

    @property
    def resumable(self) -> bool:
        return self.status in RESUMABLE_STATES and self.last_checkpoint is not None


def list_checkpoints(folder: str | Path) -> list[int]:
    """Steps of the complete checkpoints in a run folder, oldest first."""
    root = Path(folder)
    steps = []
    try:
        children = list(root.iterdir())
    except OSError:
        return []
    for child in children:
        match = CHECKPOINT_NAME.match(child.name)
        if match and (child / CHECKPOINT_STATE_FILE).is_file():
            steps.append(int(match.group(1)))
    return sorted(steps)


def is_run_folder(folder: str | Path) -> bool:
    """Whether a folder holds a run: a status file, metrics or a checkpoint."""
    root = Path(folder)
    return (root / STATUS_FILE).is_file() or (root / METRICS_FILE).is_file() or bool(list_checkpoints(root))


def _tail_rows(path: Path, max_bytes: int = 1 << 16) -> list[dict[str, Any]]:
    """The last complete rows of a metrics file, reading at most its last `max_bytes`."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            raw = handle.read().decode("utf-8", "replace")
    except OSError:
        return []
    lines = raw.splitlines()
    if size > max_bytes:
        lines = lines[1:]  # the first line read may be cut
    rows = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            rows.append(row)
    return rows


def interrupted(status: Mapping[str, Any], now: float | None = None) -> bool:
    """Whether a status that says running or paused belongs to a writer that is gone (see module doc)."""
    if status.get("state") not in LIVE_STATES:
        return False
    if status.get("hostname") == socket.gethostname() and isinstance(status.get("pid"), int):
        return not pid_alive(status["pid"], status.get("pid_started"))
    beat = status.get("heartbeat")
    now = time.time() if now is None else now
    return not isinstance(beat, (int, float)) or now - beat > STALE_S


_CACHE: dict[Path, tuple[tuple, dict[str, Any]]] = {}
_CACHE_LOCK = threading.Lock()


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def _summary(folder: Path) -> dict[str, Any]:
    """The parsed files of a run, cached until one of them (or the folder's listing) changes."""
    key = tuple(_mtime(folder / name) for name in (STATUS_FILE, META_FILE, "")) + (_mtime(folder / METRICS_FILE),)
    with _CACHE_LOCK:
        cached = _CACHE.get(folder)
    if cached is not None and cached[0] == key:
        return cached[1]
    status = _read_json(folder / STATUS_FILE)
    meta = _read_json(folder / META_FILE)
    if not status.get("last_stats"):
        # no status file, or one written before the first step: the metrics file's tail says how far it got
        stats: dict[str, float] = {}
        rows = _tail_rows(folder / METRICS_FILE)
        for row in rows:
            stats.update({k: v for k, v in row.items() if k != "step" and isinstance(v, (int, float))})
        if rows:
            status = {**status, "last_stats": stats, "step": max(status.get("step", 0), rows[-1]["step"])}
            if S.WALL_CLOCK in stats:
                status.setdefault("duration_s", stats[S.WALL_CLOCK])
    summary = {"status": status, "meta": meta, "checkpoints": list_checkpoints(folder)}
    with _CACHE_LOCK:
        _CACHE[folder] = (key, summary)
    return summary


def read_run(folder: str | Path, now: float | None = None) -> RunRecord:
    """The record of one run folder (a folder without a run gets status 'unknown' and no steps)."""
    folder = Path(folder)
    summary = _summary(folder)
    status, meta, checkpoints = summary["status"], summary["meta"], summary["checkpoints"]
    state = status.get("state") or "unknown"
    if interrupted(status, now):
        state = "interrupted"
    stats = {**status.get("last_stats", {}), **status.get("last_eval", {})}
    try:
        created = status.get("created") or folder.stat().st_mtime
    except OSError:
        created = None
    return RunRecord(
        name=folder.name,
        path=folder,
        status=state,
        label=str(meta.get("label") or folder.name),
        note=str(meta.get("note") or ""),
        message=str(status.get("message") or ""),
        steps_done=int(status.get("step") or 0),
        total_steps=int(status.get("total_steps") or 0),
        created=created,
        updated=status.get("heartbeat"),
        duration_s=status.get("duration_s"),
        checkpoints=checkpoints,
        last_checkpoint=folder / f"checkpoint-{checkpoints[-1]}" if checkpoints else None,
        final_stats=stats,
        forked_from=meta.get("forked_from"),
        pid=status.get("pid"),
        hostname=status.get("hostname"),
    )


def list_runs(runs_root: str | Path) -> list[RunRecord]:
    """Every run folder directly under `runs_root`, newest first (empty when the root is missing)."""
    root = Path(runs_root)
    try:
        folders = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    except OSError:
        return []
    now = time.time()
    records = [read_run(folder, now) for folder in folders if is_run_folder(folder)]
    records.sort(key=lambda r: (r.created or 0, r.name), reverse=True)
    return records


# ---------------------------------------------------------------------- the user's edits
def _check_label(value: str, what: str, limit: int) -> str:
    value = (value or "").strip()
    if len(value) > limit or any(ord(c) < 32 and c not in "\n\t" for c in value):
        raise ConfigError(what, value, f"at most {limit} printable characters")
    return value


def set_meta(folder: str | Path, label: str | None = None, note: str | None = None, **extra: Any) -> dict[str, Any]:
    """Rename a run (its label; the folder keeps its name) and/or set its note; returns the new meta."""
    path = Path(folder) / META_FILE
    meta = _read_json(path)
    if label is not None:
        meta["label"] = _check_label(label, "run name", 80) or Path(folder).name
    if note is not None:
        meta["note"] = _check_label(note, "note", 2000)
    meta.update(extra)
    write_json(path, meta)
    return meta


def delete_run(folder: str | Path) -> None:
    """Remove a run folder; refused while its run is alive."""
    record = read_run(folder)
    if record.status in LIVE_STATES:
        raise TndError(f"Run {record.name} is {record.status}: stop it before deleting it.")
    shutil.rmtree(record.path)
    with _CACHE_LOCK:
        _CACHE.pop(record.path, None)


def free_name(runs_root: str | Path, name: str) -> str:
    """`name`, or `name-2`, `name-3`, ... : the first that names no run folder under `runs_root`."""
    root = Path(runs_root)
    candidate, n = name, 1
    while (root / candidate).exists() and is_run_folder(root / candidate):
        n += 1
        candidate = f"{name[:60]}-{n}"
    return candidate


def copy_checkpoint(source: str | Path, target_folder: str | Path) -> Path:
    """Put a checkpoint into another run folder; files are hard-linked where the file system allows
    (checkpoints are never changed in place, only replaced), else copied. Returns the new checkpoint."""
    source = Path(source)
    target = Path(target_folder) / source.name
    Path(target_folder).mkdir(parents=True, exist_ok=True)

    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, target, copy_function=link_or_copy)
    return target


# ---------------------------------------------------------------------- configs
def read_config(folder: str | Path) -> dict[str, Any]:
    """The options a run was started with: its config.yaml, else its latest checkpoint's; {} when neither."""
    folder = Path(folder)
    newest_first = list_checkpoints(folder)[::-1]
    candidates = [folder / CONFIG_FILE] + [folder / f"checkpoint-{step}" / CONFIG_FILE for step in newest_first]
    for path in candidates:
        if path.is_file():
            try:
                values = yaml.safe_load(path.read_text())
            except (OSError, yaml.YAMLError):
                continue
            if isinstance(values, dict):
                return values
    return {}


def config_diff(configs: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, list[Any]]]:
    """The options whose values differ between runs, as (option, [value per run in order]); the options
    naming where a run lives (`PLACE_OPTIONS`) are left out. A run without the option shows None."""
    names = sorted({name for values in configs.values() for name in values} - set(PLACE_OPTIONS))
    rows = []
    for name in names:
        values = [values.get(name) for values in configs.values()]
        if any(
            json.dumps(v, sort_keys=True, default=str) != json.dumps(values[0], sort_keys=True, default=str)
            for v in values[1:]
        ):
            rows.append((name, values))
    return rows


# ---------------------------------------------------------------------- metrics
@dataclass
class MetricsTable:
    """A run's metrics.jsonl as columns: `steps[i]` is the step of row i, `columns[name][i]` its value (NaN
    where the row lacks it). Step rows and evaluation rows are separate tables."""

    steps: list[int] = field(default_factory=list)
    columns: dict[str, list[float]] = field(default_factory=dict)

    def add(self, step: int, values: Mapping[str, Any]) -> None:
        n = len(self.steps)
        self.steps.append(step)
        for key, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                if key not in self.columns:
                    self.columns[key] = [float("nan")] * n
                self.columns[key].append(float(value))
        for series in self.columns.values():
            if len(series) == n:
                series.append(float("nan"))


@dataclass
class RunMetrics:
    """Step statistics and evaluation metrics of one run, read from its metrics.jsonl."""

    steps: MetricsTable
    evals: MetricsTable


_METRICS_CACHE: dict[Path, tuple[int, RunMetrics]] = {}


def read_metrics(folder: str | Path) -> RunMetrics:
    """Every logged step and evaluation of a run (cached until metrics.jsonl changes). Rows of a step that
    appears again (a run resumed before the settling of metrics.jsonl existed) keep the last one."""
    path = Path(folder) / METRICS_FILE
    key = _mtime(path)
    with _CACHE_LOCK:
        cached = _METRICS_CACHE.get(path)
    if cached is not None and cached[0] == key:
        return cached[1]
    step_rows: dict[int, dict[str, Any]] = {}
    eval_rows: dict[int, dict[str, Any]] = {}
    try:
        lines = path.read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if not isinstance(row, dict) or not isinstance(row.get("step"), int):
            continue
        step = row.pop("step")
        is_eval = any(k.startswith(S.EVAL_PREFIX) for k in row)
        (eval_rows if is_eval else step_rows)[step] = row
    metrics = RunMetrics(MetricsTable(), MetricsTable())
    for table, rows in ((metrics.steps, step_rows), (metrics.evals, eval_rows)):
        for step in sorted(rows):
            table.add(step, rows[step])
    with _CACHE_LOCK:
        _METRICS_CACHE[path] = (key, metrics)
    return metrics


def long_rows(runs: Mapping[str, RunMetrics]) -> Iterator[tuple[str, int, str, float]]:
    """(run, step, metric, value) for every logged value of every run, steps then evaluations."""
    for run, metrics in runs.items():
        for table in (metrics.steps, metrics.evals):
            for i, step in enumerate(table.steps):
                for name, series in table.columns.items():
                    value = series[i]
                    if value == value:  # NaN: the row did not log this metric
                        yield run, step, name, value


def write_long_csv(rows: Iterable[tuple[str, int, str, float]], path: str | Path | None = None) -> str:
    """The rows as CSV with the header run,step,metric,value; written to `path` when given, and returned."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["run", "step", "metric", "value"])
    writer.writerows((run, step, metric, repr(value)) for run, step, metric, value in rows)
    text = buffer.getvalue()
    if path is not None:
        Path(path).write_text(text)
    return text


def x_values(table: MetricsTable, axis: str) -> Sequence[float]:
    """The x of each row for an overlay: 'steps', 'tokens' (student tokens seen) or 'wall_clock' (seconds
    of training); NaN where a row lacks that value."""
    if axis == "steps":
        return [float(s) for s in table.steps]
    name = {"tokens": S.TOKENS_SEEN, "wall_clock": S.WALL_CLOCK}.get(axis)
    if name is None:
        raise ConfigError("x axis", axis, f"one of {', '.join(X_AXES)}")
    return table.columns.get(name, [float("nan")] * len(table.steps))


X_AXES = {"steps": "step", "tokens": "student tokens seen", "wall_clock": "wall-clock (s)"}


@dataclass
class OverlaySeries:
    """One run's curves on a shared x-axis: `x` and `columns` of its step rows, `eval_x` and `evals` of its
    evaluations (an evaluation's x is that of the step row it was taken at, or the last before it)."""

    label: str
    x: list[float]
    columns: dict[str, list[float]]
    eval_x: list[float]
    evals: dict[str, list[float]]


def overlay_series(label: str, metrics: RunMetrics, axis: str) -> OverlaySeries:
    """A run's metrics ready to overlay on the x-axis `axis` (see `X_AXES`)."""
    x = list(x_values(metrics.steps, axis))
    eval_x = []
    steps = metrics.steps.steps
    for step in metrics.evals.steps:
        # the step row at or just before the evaluation (rows are sorted by step)
        lo, hi = 0, len(steps)
        while lo < hi:
            mid = (lo + hi) // 2
            if steps[mid] <= step:
                lo = mid + 1
            else:
                hi = mid
        if axis == "steps":
            eval_x.append(float(step))
        else:
            eval_x.append(x[lo - 1] if lo else float("nan"))
    return OverlaySeries(label, x, dict(metrics.steps.columns), eval_x, dict(metrics.evals.columns))
