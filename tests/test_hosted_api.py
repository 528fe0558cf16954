"""`python app.py --hosted` attacked through its own API (gradio_client), as a stranger on a public Space
would: each attack is refused in words and the server keeps serving."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from api_calls import status, wait_for

from benchmarks.app_server import running_app

pytestmark = pytest.mark.slow

RUN = (
    "steps: 300\nbatch_size: 4\nmini_batch_size: 4\nppo_epochs: 1\nmax_new_tokens: 8\n"
    "logging_steps: 1\neval_steps: 0\nsave_steps: 0\n"
)
# 511 bytes of nested aliases: a naive YAML loader expands it to billions of list items
ALIAS_BOMB = "\n".join(
    ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [f"{chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 9)}]" for i in range(8)]
    + ["steps: *i"]
)


@pytest.fixture(scope="module")
def hosted_app(tiny_bundle, tmp_path_factory):
    from gradio_client import Client

    workdir = tmp_path_factory.mktemp("hosted")
    data_root = workdir / "data"
    secret = workdir / "secret.txt"
    secret.write_text("HF_TOKEN=hf_not_for_strangers\n")
    env = {
        "TND_DATA_ROOT": str(data_root),
        "TND_RUNS_ROOT": str(data_root / "runs"),  # the test session's own root would win otherwise
        "TND_MAX_COMPARE_PER_MINUTE": "3",
        "TND_MAX_UPLOAD_MB": "1",
        "TND_MAX_UPLOADS_PER_SESSION": "3",
    }
    with running_app(workdir, args=["--hosted"], env=env) as url:
        yield Client(url, verbose=False), url, workdir, secret


def start(client, owner: str, yaml_text: str) -> str:
    return client.predict(owner, yaml_text, api_name="/start_training")


def test_remote_code_is_refused(hosted_app):
    client, *_ = hosted_app
    answer = start(client, "mallory", "trust_remote_code: true\nstudent_name_or_path: mallory/evil-model\n")
    assert answer.startswith("error: trust_remote_code=True is invalid: off on this hosted app"), answer
    assert status(client)["state"] in ("idle", "completed", "stopped", "failed")


def test_server_files_cannot_be_read_or_probed(hosted_app):
    client, _, workdir, secret = hosted_app
    answers = []
    for path in (str(secret), str(workdir / "no-such-file.txt"), "/etc/hostname", "/etc/no-such-file.txt"):
        _, message, table = client.predict(path, "prompt", None, api_name="/preview_prompts")
        assert "HF_TOKEN" not in str(table) and "hf_not_for_strangers" not in message
        field, _, reason = message.partition("=")
        answers.append((field, reason.partition(" is invalid: ")[2]))
        refused = start(client, "mallory", f"dataset_name_or_path: {path}\n")
        assert refused.startswith("error: dataset_name_or_path="), refused
        assert "on this hosted app" in refused
    assert len(set(answers)) == 1, answers  # the same words whether the file exists or not
    for model in ("/etc", "/no/such/folder", str(workdir)):
        refused = start(client, "mallory", f"student_name_or_path: {model}\n")
        assert refused.startswith("error: student_name_or_path=") and "on this hosted app" in refused


def test_each_limit_is_refused_with_field_value_and_limit(hosted_app):
    client, *_ = hosted_app
    for text, field in [
        ("steps: 1000000000", "steps"),
        ("batch_size: 1000000\nmini_batch_size: 4", "batch_size"),
        ("ppo_epochs: 4000", "ppo_epochs"),
        ("max_new_tokens: 100000", "max_new_tokens"),
        ("max_prompt_length: 100000", "max_prompt_length"),
        ("save_total_limit: 0", "save_total_limit"),
    ]:
        answer = start(client, "mallory", text)
        assert answer.startswith(f"error: {field}="), answer
        assert "TND_MAX_" in answer or "must be" in answer, answer


def test_models_tab_refuses_remote_code_and_server_paths(hosted_app):
    client, _, workdir, _ = hosted_app
    # Models tab inputs: the owner token, then teacher, student, reward model, trust_remote_code
    message, _ = client.predict("mallory", "bundle", "bundle", "bundle", True, api_name="/load_models")
    assert message.startswith("❌ trust_remote_code=True is invalid: off on this hosted app"), message
    message, _ = client.predict("mallory", "bundle", str(workdir), "bundle", False, api_name="/load_models")
    assert message.startswith("❌ student_name_or_path=") and "on this hosted app" in message, message
    assert str(workdir) not in message
    assert status(client)["state"] in ("idle", "completed", "stopped", "failed")


def test_upload_size_and_count_limits(hosted_app, tmp_path):
    from gradio_client import handle_file

    client, *_ = hosted_app
    big = tmp_path / "big.csv"
    big.write_text("prompt\n" + "x" * (2 * 2**20) + "\n")
    *_, message, _ = client.predict(handle_file(str(big)), "uploader", api_name="/upload_prompts")
    assert message.startswith("❌ dataset file='big.csv' is invalid: at most 1 MB"), message
    answers = []
    for i in range(4):
        small = tmp_path / f"p{i}.txt"
        small.write_text("the dog\n")
        answers.append(client.predict(handle_file(str(small)), "uploader", api_name="/upload_prompts")[3])
    assert all(a.startswith("✅") for a in answers[:3]), answers
    assert "at most 3 uploaded files per session" in answers[3], answers[3]


def test_alias_bomb_is_refused_fast_and_short(hosted_app):
    client, *_ = hosted_app
    assert len(ALIAS_BOMB) < 600
    began = time.monotonic()
    answer = start(client, "mallory", ALIAS_BOMB)
    assert time.monotonic() - began < 10
    assert answer.startswith("error: config"), answer[:300]
    assert len(answer) < 1000


def test_uploads_are_per_session_and_named_without_server_paths(hosted_app, tmp_path):
    from gradio_client import handle_file

    client, _, workdir, _ = hosted_app
    alice_file, bob_file = tmp_path / "a" / "prompts.csv", tmp_path / "b" / "prompts.csv"
    for path, text in ((alice_file, "prompt\nalice one\nalice two\n"), (bob_file, "prompt\nbob one\n")):
        path.parent.mkdir()
        path.write_text(text)
    alice = client.predict(handle_file(str(alice_file)), "alice-token", api_name="/upload_prompts")
    bob = client.predict(handle_file(str(bob_file)), "bob-token", api_name="/upload_prompts")
    assert alice[0] == bob[0] == "upload:prompts.csv"
    assert "2 prompts" in alice[3] and "1 prompts" in bob[3]
    assert str(workdir) not in alice[3] + bob[3]
    _, mine, _ = client.predict("upload:prompts.csv", "prompt", "alice-token", api_name="/preview_prompts")
    assert "2 prompts" in mine
    _, stranger, _ = client.predict("upload:prompts.csv", "prompt", "carol-token", api_name="/preview_prompts")
    assert stranger.startswith("❌") and "on this hosted app" in stranger


def test_a_run_writes_only_under_the_runs_root_and_compare_floods_are_throttled(hosted_app, tmp_path):
    from gradio_client import Client

    client, url, workdir, _ = hosted_app
    escape = tmp_path / "escape"
    answer = start(client, "alice", RUN + f"output_dir: {escape}\n")
    assert answer == "started: 300 steps into escape", answer
    wait_for(client, lambda s: s["logged_steps"] >= 2, 180, "two logged steps")
    assert not escape.exists()
    assert (workdir / "data" / "runs" / "escape" / "train.log").is_file()
    assert start(client, "bob", RUN + "output_dir: ../../x\n").startswith("error: A training job started by another")

    answers: list[dict] = []
    stop = threading.Event()

    def flood() -> None:
        stranger = Client(url, verbose=False)
        while not stop.is_set():
            answers.append(stranger.predict("the dog", 0, api_name="/compare"))

    before = status(client)["step"]
    threads = [threading.Thread(target=flood) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(20)
    stop.set()
    for thread in threads:
        thread.join(60)
    after = wait_for(client, lambda s: s["step"] > before, 60, "the run to go on")

    served = [a for a in answers if "error" not in a]
    refused = [a["error"] for a in answers if "error" in a]
    assert served, refused[:3]
    assert any("Too many Compare calls" in e for e in refused), refused[:3]
    assert all("Too many" in e or "busy" in e for e in refused), refused[:3]
    assert after["state"] in ("running", "pausing", "paused")
    assert client.predict("alice", api_name="/stop_training") == "stop requested"
    wait_for(client, lambda s: s["state"] == "stopped", 120, "the stop")
    assert Path(workdir / "data" / "runs" / "escape").is_dir()


def test_fuzzed_start_requests_through_the_server_are_answered_in_words(hosted_app):
    from fuzz_inputs import check_answer, plausible_mappings, yaml_documents
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    client, *_ = hosted_app
    outcomes: list[str] = []

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(document=st.one_of(yaml_documents(), plausible_mappings.map(yaml_dump)))
    def answered_in_words(document):
        outcomes.append(check_answer(start(client, "fuzzer", document), document))

    answered_in_words()
    assert len(outcomes) >= 60 and "refused" in outcomes
    if "started" in outcomes:  # the first valid config took the job slot: the later ones found it busy
        assert client.predict("fuzzer", api_name="/stop_training") == "stop requested"
        wait_for(client, lambda s: s["state"] in ("stopped", "completed", "failed"), 180, "the stop")
    assert status(client)["state"] in ("idle", "stopped", "completed", "failed")


def yaml_dump(mapping: dict) -> str:
    import yaml

    return yaml.safe_dump(mapping)
