"""`tnd train` / `tnd reward` / `tnd config`: every expected failure is one line on stderr and a non-zero exit.

In-process through `main` for the messages, and in a subprocess for the exit codes a shell sees.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tnd_core.cli import main
from tnd_core.config import CustomPPOConfig

REPO = Path(__file__).resolve().parents[1]


def _one_line_error(err: str, command: str) -> str:
    """The error line of a failed command (the last of stderr, after any log or progress lines); asserts it is
    the only error line and that no traceback was printed."""
    lines = err.strip().splitlines()
    assert lines and lines[-1].startswith(f"tnd {command}: error: "), err
    assert sum("error:" in line for line in lines) == 1, err
    assert "Traceback" not in err
    return lines[-1]


def _defaults_file(tmp_path: Path) -> Path:
    """A config file of defaults: with --config, `tnd train` does not read the bundle's recommended config."""
    path = tmp_path / "defaults.yaml"
    CustomPPOConfig().save(path)
    return path


@pytest.mark.parametrize(
    "flags, named",
    [
        (["--steps", "ten"], "steps="),
        (["--steps", "1" + "0" * 100], "<= 10000000"),
        (["--steps", "1" * 5000], "<= 10000000"),
        (["--learning_rate", "1e400"], "finite number"),
        (["--seed", str(2**32)], "<= 4294967295"),
        (["--optimizer_name", "LBFGS"], "closure"),
        (["--optimizer_kwargs", '{"wd": 1}'], "'wd' is not an argument of optimizer 'adamw'"),
        (["--optimizer_kwargs", "{" * 50], "a JSON object"),
        (["--output_dir", "x" * 20_000], "at most 10,000 characters"),
    ],
)
def test_bad_flag_values_are_one_line_errors(flags, named, capsys, tmp_path):
    assert main(["train", "--config", str(_defaults_file(tmp_path)), *flags]) == 2
    line = _one_line_error(capsys.readouterr().err, "train")
    assert named in line and len(line) < 700


def test_unknown_flag_is_argparse_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--stpes", "3"])
    assert info.value.code == 2
    assert "unrecognized arguments: --stpes" in capsys.readouterr().err


@pytest.mark.parametrize(
    "name, content, named",
    [
        ("bad.yaml", b"steps: [1, 2", "valid YAML"),
        ("latin1.yaml", "output_dir: caf\xe9\n".encode("latin-1"), "UTF-8"),
        ("zero.yaml", b"0", "not a number"),
        ("list.yaml", b"- steps\n- 3\n", "not a list"),
        ("two.yaml", b"steps: 3\n---\nsteps: 4\n", "one YAML document"),
        ("alias.yaml", b"steps: &n 3\nwarmup: *n\n", "anchors and aliases"),
        ("bad.json", b'{"steps": 3,}', "valid JSON"),
        ("typo.yaml", b"stpes: 3\n", "unknown option"),
    ],
)
def test_bad_config_files_are_one_line_errors(name, content, named, capsys, tmp_path):
    path = tmp_path / name
    path.write_bytes(content)
    for command in ("train", "config"):
        assert main([command, "--config", str(path)]) == 2
        assert named in _one_line_error(capsys.readouterr().err, command)


def test_missing_and_unreadable_config_files(capsys, tmp_path):
    assert main(["train", "--config", str(tmp_path / "absent.yaml")]) == 2
    assert "no such file" in _one_line_error(capsys.readouterr().err, "train")
    assert main(["train", "--config", str(tmp_path)]) == 2  # a folder
    assert "no such file" in _one_line_error(capsys.readouterr().err, "train")
    huge = tmp_path / "huge.yaml"
    huge.write_text("# " + "x" * 1_100_000)
    assert main(["train", "--config", str(huge)]) == 2
    assert "at most 1,000,000" in _one_line_error(capsys.readouterr().err, "train")


def test_unwritable_output_folder_fails_before_anything_loads(capsys, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    args = ["--config", str(_defaults_file(tmp_path)), "--output_dir", str(blocker / "run")]
    assert main(["train", *args]) == 2
    line = _one_line_error(capsys.readouterr().err, "train")
    assert "output_dir=" in line and "cannot be created or written" in line


def test_missing_prompt_column_fails_on_the_bundles_prompts_before_the_models_load(
    tiny_bundle, capsys, tmp_path, monkeypatch
):
    import tnd_core.pipeline

    def no_model_loads(*args, **kwargs):
        raise AssertionError("a model was loaded before the data was checked")

    monkeypatch.setattr(tnd_core.pipeline, "_load", no_model_loads)
    assert main(["train", "--prompt_column", "nope", "--output_dir", str(tmp_path / "run")]) == 2
    line = _one_line_error(capsys.readouterr().err, "train")
    assert "prompt_column='nope'" in line and "its columns are: prompt" in line


def test_corrupt_checkpoint_state_is_a_one_line_error(tiny_bundle, capsys, tmp_path):
    checkpoint = tmp_path / "run" / "checkpoint-1"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text('{"step": 1, "kl_contr')
    args = ["train", "--steps", "1", "--batch_size", "4", "--mini_batch_size", "2", "--ppo_epochs", "1"]
    args += ["--output_dir", str(tmp_path / "run"), "--resume_from_checkpoint", str(checkpoint)]
    assert main(args) == 2
    assert "resume_from_checkpoint=" in _one_line_error(capsys.readouterr().err, "train")


def test_tnd_reward_user_errors_are_one_line(capsys, tmp_path):
    assert main(["reward", "--model", "scratch", "--data", str(tmp_path / "absent.csv")]) == 2
    assert "output_dir" in _one_line_error(capsys.readouterr().err, "reward")
    assert main(["reward", "--batch_size", "0"]) == 2
    assert "batch_size=0" in _one_line_error(capsys.readouterr().err, "reward")
    (tmp_path / "r.yaml").write_bytes(b"\xff\xfe")
    assert main(["reward", "--config", str(tmp_path / "r.yaml")]) == 2
    assert "UTF-8" in _one_line_error(capsys.readouterr().err, "reward")
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    args = ["reward", "--model", "scratch", "--data", "d.csv", "--output_dir", str(blocker / "out")]
    assert main(args) == 2
    assert "output_dir=" in _one_line_error(capsys.readouterr().err, "reward")


@pytest.mark.parametrize(
    "args, code",
    [
        (["config", "--steps", "1" + "0" * 100], 2),
        (["config", "--seed", "-1"], 2),
        (["config", "--stpes", "3"], 2),
        (["reward", "--seed", "99999999999999999999"], 2),
        (["config", "--steps", "3"], 0),
    ],
)
def test_exit_codes_in_a_subprocess(args, code):
    run = subprocess.run(
        [sys.executable, "-m", "tnd_core.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == code, run.stderr
    assert "Traceback" not in run.stderr
    if code:
        last = run.stderr.strip().splitlines()[-1]
        assert last.startswith("tnd") and ": error: " in last, run.stderr
