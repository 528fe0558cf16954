"""`python app.py` answers gradio_client: config errors in words, a real run on the tiny bundle that
only its owner controls, Compare between steps, Stop with a checkpoint, and prompt uploads."""

from __future__ import annotations

import time

import pytest
from api_calls import status, wait_for

from benchmarks.app_server import running_app

pytestmark = pytest.mark.slow

# small steps on the tiny bundle: the test is about control, the engine's tests are about learning
RUN = (
    "steps: 400\nbatch_size: 4\nmini_batch_size: 4\nppo_epochs: 1\nmax_new_tokens: 8\n"
    "logging_steps: 1\neval_steps: 0\nsave_steps: 0\noutput_dir: api-run\n"
)


@pytest.fixture(scope="module")
def app(tiny_bundle, tmp_path_factory):
    from gradio_client import Client

    workdir = tmp_path_factory.mktemp("api")
    with running_app(workdir, env={"TND_RUNS_ROOT": str(workdir / "runs")}) as url:
        yield Client(url, verbose=False), workdir / "runs"


def test_bad_configs_are_refused_in_words(app):
    client, _ = app
    assert client.predict("alice", "batch_size: 10\nmini_batch_size: 4\n", api_name="/start_training").startswith(
        "error: batch_size=10 is invalid: must be a multiple of mini_batch_size"
    )
    assert client.predict("alice", "stepz: 3", api_name="/start_training").startswith(
        "error: stepz=3 is invalid: unknown option"
    )
    assert client.predict("alice", "steps: [", api_name="/start_training").startswith("error: config=")
    assert client.predict("", RUN, api_name="/start_training").startswith("error: owner token is missing")
    assert status(client)["state"] in ("idle", "completed", "stopped", "failed")


def test_owner_controls_a_real_run_others_cannot(app):
    client, runs_root = app
    assert client.predict("alice", RUN, api_name="/start_training").startswith("started: 400 steps")
    first = wait_for(client, lambda s: s["logged_steps"] >= 2, 180, "two logged steps")
    for key in ("env/reward_mean", "objective/kl", "objective/kl_coef", "ppo/loss/total", "distill/teacher_student_kl"):
        assert first["last_stats"].get(key) is not None, key
    assert first["rollout"] and first["rollout"][0]["trial"] is not None

    assert client.predict("bob", api_name="/stop_training").startswith("error: Only the session that started this job")
    assert client.predict("bob", api_name="/pause_training").startswith("error: Only the session")
    assert client.predict("bob", RUN, api_name="/start_training").startswith(
        "error: A training job started by another session"
    )

    assert client.predict("alice", api_name="/pause_training") == "pause requested"
    paused = wait_for(client, lambda s: s["state"] == "paused", 60, "the pause")
    time.sleep(2)
    assert status(client)["step"] == paused["step"]

    compared = client.predict("the dog", 3, api_name="/compare")
    assert "error" not in compared, compared
    assert compared["student_model"] == f"student of the current run at step {paused['step']}"
    assert isinstance(compared["teacher"]["score"], float) and isinstance(compared["student"]["score"], float)
    assert len(compared["tokens"]) > 0 and all(t["kl"] >= -1e-6 for t in compared["tokens"])

    assert client.predict("alice", api_name="/resume_training") == "resume requested"
    wait_for(client, lambda s: s["step"] >= paused["step"] + 2, 120, "steps after resuming")

    running = client.predict("the dog", 3, api_name="/compare")  # served by the training thread between steps
    assert "error" not in running and running["student_model"].startswith("student of the current run at step")

    assert client.predict("alice", api_name="/stop_training") == "stop requested"
    stopped = wait_for(client, lambda s: s["state"] == "stopped", 120, "the stop")
    assert 0 < stopped["step"] < 400
    assert stopped["checkpoint"] and (runs_root / "api-run").is_dir()
    assert any((runs_root / "api-run").glob("checkpoint-*")), "Stop writes a checkpoint"
    assert "train.log" in {p.name for p in (runs_root / "api-run").iterdir()}


def test_uploaded_prompt_files_are_previewed_or_refused_with_the_line(app, tmp_path):
    from gradio_client import handle_file

    client, _ = app
    good = tmp_path / "mine.csv"
    good.write_text("id,text\n1,the dog runs\n2,a cat sleeps\n")
    source, column, columns, message, table = client.predict(
        handle_file(str(good)), "alice", api_name="/upload_prompts"
    )
    assert source.endswith("mine.csv") and column == "id"  # no 'prompt' column: the first one, and the user picks
    assert "2 prompts" in message
    _, message, table = client.predict(source, "text", "alice", api_name="/preview_prompts")
    assert "2 prompts from column **text**" in message
    assert [row[1] for row in table["data"]] == ["the dog runs", "a cat sleeps"]

    bad = tmp_path / "broken.jsonl"
    bad.write_text('{"prompt": "fine"}\n{"prompt": oops}\n')
    _, _, _, message, _ = client.predict(handle_file(str(bad)), "alice", api_name="/upload_prompts")
    assert message.startswith("❌") and "line 2 is not valid JSON" in message

    _, message, _ = client.predict(source, "nope", "alice", api_name="/preview_prompts")
    assert "prompt_column='nope'" in message and "id, text" in message
