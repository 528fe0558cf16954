"""Hosted mode's policy and the fair-share throttles, without a server: what a stranger may make the app
read, write, load and run, and that local mode keeps the owner's freedom."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from app.hosting import LIMITS, HostPolicy, run_name, session_key
from app.throttle import RateLimiter, TooManyRequests, WorkBudget
from tnd_core.config import CustomPPOConfig
from tnd_core.errors import ConfigError, TndError
from tnd_core.models.size import folder_parameters, safetensors_parameters


def hosted(tmp_path: Path, **env: str) -> HostPolicy:
    return HostPolicy.from_env({"TND_HOSTED": "1", "TND_DATA_ROOT": str(tmp_path / "data"), **env})


def write_safetensors(path: Path, shapes: dict[str, list[int]]) -> None:
    header = {name: {"dtype": "F32", "shape": shape, "data_offsets": [0, 0]} for name, shape in shapes.items()}
    header["__metadata__"] = {"format": "pt"}
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# ---------------------------------------------------------------------- which mode
def test_mode_follows_space_id_flag_and_env():
    assert not HostPolicy.from_env({}).hosted
    assert HostPolicy.from_env({"SPACE_ID": "someone/tnd"}).hosted
    assert not HostPolicy.from_env({"SPACE_ID": "someone/tnd", "TND_HOSTED": "0"}).hosted
    assert HostPolicy.from_env({"TND_HOSTED": "yes"}).hosted
    assert HostPolicy.from_env({}, hosted=True).hosted


def test_limits_have_defaults_and_the_host_raises_them():
    policy = HostPolicy.from_env({"TND_HOSTED": "1", "TND_MAX_STEPS": "50000"})
    assert policy.limit("steps") == 50000
    assert policy.limit("batch_size") == next(limit.default for limit in LIMITS if limit.name == "batch_size")
    with pytest.raises(ConfigError) as err:
        HostPolicy.from_env({"TND_MAX_STEPS": "lots"})
    assert err.value.field == "TND_MAX_STEPS"


# ---------------------------------------------------------------------- configs
def test_local_mode_keeps_the_owners_freedom(tmp_path):
    config = CustomPPOConfig(trust_remote_code=True, output_dir="/tmp/anywhere", steps=10**6)
    assert HostPolicy().check_config(config, "alice") is config


def test_remote_code_is_refused_unless_the_host_allows_it(tmp_path):
    config = CustomPPOConfig(trust_remote_code=True)
    with pytest.raises(ConfigError) as err:
        hosted(tmp_path).check_config(config, "alice")
    assert err.value.field == "trust_remote_code" and "TND_ALLOW_REMOTE_CODE" in err.value.allowed
    assert hosted(tmp_path, TND_ALLOW_REMOTE_CODE="1").check_config(config, "alice").trust_remote_code


@pytest.mark.parametrize(
    ("field", "value"),
    [("steps", 100_000), ("batch_size", 4096), ("ppo_epochs", 50), ("max_new_tokens", 5000), ("save_total_limit", 0)],
)
def test_each_limit_names_the_field_the_value_and_the_limit(tmp_path, field, value):
    values = {field: value}
    if field == "batch_size":
        values["mini_batch_size"] = 4
    with pytest.raises(ConfigError) as err:
        hosted(tmp_path).check_config(CustomPPOConfig(**values), "alice")
    assert err.value.field == field and err.value.value == value
    assert "on this hosted app" in err.value.allowed and "TND_MAX_" in err.value.allowed


def test_output_dir_is_a_run_name_under_the_runs_root(tmp_path):
    policy = hosted(tmp_path)
    for given, name in [("../x", "x"), ("/etc", "etc"), ("outputs/tnd-run", "tnd-run"), ("a b/../..", "tnd-run")]:
        checked = policy.check_config(CustomPPOConfig(output_dir=given), "alice")
        assert Path(checked.output_dir) == policy.runs_root / name
        assert policy.runs_root.resolve() in Path(checked.output_dir).resolve().parents
    assert run_name("my run!") == "my-run"


def test_a_run_name_belongs_to_the_session_that_made_it_and_old_runs_are_pruned(tmp_path):
    policy = hosted(tmp_path, TND_MAX_RUNS_KEPT="2")
    first = policy.check_config(CustomPPOConfig(output_dir="one"), "alice").output_dir
    policy.claim_run(first, "alice")
    with pytest.raises(ConfigError, match="belongs to another session"):
        policy.claim_run(first, "bob")
    policy.claim_run(first, "alice")  # the owner may reuse it (resume)
    outside = tmp_path / "elsewhere" / "checkpoint-1"
    outside.mkdir(parents=True)
    for name in ("two", "three"):
        policy.claim_run(policy.runs_root / name, "alice")
    assert sorted(p.name for p in policy.runs_root.iterdir()) == ["three", "two"]
    assert outside.is_dir()
    with pytest.raises(ConfigError):
        policy.claim_run(tmp_path / "elsewhere", "alice")


def test_resume_is_limited_to_the_runs_own_checkpoints(tmp_path):
    policy = hosted(tmp_path)
    for ok in ("", "latest"):
        assert policy.check_config(CustomPPOConfig(resume_from_checkpoint=ok), "alice").resume_from_checkpoint == ok
    checked = policy.check_config(CustomPPOConfig(output_dir="r", resume_from_checkpoint="checkpoint-40"), "alice")
    assert Path(checked.resume_from_checkpoint) == policy.runs_root / "r" / "checkpoint-40"
    with pytest.raises(ConfigError) as err:
        policy.check_config(CustomPPOConfig(resume_from_checkpoint="/etc/checkpoint-1"), "alice")
    assert err.value.field == "resume_from_checkpoint"


# ---------------------------------------------------------------------- sources
def test_sources_outside_the_allowed_roots_get_one_refusal_whatever_exists(tmp_path):
    policy = hosted(tmp_path)
    secret = tmp_path / "secret.txt"
    secret.write_text("HF_TOKEN=hf_abc\n")
    refusals = []
    values = (str(secret), str(tmp_path / "missing.txt"), "/etc", "/no/such/folder", "../secret.txt", "~/x", "a" * 5000)
    for value in values:
        with pytest.raises(ConfigError) as err:
            policy.check_source("dataset_name_or_path", value, "alice")
        refusals.append(err.value.allowed)
    assert len(set(refusals)) == 1, refusals


def test_bundle_hub_ids_the_data_root_and_own_uploads_are_allowed(tmp_path):
    policy = hosted(tmp_path)
    (policy.data_root / "models" / "tiny").mkdir(parents=True)
    assert policy.check_source("student_name_or_path", "bundle", "alice") == "bundle"
    assert policy.check_source("student_name_or_path", "gpt2", "alice") == "hub:gpt2"
    assert policy.check_source("student_name_or_path", "Qwen/Qwen2.5-0.5B", "alice") == "hub:Qwen/Qwen2.5-0.5B"
    local = policy.check_source("student_name_or_path", "models/tiny", "alice")
    assert Path(local) == (policy.data_root / "models" / "tiny").resolve()

    upload = tmp_path / "prompts.csv"
    upload.write_text("prompt\nthe dog\n")
    kept, value = policy.keep_upload(upload, "alice", local_limit_mb=50)
    assert value == "upload:prompts.csv" and kept.parent == policy.uploads_dir("alice")
    assert Path(policy.check_source("dataset_name_or_path", value, "alice")) == kept.resolve()
    for stranger_value in (value, str(kept), f"uploads/{session_key('alice')}/prompts.csv"):
        with pytest.raises(ConfigError):  # bob cannot read alice's upload, by any name
            policy.check_source("dataset_name_or_path", stranger_value, "bob")


def test_uploads_are_per_session_bounded_in_size_and_count(tmp_path):
    policy = hosted(tmp_path, TND_MAX_UPLOADS_PER_SESSION="2", TND_MAX_UPLOAD_MB="1")
    files = []
    for i in range(3):
        path = tmp_path / f"p{i}.txt"
        path.write_text("a prompt\n")
        files.append(path)
    policy.keep_upload(files[0], "alice", 50)
    policy.keep_upload(files[0], "alice", 50)  # the same name again replaces it
    policy.keep_upload(files[1], "alice", 50)
    with pytest.raises(ConfigError, match="uploaded files per session"):
        policy.keep_upload(files[2], "alice", 50)
    policy.keep_upload(files[2], "bob", 50)  # another session has its own folder and count
    big = tmp_path / "big.csv"
    big.write_bytes(b"x" * (2 * 2**20))
    with pytest.raises(ConfigError, match="at most 1 MB"):
        policy.keep_upload(big, "carol", 50)
    same_name = tmp_path / "other" / "p0.txt"
    same_name.parent.mkdir()
    same_name.write_text("bob's prompt\n")
    bob_kept, _ = policy.keep_upload(same_name, "bob", 50)
    alice_kept = policy.uploads_dir("alice") / "p0.txt"
    assert alice_kept.read_text() == "a prompt\n" and bob_kept.read_text() == "bob's prompt\n"


def test_redact_hides_server_paths_in_hosted_mode_only(tmp_path):
    policy = hosted(tmp_path)
    text = f"cannot read {policy.data_root}/runs/x/train.log"
    assert str(tmp_path) not in policy.redact(text) and "<data>/runs/x/train.log" in policy.redact(text)
    assert HostPolicy().redact(text) == text


def test_sign_in_when_the_host_asks_for_it():
    HostPolicy().check_starter(None)
    policy = HostPolicy.from_env({"TND_HOSTED": "1", "TND_REQUIRE_LOGIN": "1"})
    with pytest.raises(TndError, match="Sign in"):
        policy.check_starter(None)
    policy.check_starter("alice")
    listed = HostPolicy.from_env({"TND_HOSTED": "1", "TND_ALLOWED_USERS": "alice, bob"})
    assert listed.require_login
    listed.check_starter("bob")
    with pytest.raises(TndError, match="mallory may not start runs"):
        listed.check_starter("mallory")


# ---------------------------------------------------------------------- model size
def test_parameters_are_counted_from_safetensors_headers(tmp_path):
    write_safetensors(tmp_path / "model-00001.safetensors", {"a": [10, 20], "b": [5]})
    write_safetensors(tmp_path / "model-00002.safetensors", {"c": [3, 3, 3]})
    assert safetensors_parameters(tmp_path / "model-00002.safetensors") == 27
    assert folder_parameters(tmp_path) == 200 + 5 + 27
    (tmp_path / "junk.safetensors").write_bytes(b"\xff" * 4)
    with pytest.raises(TndError, match="not a safetensors file"):
        folder_parameters(tmp_path)
    with pytest.raises(TndError, match="no .safetensors"):
        folder_parameters(tmp_path / "missing")


def test_models_above_the_parameter_limit_are_refused_before_loading(tmp_path):
    policy = hosted(tmp_path, TND_MAX_MODEL_PARAMETERS="100")
    folder = policy.data_root / "models" / "big"
    folder.mkdir(parents=True)
    write_safetensors(folder / "model.safetensors", {"w": [20, 20]})
    config = policy.check_config(CustomPPOConfig(student_name_or_path="models/big"), "alice")
    with pytest.raises(ConfigError) as err:
        policy.fetch_sources(config)
    assert err.value.field == "student_name_or_path" and "400 parameters" in str(err.value.value)


def test_hub_sources_fail_in_words_without_reading_local_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "owner" / "name").mkdir(parents=True)  # a local folder shadowing the Hub id is never used
    policy = hosted(tmp_path)
    config = policy.check_config(CustomPPOConfig(student_name_or_path="owner/name"), "alice")
    assert config.student_name_or_path == "owner/name"
    with pytest.raises(ConfigError) as err:
        policy.fetch_sources(config)  # the tests run offline: the Hub cannot be reached
    assert err.value.field == "student_name_or_path" and "Hub" in err.value.allowed


# ---------------------------------------------------------------------- throttles
def test_rate_limiter_counts_per_session_and_says_when_to_retry():
    clock = FakeClock()
    limiter = RateLimiter(2, window_s=60, what="Compare calls", clock=clock)
    limiter.check("a")
    limiter.check("a")
    limiter.check("b")
    with pytest.raises(TooManyRequests, match=r"at most 2 per 60 s per session. Try again in 60 s"):
        limiter.check("a")
    clock.now = 61
    limiter.check("a")


def test_work_budget_keeps_work_within_its_share_of_wall_time():
    clock = FakeClock()
    budget = WorkBudget(share=0.2, burst_s=1.0, clock=clock)
    with budget.turn(timeout_s=0) as meter:
        with meter.timing():
            clock.now += 3.0  # three seconds of work
    assert budget.wait_s() == pytest.approx((3.0 - 1.0) / 0.2)
    with pytest.raises(TooManyRequests, match="busy"):
        with budget.turn(timeout_s=1):
            pass
    clock.now += 10.5
    assert budget.wait_s() == 0.0
    with budget.turn(timeout_s=0) as meter:
        clock.now += 100.0  # waiting around the work is not charged
    assert budget.wait_s() == 0.0


def test_readme_documents_every_limit_with_its_default():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for limit in LIMITS:
        assert f"| `{limit.env}` | {limit.default:,} | {limit.what} |" in readme, limit.env
    for variable in ("TND_HOSTED", "TND_DATA_ROOT", "TND_ALLOW_REMOTE_CODE", "TND_REQUIRE_LOGIN", "TND_ALLOWED_USERS"):
        assert variable in readme, variable


def test_presets_are_per_session_and_bounded_in_hosted_mode(tmp_path, monkeypatch):
    from app import services
    from app.context import AppContext, BundleManager
    from app.runner import Runner

    monkeypatch.setenv("TND_CACHE_DIR", str(tmp_path / "cache"))
    ctx = AppContext(runner=Runner(), bundle=BundleManager(), policy=hosted(tmp_path))
    services.save_preset(ctx, "mine", CustomPPOConfig(steps=7), "alice")
    assert services.list_presets(ctx, "alice") == ["mine"] and services.list_presets(ctx, "bob") == []
    assert services.load_preset(ctx, "mine", "alice").steps == 7
    with pytest.raises(ConfigError):
        services.load_preset(ctx, "mine", "bob")
    monkeypatch.setattr(services, "MAX_PRESETS_HOSTED", 2)
    services.save_preset(ctx, "second", CustomPPOConfig(), "alice")
    services.save_preset(ctx, "mine", CustomPPOConfig(steps=8), "alice")  # overwriting one is fine
    with pytest.raises(ConfigError, match="at most 2 presets"):
        services.save_preset(ctx, "third", CustomPPOConfig(), "alice")

    local = AppContext(runner=Runner(), bundle=BundleManager())
    services.save_preset(local, "shared", CustomPPOConfig(), "alice")
    assert services.list_presets(local, "bob") == ["shared"]  # the machine's owner sees every preset


def test_api_start_needs_a_signed_in_allowed_user_when_the_host_asks(tmp_path):
    from app import api
    from app.context import AppContext, BundleManager
    from app.runner import Runner

    policy = hosted(tmp_path, TND_ALLOWED_USERS="alice")
    ctx = AppContext(runner=Runner(run_function=lambda config, callbacks=(), control=None: {}), bundle=BundleManager())
    ctx.policy = policy
    assert api.start_training(ctx, "token", "steps: 3").startswith("error: Sign in with Hugging Face")
    assert api.start_training(ctx, "token", "steps: 3", username="mallory").startswith("error: mallory may not")
    assert api.start_training(ctx, "token", "steps: 3", username="alice") == "started: 3 steps into tnd-run"
    assert ctx.runner.join(30)


def test_models_tab_says_what_zero_gpu_and_hosted_mode_mean(tmp_path, monkeypatch):
    from app.context import AppContext, BundleManager, device_name
    from app.models_tab import hardware_note
    from app.runner import Runner

    ctx = AppContext(runner=Runner(), bundle=BundleManager())
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    assert hardware_note(ctx) == ""
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    assert "ZeroGPU" in hardware_note(ctx) and "CPU" in hardware_note(ctx) and device_name() == "cpu"
    ctx.policy = hosted(tmp_path)
    assert "Hosted mode" in hardware_note(ctx)


def test_export_reads_only_runs_under_the_runs_root_in_hosted_mode(tmp_path):
    outside = tmp_path / "elsewhere" / "checkpoint-3"
    outside.mkdir(parents=True)
    assert HostPolicy().run_folder(str(outside.parent)) == outside.parent
    assert hosted(tmp_path).run_folder(str(outside.parent)) == hosted(tmp_path).runs_root / "elsewhere"
