"""Option configs: validation names the field and what is allowed; every entry point round-trips.

CustomPPOConfig (TnD runs, TRL 0.11.4's PPOConfig names) and RewardTrainingConfig (`tnd reward`) share
one metadata helper; both are covered here.
"""

from __future__ import annotations

import argparse
import json

import pytest

from tnd_core.cli import build_parser, main
from tnd_core.config import (
    TRL_FIELDS_REPLACED,
    CustomPPOConfig,
    add_config_arguments,
    config_from_arguments,
    field_spec,
    field_specs,
    json_schema,
    parse_value,
    specs_by_group,
    specs_tagged,
)
from tnd_core.errors import ConfigError
from tnd_core.trainers.reward_trainer import RewardTrainingConfig

SEED_OPTIONS = [
    "learning_rate",
    "batch_size",
    "mini_batch_size",
    "gradient_accumulation_steps",
    "optimize_device_cache",
    "early_stopping",
    "target_kl",
    "ppo_epochs",
    "max_grad_norm",
    "init_kl_coef",
    "adap_kl_ctrl",
    "use_score_scaling",
    "use_score_norm",
    "score_clip",
    "optimizer_name",
    "optimizer_kwargs",
    "scheduler_name",
    "scheduler_kwargs",
]
TRL_OPTIONS = [
    "gamma",
    "lam",
    "cliprange",
    "cliprange_value",
    "vf_coef",
    "kl_penalty",
    "target",
    "horizon",
    "whiten_rewards",
    "ratio_threshold",
    "steps",
    "seed",
    "warmup",
]
TND_OPTIONS = [
    "distill_coef",
    "distill_temperature",
    "divergence",
    "jsd_beta",
    "use_teacher_demos",
    "demo_score",
    "reward_shaping",
    "shaping_baseline",
    "clm_coef",
    "clm_per_step",
    "ppo_per_step",
    "kl_reference",
    "entropy_coef",
    "max_new_tokens",
    "temperature",
    "top_k",
    "top_p",
    "output_dir",
    "save_steps",
    "logging_steps",
    "eval_steps",
    "resume_from_checkpoint",
    "mixed_precision",
    "report_to",
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
    (
        {"batch_size": 10, "mini_batch_size": 4},
        "batch_size",
        "multiple of mini_batch_size * gradient_accumulation_steps",
    ),
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
        learning_rate=3e-4,
        batch_size=12,
        mini_batch_size=3,
        optimizer_kwargs={"weight_decay": 0.01},
        score_clip=2.0,
        divergence="jsd",
        demo_score="1.0",
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


@pytest.mark.parametrize(
    "name, text", [("batch_size", "eight"), ("early_stopping", "maybe"), ("optimizer_kwargs", "[1]")]
)
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
    assert (config.learning_rate, config.batch_size, config.mini_batch_size, config.early_stopping) == (
        1e-3,
        16,
        2,
        True,
    )


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


# ---------------------------------------------------------------------- TRL 0.11.4's PPOConfig field names
# Every field of trl==0.11.4's PPOConfig (trl/trainer/ppo_config.py), in its order.
TRL_0114_FIELDS = [
    "exp_name",
    "seed",
    "log_with",
    "task_name",
    "model_name",
    "query_dataset",
    "reward_model",
    "remove_unused_columns",
    "tracker_kwargs",
    "accelerator_kwargs",
    "project_kwargs",
    "tracker_project_name",
    "push_to_hub_if_best_kwargs",
    "steps",
    "learning_rate",
    "adap_kl_ctrl",
    "init_kl_coef",
    "kl_penalty",
    "target",
    "horizon",
    "gamma",
    "lam",
    "cliprange",
    "cliprange_value",
    "vf_coef",
    "batch_size",
    "forward_batch_size",
    "mini_batch_size",
    "gradient_accumulation_steps",
    "world_size",
    "ppo_epochs",
    "max_grad_norm",
    "optimize_cuda_cache",
    "optimize_device_cache",
    "early_stopping",
    "target_kl",
    "compare_steps",
    "ratio_threshold",
    "use_score_scaling",
    "use_score_norm",
    "score_clip",
    "whiten_rewards",
    "gradient_checkpointing",
    "is_encoder_decoder",
    "is_peft_model",
    "backward_batch_size",
    "global_backward_batch_size",
    "global_batch_size",
    "dataset_num_proc",
]
SHARED_WITH_TRL = [name for name in TRL_0114_FIELDS if name in {s.name for s in field_specs()}]


def test_every_trl_field_name_is_a_field_an_alias_or_refused_with_advice():
    for name in TRL_0114_FIELDS:
        kinds = [name in SHARED_WITH_TRL, name in CustomPPOConfig.ALIASES, name in TRL_FIELDS_REPLACED]
        assert kinds.count(True) == 1, name


@pytest.mark.parametrize("name", SHARED_WITH_TRL)
def test_trl_names_we_share_are_taken_by_the_constructor(name):
    value = CustomPPOConfig().to_dict()[name]
    assert getattr(CustomPPOConfig(**{name: value}), name) == value


def test_trl_alias_works_in_the_constructor_and_the_cli(capsys):
    assert CustomPPOConfig(optimize_cuda_cache=True).optimize_device_cache is True
    assert main(["config", "--optimize_cuda_cache", "true"]) == 0
    assert CustomPPOConfig.from_yaml(capsys.readouterr().out).optimize_device_cache is True
    with pytest.raises(ConfigError) as info:
        CustomPPOConfig(optimize_cuda_cache=True, optimize_device_cache=False)
    assert "optimize_cuda_cache" in str(info.value) and "same option" in info.value.allowed


@pytest.mark.parametrize(
    "name, value, instead",
    [
        ("log_with", "wandb", "report_to"),
        ("tracker_project_name", "trl", "report_to"),
        ("forward_batch_size", 4, "mini_batch_size"),
        ("model_name", "gpt2", "student_name_or_path"),
        ("query_dataset", "stanfordnlp/imdb", "dataset_name_or_path"),
        ("reward_model", "lvwerra/distilbert-imdb", "reward_model_name_or_path"),
        ("accelerator_kwargs", {}, "accelerate"),
        ("world_size", 2, "num_processes"),
    ],
)
def test_other_trl_names_raise_a_config_error_saying_what_to_use(name, value, instead):
    for build in (lambda: CustomPPOConfig(**{name: value}), lambda: CustomPPOConfig.from_dict({name: value})):
        with pytest.raises(ConfigError) as info:
            build()
        assert info.value.field == name and instead in info.value.allowed


@pytest.mark.parametrize("name", sorted(TRL_FIELDS_REPLACED))
def test_every_refused_trl_name_is_refused(name):
    with pytest.raises(ConfigError) as info:
        CustomPPOConfig(**{name: None})
    assert info.value.field == name and "TRL" in info.value.allowed


def test_unknown_keyword_is_a_config_error_not_a_type_error():
    with pytest.raises(ConfigError) as info:
        CustomPPOConfig(learnig_rate=1e-3)
    assert info.value.field == "learnig_rate" and "learning_rate" in info.value.allowed


# ---------------------------------------------------------------------- field metadata of any config class
def test_metadata_helpers_default_to_the_ppo_config_and_take_any_config_class():
    assert field_specs() == field_specs(CustomPPOConfig)
    assert list(specs_by_group()) == list(CustomPPOConfig.GROUPS)
    assert [s.name for s in specs_tagged("generation")] == [
        "max_prompt_length",
        "max_new_tokens",
        "temperature",
        "top_k",
        "top_p",
        "do_sample",
    ]
    reward_specs = field_specs(RewardTrainingConfig)
    assert [s.name for s in reward_specs][:3] == ["mode", "model", "tokenizer"]
    assert field_spec("epochs", RewardTrainingConfig).type == "float"
    assert field_spec("tokenizer", RewardTrainingConfig).optional
    grouped = specs_by_group(RewardTrainingConfig)
    assert list(grouped) == list(RewardTrainingConfig.GROUPS)
    assert sorted(s.name for specs in grouped.values() for s in specs) == sorted(s.name for s in reward_specs)
    with pytest.raises(ConfigError, match="known options"):
        field_spec("steps", RewardTrainingConfig)
    with pytest.raises(ConfigError, match="report_to"):
        field_spec("log_with")


def test_json_schema_of_the_reward_config():
    schema = json_schema(RewardTrainingConfig)
    assert schema["title"] == "RewardTrainingConfig"
    assert set(schema["properties"]) == {s.name for s in field_specs(RewardTrainingConfig)}
    assert schema["properties"]["mode"]["enum"] == ["pairwise", "regression", "classification"]
    assert schema["properties"]["eval_fraction"]["exclusiveMaximum"] == 1.0
    assert schema["properties"]["eval_data"]["type"] == ["string", "null"]


# ---------------------------------------------------------------------- RewardTrainingConfig and `tnd reward`
def _reward_parser() -> argparse.ArgumentParser:
    return next(
        action.choices["reward"] for action in build_parser()._actions if isinstance(action, argparse._SubParsersAction)
    )


def test_tnd_reward_has_a_flag_per_field_with_help_from_the_metadata():
    actions = {action.dest: action for action in _reward_parser()._actions}
    assert set(actions) == {"help", "config"} | {s.name for s in field_specs(RewardTrainingConfig)}
    for spec in field_specs(RewardTrainingConfig):
        assert actions[spec.name].option_strings == [f"--{spec.name}"]
        assert actions[spec.name].help.startswith(spec.help), spec.name
    assert "pairwise, regression, classification" in actions["mode"].help
    assert "(default: 0.1)" in actions["eval_fraction"].help


def test_reward_flags_apply_on_top_of_a_config_file(tmp_path):
    path = tmp_path / "reward.yaml"
    RewardTrainingConfig(model="scratch", data="pairs.jsonl", output_dir="rm", batch_size=8).save(path)
    args = build_parser().parse_args(["reward", "--config", str(path), "--learning_rate", "0.003", "--eval_data", ""])
    config = config_from_arguments(args, RewardTrainingConfig.load(args.config))
    assert isinstance(config, RewardTrainingConfig)
    assert (config.model, config.batch_size, config.learning_rate, config.eval_data) == ("scratch", 8, 3e-3, None)
    flags_only = config_from_arguments(args, cls=RewardTrainingConfig)
    assert (flags_only.model, flags_only.learning_rate) == ("", 3e-3)


def test_reward_config_round_trips_dict_json_yaml(tmp_path):
    config = RewardTrainingConfig(
        mode="regression",
        model="scratch",
        tokenizer="bundle",
        data="stage.jsonl",
        eval_data="held_out.csv",
        output_dir="out/rm",
        text_column="utterance",
        label_column="stage",
        epochs=2.5,
        max_steps=40,
        learning_rate=5e-3,
        batch_size=8,
        max_length=64,
        seed=3,
    )
    assert RewardTrainingConfig.from_yaml(config.to_yaml()) == config
    assert RewardTrainingConfig.from_json(config.to_json()) == config
    for name in ("reward.yaml", "reward.json"):
        config.save(tmp_path / name)
        assert RewardTrainingConfig.load(tmp_path / name) == config
    assert config.replace(mode="pairwise").columns() == {"chosen": "chosen", "rejected": "rejected"}
    assert config.columns() == {"text": "utterance", "label": "stage"}


@pytest.mark.parametrize(
    "values, field_name, allowed",
    [
        ({"mode": "listwise"}, "mode", "pairwise, regression, classification"),
        ({"epochs": 0}, "epochs", "> 0"),
        ({"learning_rate": -1.0}, "learning_rate", "> 0"),
        ({"batch_size": 0}, "batch_size", ">= 1"),
        ({"eval_fraction": 1.0}, "eval_fraction", "< 1"),
        ({"max_steps": 0}, "max_steps", "-1 to train for `epochs`"),
        ({"max_steps": -2}, "max_steps", ">= -1"),
        ({"max_length": 1}, "max_length", ">= 2"),
        ({"model": 3}, "model", "string"),
        ({"steps": 10}, "steps", "unknown option"),
    ],
)
def test_bad_reward_config_names_field_and_allowed_values(values, field_name, allowed):
    with pytest.raises(ConfigError) as info:
        RewardTrainingConfig(**values)
    assert info.value.field == field_name and allowed in str(info.value)


def test_malformed_reward_config_file_is_a_config_error(tmp_path):
    path = tmp_path / "reward.yaml"
    path.write_text("mode: pairwise\nbatch_sise: 8\n")
    with pytest.raises(ConfigError) as info:
        RewardTrainingConfig.load(path)
    assert info.value.field == "batch_sise" and "batch_size" in info.value.allowed


# ---------------------------------------------------------------------- bounds and safe parsing
BILLION_LAUGHS = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]\n" for prev, name in zip("abcdefgh", "bcdefghi")
)


def test_every_numeric_option_has_an_upper_bound_shown_in_help_and_schema():
    for cls in (CustomPPOConfig, RewardTrainingConfig):
        schema = json_schema(cls)["properties"]
        for spec in field_specs(cls):
            if spec.type in ("int", "float"):
                assert spec.le is not None or spec.lt is not None, spec.name
                assert "<" in spec.bounds_text()
                assert "maximum" in schema[spec.name] or "exclusiveMaximum" in schema[spec.name]
    assert field_spec("seed").bounds_text() == ">= 0 and <= 4294967295"
    assert json_schema()["properties"]["seed"]["maximum"] == 2**32 - 1
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    assert "Allowed: >= 1 and <= 10000000." in next(a.help for a in parser._actions if a.dest == "steps")


@pytest.mark.parametrize("steps", [10**100, 10**5000, 10_000_001], ids=["1e100", "1e5000", "1e7+1"])
def test_huge_integers_are_out_of_range_not_overflow(steps):
    with pytest.raises(ConfigError) as info:
        CustomPPOConfig(steps=steps)
    assert info.value.field == "steps" and info.value.allowed == "must be >= 1 and <= 10000000"
    assert len(str(info.value)) < 300


@pytest.mark.parametrize("name", ["learning_rate", "shaping_baseline", "score_clip", "horizon"])
def test_integers_beyond_floats_range_are_refused_in_float_options(name):
    for value in (10**400, "1" + "0" * 400, "1e400"):
        with pytest.raises(ConfigError) as info:
            CustomPPOConfig.from_dict({name: parse_value(field_spec(name), value)})
        assert info.value.field == name and "finite number" in info.value.allowed


@pytest.mark.parametrize("text", ["1" + "0" * 100, "1" * 5000, "-" + "9" * 5000], ids=["101", "5000", "-5000"])
def test_huge_integer_text_is_out_of_range(text):
    with pytest.raises(ConfigError) as info:
        CustomPPOConfig.from_dict({"steps": parse_value(field_spec("steps"), text)})
    assert info.value.field == "steps" and "<= 10000000" in info.value.allowed


def test_huge_integer_in_a_file_is_a_config_error():
    with pytest.raises(ConfigError) as info:
        CustomPPOConfig.from_yaml("steps: 1" + "0" * 100)
    assert info.value.field == "steps"
    with pytest.raises(ConfigError) as info:
        CustomPPOConfig.from_yaml("steps: 1" + "0" * 5000)
    assert info.value.field == "config" and "too long" in info.value.allowed


def test_seed_within_what_set_seed_accepts():
    assert CustomPPOConfig(seed=2**32 - 1).seed == 2**32 - 1
    for cls in (CustomPPOConfig, RewardTrainingConfig):
        with pytest.raises(ConfigError, match="seed"):
            cls(seed=2**32)


@pytest.mark.parametrize("name, problem", [("LBFGS", "closure"), ("SparseAdam", "sparse"), ("Optimizer", "abstract")])
def test_optimizers_the_ppo_update_cannot_step_are_refused(name, problem):
    with pytest.raises(ConfigError) as info:
        CustomPPOConfig(optimizer_name=name)
    assert info.value.field == "optimizer_name" and problem in info.value.allowed


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("adamw", {"weight_decay": 0.1, "betas": [0.9, 0.95]}),
        ("sgd", {"momentum": 0.9, "nesterov": True}),
        ("adafactor", {"beta1": 0.9, "clip_threshold": 1.0}),
        ("RMSprop", {"alpha": 0.9}),
    ],
)
def test_optimizer_kwargs_of_the_optimizer_are_accepted(name, kwargs):
    assert CustomPPOConfig(optimizer_name=name, optimizer_kwargs=kwargs).optimizer_kwargs == kwargs


@pytest.mark.parametrize(
    "name, kwargs, problem",
    [
        ("adamw", {"momentum": 0.9}, "'momentum' is not an argument of optimizer 'adamw'; its arguments: betas"),
        ("sgd", {"betas": [0.9, 0.9]}, "'betas' is not an argument of optimizer 'sgd'"),
        ("adafactor", {"betas": [0.9, 0.9]}, "its arguments: eps, clip_threshold"),
        ("adamw", {"lr": 0.1}, "set learning_rate instead"),
        ("adamw", {"params": []}, "'params' is not an argument"),
        ("adamw", {"weight_decay": float("nan")}, "finite"),
        ("adamw", {"weight_decay": {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": 1}}}}}}}}}, "nest"),
        ("adamw", {"weight_decay": list(range(2000))}, "at most 1,000 values"),
        ("adamw", {"weight_decay": 10**30}, "integers in it"),
        ("adamw", {"weight_decay": {1: 2}}, "keys must be strings"),
        ("adamw", {"weight_decay": object()}, "values must be JSON"),
    ],
)
def test_optimizer_kwargs_are_refused_naming_what_is_allowed(name, kwargs, problem):
    with pytest.raises(ConfigError) as info:
        CustomPPOConfig(optimizer_name=name, optimizer_kwargs=kwargs)
    assert info.value.field == "optimizer_kwargs" and problem in info.value.allowed


@pytest.mark.parametrize(
    "scheduler, kwargs, ok",
    [
        ("polynomial", {"power": 2.0, "lr_end": 1e-8}, True),
        ("cosine", {"num_cycles": 0.5}, True),
        ("inverse_sqrt", {"timescale": 10}, True),
        ("constant", {"power": 2.0}, False),
        ("constant_with_warmup", {"num_cycles": 1}, False),
        ("linear", {"power": 2.0}, False),
        ("polynomial", {"last_epoch": 3}, False),
        ("cosine", {"num_warmup_steps": 3}, False),
    ],
)
def test_scheduler_kwargs_are_what_get_scheduler_passes_on(scheduler, kwargs, ok):
    if ok:
        assert CustomPPOConfig(scheduler_name=scheduler, scheduler_kwargs=kwargs).scheduler_kwargs == kwargs
        return
    with pytest.raises(ConfigError) as info:
        CustomPPOConfig(scheduler_name=scheduler, scheduler_kwargs=kwargs)
    assert info.value.field == "scheduler_kwargs" and f"scheduler {scheduler!r}" in info.value.allowed


def test_messages_quote_at_most_about_200_characters_of_a_value():
    huge = "x" * 10_000_000
    with pytest.raises(ConfigError) as info:
        CustomPPOConfig(output_dir=huge)
    assert info.value.value is huge  # kept whole for the caller
    assert len(str(info.value)) < 400 and "(10,000,002 characters)" in str(info.value)
    with pytest.raises(ConfigError) as info:
        CustomPPOConfig.from_dict({huge: 1})
    assert len(str(info.value)) < 3000  # the name is cut; the list of known options stays
    assert len(str(ConfigError("steps", list(range(10**6)), "bad"))) < 400


def test_text_options_are_bounded_and_free_of_nul():
    with pytest.raises(ConfigError, match="at most 10,000 characters"):
        CustomPPOConfig(shaping_baseline_text="y" * 10_001)
    with pytest.raises(ConfigError, match="NUL"):
        CustomPPOConfig(output_dir="out\x00put")


def test_billion_laughs_is_refused_fast_with_a_short_message():
    import time

    assert len(BILLION_LAUGHS) < 600
    start = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        CustomPPOConfig.from_yaml(BILLION_LAUGHS)
    assert time.perf_counter() - start < 1.0
    assert info.value.field == "config" and "anchors and aliases" in info.value.allowed
    assert len(str(info.value)) < 500


@pytest.mark.parametrize(
    "text, problem",
    [
        ("0", "not a number"),
        ("false", "not a boolean"),
        ("[]", "not a list"),
        ("- steps: 3", "not a list"),
        ("just text", "not a string"),
        ("steps: 3\n---\nsteps: 4", "one YAML document"),
        ("a: " + "[" * 30 + "]" * 30, "at most 20 levels"),
        ("[" * 100_000, "at most 20 levels"),
        ("x: 2024-13-45", "valid YAML"),
        ("!!python/object/apply:os.system ['true']", "valid YAML"),
        ("# x\n" * 300_000, "at most 1,000,000 characters"),
    ],
)
def test_yaml_that_is_not_one_small_mapping_is_refused(text, problem):
    with pytest.raises(ConfigError) as info:
        CustomPPOConfig.from_yaml(text)
    assert info.value.field == "config" and problem in info.value.allowed
    assert "\n" not in info.value.allowed


@pytest.mark.parametrize("text", ["", "# only a comment\n", "null", "~", "---\n"])
def test_an_empty_yaml_document_means_every_default(text):
    assert CustomPPOConfig.from_yaml(text) == CustomPPOConfig()


@pytest.mark.parametrize(
    "text, problem",
    [("0", "not a number"), ("false", "not a boolean"), ("[]", "not a list"), ('"x"', "not a string"), ("{", "JSON")],
)
def test_json_that_is_not_a_mapping_is_refused(text, problem):
    with pytest.raises(ConfigError) as info:
        CustomPPOConfig.from_json(text)
    assert info.value.field == "config" and problem in info.value.allowed
    with pytest.raises(ConfigError, match="at most 20 levels"):
        CustomPPOConfig.from_json("[" * 200_000 + "]" * 200_000)


def test_parse_config_text_is_the_one_safe_parser():
    from tnd_core.config import parse_config_text

    assert parse_config_text("steps: 3") == {"steps": 3}
    assert parse_config_text(b'{"steps": 3}', "json") == {"steps": 3}
    assert parse_config_text("\ufeffsteps: 3".encode()) == {"steps": 3}
    for bad, problem in ((b"steps: \xff", "UTF-8"), (3, "YAML text")):
        with pytest.raises(ConfigError) as info:
            parse_config_text(bad)
        assert info.value.field == "config" and problem in info.value.allowed
    with pytest.raises(ConfigError, match="'yaml' or 'json'"):
        parse_config_text("steps: 3", "toml")


def test_non_utf8_and_oversized_files_are_refused(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("output_dir: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError) as info:
        CustomPPOConfig.load(path)
    assert info.value.field == "config" and "UTF-8" in info.value.allowed
    big = tmp_path / "big.json"
    big.write_text(" " * 1_000_001 + "{}")
    with pytest.raises(ConfigError, match="at most 1,000,000"):
        CustomPPOConfig.load(big)
    with pytest.raises(ConfigError, match="no such file"):
        RewardTrainingConfig.load(tmp_path)


def test_positional_arguments_and_non_string_keys_are_config_errors():
    for cls in (CustomPPOConfig, RewardTrainingConfig):
        with pytest.raises(ConfigError) as info:
            cls(100)
        assert info.value.field == "config" and "keyword arguments only" in info.value.allowed
        with pytest.raises(ConfigError) as info:
            cls.from_dict({1: 2})
        assert info.value.field == "config" and "must be strings" in info.value.allowed
        for not_a_dict in ([("steps", 3)], "steps: 3", None, 0):
            with pytest.raises(ConfigError) as info:
                cls.from_dict(not_a_dict)
            assert info.value.field == "config"
