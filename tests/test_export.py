"""Export: the newest checkpoint zipped, metrics as CSV, and a hub push that never reveals the token."""

from __future__ import annotations

import zipfile

import pandas as pd
import pytest

from app.export_tab import METRICS_FILE, latest_checkpoint, push_to_hub, write_metrics_csv, zip_checkpoint
from app.runner import RunStore
from tnd_core.config import CustomPPOConfig
from tnd_core.errors import ConfigError, TndError
from tnd_core.events import CheckpointEvent, EvalEvent, StepEvent

TOKEN = "hf_NotARealToken1234567890"


def _store_with_steps(output_dir: str) -> RunStore:
    store = RunStore()
    store.reset("alice", CustomPPOConfig(output_dir=output_dir))
    store.on_event(StepEvent(1, 3, {"env/reward_mean": 0.5}, 1.0))
    store.on_event(StepEvent(2, 3, {"env/reward_mean": 0.7, "objective/kl": 0.1}, 2.0))
    return store


def test_latest_checkpoint_is_the_highest_step_and_zips(tmp_path):
    for step in (9, 10, 2):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "config.json").write_text(f'{{"step": {step}}}')
    store = _store_with_steps(str(tmp_path))
    assert latest_checkpoint(store.snapshot(), "unused").name == "checkpoint-10"  # numeric, not text, order
    store.on_event(CheckpointEvent(9, str(tmp_path / "checkpoint-9")))
    assert latest_checkpoint(store.snapshot(), "unused").name == "checkpoint-9"  # the run's own word wins
    archive = zip_checkpoint(tmp_path / "checkpoint-10")
    with zipfile.ZipFile(archive) as z:
        assert z.read("config.json") == b'{"step": 10}'


def test_no_checkpoint_is_said_in_words(tmp_path):
    with pytest.raises(TndError, match="No checkpoint yet"):
        latest_checkpoint(RunStore().snapshot(), str(tmp_path))


def test_metrics_csv_falls_back_to_the_kept_points_without_a_metrics_file(tmp_path):
    path, rows = write_metrics_csv(_store_with_steps(str(tmp_path)).snapshot())
    frame = pd.read_csv(path)
    assert rows == 2 and frame["step"].tolist() == [1, 2]
    assert frame["env/reward_mean"].tolist() == [0.5, 0.7]
    assert frame["objective/kl"].isna().tolist() == [True, False]
    with pytest.raises(TndError, match="No metrics yet"):
        write_metrics_csv(RunStore().snapshot())


def test_metrics_csv_has_every_step_of_the_runs_metrics_file(tmp_path):
    from tnd_core.trainers.ppo_trainer.metrics_log import METRICS_FILE as CORE_METRICS_FILE
    from tnd_core.trainers.ppo_trainer.metrics_log import MetricsLog

    assert METRICS_FILE == CORE_METRICS_FILE
    store = RunStore(max_points=100, recent_points=20, max_eval_points=20)  # thins early: the file must not
    store.reset("alice", CustomPPOConfig(output_dir=str(tmp_path)))
    record = MetricsLog(tmp_path)  # what the trainer writes before any subscriber sees an event
    for step in range(1, 3_001):
        stats = {"env/reward_mean": step / 10, "objective/kl": 1.0 if step > 1_000 else float("nan")}
        for event in [StepEvent(step, 3_000, stats, step)] + (
            [EvalEvent(step, {"distinct_1": 0.5})] if step % 50 == 0 else []
        ):
            record(event)
            store.on_event(event)
    snap = store.snapshot()
    assert len(snap.steps) <= 100 and snap.logged_steps == 3_000
    with open(tmp_path / METRICS_FILE, "a") as f:
        f.write('{"step": 3001, "env/rew')  # a line cut short by a crash
    path, rows = write_metrics_csv(snap)
    frame = pd.read_csv(path)
    assert rows == 3_000 and frame["step"].tolist() == list(range(1, 3_001))  # evaluation rows left out
    assert frame["env/reward_mean"].tolist() == pytest.approx([s / 10 for s in range(1, 3_001)])
    assert frame["objective/kl"].isna().sum() == 1_000
    assert not any(c.startswith("eval/") for c in frame.columns)


def test_push_checks_inputs_and_never_echoes_the_token(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="repo_id"):
        push_to_hub(tmp_path, "not a repo id", TOKEN, private=True)
    with pytest.raises(ConfigError, match="token"):
        push_to_hub(tmp_path, "me/student", "", private=True)

    import huggingface_hub

    def leaky(self, *args, **kwargs):
        raise RuntimeError(f"401 Unauthorized for Authorization: Bearer {self.token}")

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", leaky)
    with pytest.raises(TndError) as failure:
        push_to_hub(tmp_path, "me/student", TOKEN, private=True)
    assert "401 Unauthorized" in str(failure.value) and TOKEN not in str(failure.value)
    assert failure.value.__suppress_context__  # a printed traceback does not show the original error either
