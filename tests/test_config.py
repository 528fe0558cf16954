"""CustomPPOConfig: validation names the field and what is allowed; every entry point round-trips."""

from __future__ import annotations

import argparse
import json

import pytest

from tnd_core.cli import build_parser, main
from tnd_core.config import (
    CustomPPOConfig,
    add_config_arguments,
    config_from_arguments,
    field_spec,
    field_specs,
    json_schema,
    parse_value,
    specs_by_group,
)
from tnd_core.errors import ConfigError

SEED_OPTIONS = [
    "learning_rate", "batch_size", "mini_batch_size", "gradient_accumulation_steps", "optimize_device_cache",
    "early_stopping", "target_kl", "ppo_epochs", "max_grad_norm", "init_kl_coef", "adap_kl_ctrl", "use_score_scaling",
    "use_score_norm", "score_clip", "optimizer_name", "optimizer_kwargs", "scheduler_name", "scheduler_kwargs",
]
TRL_OPTIONS = [
    "gamma", "lam", "cliprange", "cliprange_value", "vf_coef", "kl_penalty", "target", "horizon", "whiten_rewards",
    "ratio_threshold", "steps", "seed", "warmup",
]
TND_OPTIONS = [
    "distill_coef", "distill_temperature", "divergence", "jsd_beta", "use_teacher_demos", "demo_score", "reward_shaping",
    "shaping_baseline", "clm_coef", "clm_per_step", "ppo_per_step", "kl_reference", "entropy_coef", "max_new_tokens",
    "temperature", "top_k", "top_p", "output_dir", "save_steps", "logging_steps", "eval_steps", "resume_from_checkpoint",
    "mixed_precision", "report_to",
]


def test_seed_example_constructs():
    config = CustomPPOConfig(learning_rate=1e-5, batch_size=8, mini_batch_size=4, early_stopping=True, target_kl=0.1)
    assert (config.learning_rate, config.batch_size, config.mini_batch_size) == (1e-5, 8, 4)
    assert config.early_stopping and config.target_kl == 0.1


@pytest.mark.parametrize("name", SEED_OPTIONS + TRL_OPTIONS + TND_OPTIONS)
def test_option_exists_with_metadata(name):
    spec = field_spec(name)
    assert spec.help and spec.group in specs_by_group()


def test_every_field_has_help_group_and_a_valid_default():
    specs = field_specs()
    assert len({s.name for s in specs}) == len(specs)
    for spec in specs:
        assert spec.help.strip(), spec.name
        if spec.choices:
            assert spec.default in spec.choices, spec.name
    CustomPPOConfig()  # defaults pass their own validation


BAD_CONFIGS = [
    ({"learning_rate": -1e-5}, "learning_rate", "> 0"),
    ({"learning_rate": 0.0}, "learning_rate", "> 0"),
    ({"batch_size": 10, "mini_batch_size": 4}, "batch_size", "multiple of mini_batch_size * gradient_accumulation_steps"),
    ({"batch_size": 8, "mini_batch_size": 4, "gradient_accumulation_steps": 4}, "batch_size", "= 16"),
    ({"batch_size": 0}, "batch_size", ">= 1"),
    ({"batch_size": 8.5}, "batch_size", "integer"),
    ({"batch_size": True}, "batch_size", "integer"),
    ({"optimizer_name": "lion"}, "optimizer_name", "adamw, adam, sgd, adafactor"),
    ({"scheduler_name": "step"}, "scheduler_name", "one of constant"),
    ({"top_p": 0.0}, "top_p", "> 0 and <= 1"),
    ({"top_p": 1.2}, "top_p", "> 0 and <= 1"),
    ({"top_k": -1}, "top_k", ">= 0"),
    ({"temperature": 0}, "temperature", "> 0"),
    ({"kl_penalty": "l2"}, "kl_penalty", "kl, abs, mse, full"),
    ({"divergence": "kl"}, "divergence", "forward_kl, reverse_kl, jsd"),
    ({"jsd_beta": 1.5}, "jsd_beta", "<= 1"),
    ({"gamma": 1.01}, "gamma", "<= 1"),
    ({"cliprange": 0}, "cliprange", "> 0"),
    ({"score_clip": -1.0}, "score_clip", "> 0"),
    ({"max_grad_norm": float("nan")}, "max_grad_norm", "finite"),
    ({"use_score_norm": True}, "use_score_norm", "requires use_score_scaling"),
    ({"demo_score": "high"}, "demo_score", "'reward_model' or a finite number"),
    ({"reward_shaping": "div"}, "shaping_baseline", "non-zero"),
    ({"clm_per_step": 0, "ppo_per_step": 0}, "ppo_per_step", "cannot both be 0"),
    ({"mixed_precision": "fp8"}, "mixed_precision", "no, fp16, bf16"),
    ({"report_to": "mlflow"}, "report_to", "none, tensorboard"),
    ({"optimizer_kwargs": "[1, 2]"}, "optimizer_kwargs", "mapping"),
    ({"early_stopping": "yes"}, "early_stopping", "true or false"),
    ({"patience_min_delta": 0.1}, "patience_min_delta", "patience > 0"),
]


@pytest.mark.parametrize("values, field_name, allowed", BAD_CONFIGS)
def test_bad_config_names_field_and_allowed_values(values, field_name, allowed):
    with pytest.raises(ConfigError) as info:
        CustomPPOConfig(**values)
    assert info.value.field == field_name
    assert allowed in str(info.value)
    assert field_name in str(info.value)


def test_any_torch_optimizer_class_is_accepted():
    assert CustomPPOConfig(optimizer_name="RMSprop").optimizer_name == "RMSprop"


def test_fixed_demo_score_accepted():
    assert CustomPPOConfig(demo_score="2.5").demo_score == "2.5"


def test_round_trips_dict_json_yaml(tmp_path):
    config = CustomPPOConfig(
        learning_rate=3e-4, batch_size=12, mini_batch_size=3, optimizer_kwargs={"weight_decay": 0.01},
        score_clip=2.0, divergence="jsd", demo_score="1.0",
    )
    assert CustomPPOConfig.from_dict(config.to_dict()) == config
    assert CustomPPOConfig.from_json(config.to_json()) == config
    assert CustomPPOConfig.from_yaml(config.to_yaml()) == config
    for name in ("run.yaml", "run.json"):
        config.save(tmp_path / name)
        assert CustomPPOConfig.load(tmp_path / name) == config


def test_seed_alias_optimize_cuda_cache():
    assert CustomPPOConfig.from_dict({"optimize_cuda_cache": True}).optimize_device_cache is True


def test_unknown_key_in_file_is_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("learning_rate: 0.001\nlearnig_rate: 0.01\n")
    with pytest.raises(ConfigError) as info:
        CustomPPOConfig.load(path)
    assert info.value.field == "learnig_rate" and "learning_rate" in info.value.allowed


def test_malformed_yaml_is_a_config_error():
    with pytest.raises(ConfigError, match="valid YAML"):
        CustomPPOConfig.from_yaml("learning_rate: [1, 2")


def test_errors_lists_every_bad_field():
    config = CustomPPOConfig()
    config.top_p = 5.0
    config.batch_size = -1
    assert {e.field for e in config.errors()} == {"top_p", "batch_size"}


@pytest.mark.parametrize(
    "name, text, expected",
    [
        ("batch_size", "32", 32),
        ("learning_rate", "1e-4", 1e-4),
        ("early_stopping", "true", True),
        ("adap_kl_ctrl", "off", False),
        ("score_clip", "", None),
        ("score_clip", "none", None),
        ("optimizer_kwargs", '{"weight_decay": 0.1}', {"weight_decay": 0.1}),
        ("kl_penalty", "abs", "abs"),
    ],
)
def test_parse_value_from_text(name, text, expected):
    assert parse_value(field_spec(name), text) == expected


@pytest.mark.parametrize("name, text", [("batch_size", "eight"), ("early_stopping", "maybe"), ("optimizer_kwargs", "[1]")])
def test_parse_value_rejects_with_field_name(name, text):
    with pytest.raises(ConfigError) as info:
        parse_value(field_spec(name), text)
    assert info.value.field == name


def test_cli_flags_are_generated_for_every_option(tmp_path):
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    flags = {a for action in parser._actions for a in action.option_strings}
    assert {f"--{s.name}" for s in field_specs()} <= flags
    assert "--optimize_cuda_cache" in flags

    base = tmp_path / "base.yaml"
    CustomPPOConfig(learning_rate=1e-3, batch_size=8, mini_batch_size=2).save(base)
    args = build_parser().parse_args(["train", "--config", str(base), "--batch_size", "16", "--early_stopping", "true"])
    config = config_from_arguments(args, CustomPPOConfig.load(args.config))
    assert (config.learning_rate, config.batch_size, config.mini_batch_size, config.early_stopping) == (1e-3, 16, 2, True)


def test_cli_reports_bad_flag_without_traceback(capsys):
    assert main(["config", "--top_p", "3"]) == 2
    err = capsys.readouterr().err
    assert "top_p=3.0 is invalid" in err and "Traceback" not in err


def test_cli_config_prints_resolved_yaml(capsys):
    assert main(["config", "--learning_rate", "0.002"]) == 0
    assert CustomPPOConfig.from_yaml(capsys.readouterr().out).learning_rate == 0.002


def test_json_schema_matches_fields():
    schema = json_schema()
    assert set(schema["properties"]) == {s.name for s in field_specs()}
    assert schema["properties"]["kl_penalty"]["enum"] == ["kl", "abs", "mse", "full"]
    assert schema["properties"]["top_p"]["exclusiveMinimum"] == 0.0
    assert schema["properties"]["score_clip"]["type"] == ["number", "null"]
    json.dumps(schema)
