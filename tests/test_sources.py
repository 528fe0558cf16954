"""Config sources: what counts as the bundle, how each source resolves, and that loaders never resolve it."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from tnd_tiny import make_classifier, make_lm

from tnd_core import sources
from tnd_core.bundle import BundlePaths
from tnd_core.config import CustomPPOConfig, add_config_arguments
from tnd_core.errors import ConfigError, TndError
from tnd_core.sources import ModelSource, is_bundle, resolve_sources, resolve_tokenizer, uses_bundle

LOCAL = {
    "teacher_name_or_path": "bundled_model/",
    "student_name_or_path": "bundle_x",
    "reward_model_name_or_path": "org/bundle-reward",
    "dataset_name_or_path": "bundles.jsonl",
}


@pytest.fixture
def fake_bundle(monkeypatch, tmp_path):
    """ensure_bundle answers with a layout under tmp_path and counts its calls (nothing is built)."""
    calls = []

    def ensure_bundle():
        calls.append(1)
        return BundlePaths.under(tmp_path / "bundle-tiny")

    monkeypatch.setattr(sources, "ensure_bundle", ensure_bundle)
    return calls


@pytest.mark.parametrize("source", ["bundle", "bundle:grammar", "bundle:stage", "bundle:anything"])
def test_bundle_and_its_variants_are_the_bundle(source):
    assert is_bundle(source)


@pytest.mark.parametrize(
    "source", ["bundled_model/", "bundle_x", "bundles", "./bundle", "data/bundle", "Bundle", "", None]
)
def test_other_names_are_not_the_bundle(source):
    assert not is_bundle(source)


def test_a_path_object_is_never_the_bundle():
    assert not is_bundle(Path("bundle"))


def test_uses_bundle_looks_at_every_source():
    assert not uses_bundle(CustomPPOConfig(**LOCAL))
    for field in LOCAL:
        assert uses_bundle(CustomPPOConfig(**{**LOCAL, field: "bundle"})), field


def test_local_and_hub_sources_pass_through_without_the_bundle(fake_bundle):
    config = CustomPPOConfig(**LOCAL, prompt_column="question")
    resolved = resolve_sources(config)
    assert resolved.teacher == ModelSource("bundled_model/", "bundled_model/")
    assert resolved.student == ModelSource("bundle_x", "bundle_x")
    assert resolved.reward_model == ModelSource("org/bundle-reward", "org/bundle-reward")
    assert (resolved.prompts, resolved.prompt_column) == ("bundles.jsonl", "question")
    assert resolved.clm_corpus is None and resolved.evaluation_bundle is None
    assert fake_bundle == []


def test_bundle_sources_resolve_to_its_parts_with_its_tokenizer(fake_bundle, tmp_path):
    paths = BundlePaths.under(tmp_path / "bundle-tiny")
    resolved = resolve_sources(CustomPPOConfig(prompt_column="question"))
    assert resolved.teacher == ModelSource(paths.teacher, paths.tokenizer)
    assert resolved.student == ModelSource(paths.student, paths.tokenizer)
    assert resolved.reward_model == ModelSource(paths.reward_stage, paths.tokenizer)
    # the bundle's prompts are read through the config's column too: a wrong column fails instead of being ignored
    assert (resolved.prompts, resolved.prompt_column) == (paths.prompts, "question")
    assert resolved.clm_corpus == paths.corpus and resolved.evaluation_bundle == paths
    assert len(fake_bundle) == 1


@pytest.mark.parametrize("source, part", [("bundle:grammar", "reward_grammar"), ("bundle:stage", "reward_stage")])
def test_reward_variants_pick_the_reward_model(fake_bundle, tmp_path, source, part):
    resolved = resolve_sources(CustomPPOConfig(reward_model_name_or_path=source))
    assert resolved.reward_model.model == getattr(BundlePaths.under(tmp_path / "bundle-tiny"), part)


def test_the_evaluator_and_corpus_follow_the_student_and_the_prompts(fake_bundle):
    local_student = resolve_sources(CustomPPOConfig(student_name_or_path="my_student"))
    assert local_student.evaluation_bundle is None and local_student.clm_corpus is not None
    local_prompts = resolve_sources(CustomPPOConfig(dataset_name_or_path="p.csv"))
    assert local_prompts.evaluation_bundle is not None and local_prompts.clm_corpus is None


@pytest.mark.parametrize(
    "field, source",
    [
        ("teacher_name_or_path", "bundle:x"),
        ("student_name_or_path", "bundle:grammar"),
        ("reward_model_name_or_path", "bundle:foo"),
        ("dataset_name_or_path", "bundle:prompts"),
    ],
)
def test_unknown_variants_name_the_field_before_any_build(fake_bundle, field, source):
    with pytest.raises(ConfigError) as err:
        resolve_sources(CustomPPOConfig(**{field: source}))
    assert err.value.field == field and err.value.value == source
    assert fake_bundle == []


def test_reward_variant_error_lists_the_variants(fake_bundle):
    with pytest.raises(ConfigError, match="'bundle:stage', 'bundle:grammar'"):
        resolve_sources(CustomPPOConfig(reward_model_name_or_path="bundle:nope"))


def test_tokenizer_source_resolves_bundle_only(fake_bundle, tmp_path):
    assert resolve_tokenizer(None) is None and resolve_tokenizer("bundled_tok/") == "bundled_tok/"
    assert fake_bundle == []
    assert resolve_tokenizer("bundle") == str(BundlePaths.under(tmp_path / "bundle-tiny").tokenizer)
    with pytest.raises(ConfigError) as err:
        resolve_tokenizer("bundle:grammar")
    assert err.value.field == "tokenizer"


def test_loaders_take_bundle_as_an_ordinary_name_and_build_nothing(monkeypatch, tmp_path):
    from tnd_core.data.prompts import load_prompts
    from tnd_core.models import load_reward_model, load_student, load_teacher

    monkeypatch.setenv("TND_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    for loader in (load_teacher, load_student, load_reward_model):
        with pytest.raises(ConfigError, match="local model folder"):
            loader("bundle")
    with pytest.raises(TndError, match="could not load dataset 'bundle'"):
        load_prompts("bundle")
    assert not (tmp_path / "cache").exists()


# ---------------------------------------------------------------------- the CLI's choice of a starting config
def _train_args(*flags: str) -> argparse.Namespace:
    """Flags parsed as `tnd train` parses them."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--config")
    add_config_arguments(parser)
    return parser.parse_args(flags)


def test_cli_takes_a_local_folder_named_bundled_model_for_a_folder(monkeypatch):
    from tnd_core import cli

    def no_bundle():
        raise AssertionError("a run with a local teacher must not start from the bundle's config")

    monkeypatch.setattr(cli, "recommended_config_path", no_bundle)
    config = cli._training_config(_train_args("--teacher_name_or_path", "bundled_model/"))
    assert config.teacher_name_or_path == "bundled_model/" and config.steps == CustomPPOConfig().steps


def test_cli_starts_a_bundle_run_from_the_recommended_config(monkeypatch, tmp_path):
    from tnd_core import cli

    CustomPPOConfig(steps=7, reward_model_name_or_path="bundle:grammar").save(tmp_path / "config.yaml")
    monkeypatch.setattr(cli, "recommended_config_path", lambda: tmp_path / "config.yaml")
    config = cli._training_config(_train_args("--batch_size", "8", "--mini_batch_size", "4"))
    assert (config.steps, config.batch_size, config.reward_model_name_or_path) == (7, 8, "bundle:grammar")


# ---------------------------------------------------------------------- the pipeline hands paths to the loaders
def test_load_models_loads_all_three_models_of_a_config(tmp_path, tok):
    from tnd_core.models import RewardModel, StudentModel, TeacherModel
    from tnd_core.pipeline import load_models

    models = {"teacher": make_lm(tok, seed=5), "student": make_lm(tok, seed=1), "reward": make_classifier(tok)}
    for name, model in models.items():
        model.save_pretrained(tmp_path / name)
        tok.save_pretrained(tmp_path / name)
    config = CustomPPOConfig(
        teacher_name_or_path=str(tmp_path / "teacher"),
        student_name_or_path=str(tmp_path / "student"),
        reward_model_name_or_path=str(tmp_path / "reward"),
        dataset_name_or_path=str(tmp_path / "unused.csv"),
    )
    seen = []
    teacher, student, reward = load_models(config, progress=lambda fraction, message: seen.append(fraction))
    assert isinstance(teacher, TeacherModel) and isinstance(student, StudentModel) and isinstance(reward, RewardModel)
    assert seen == [0.0, 1 / 3, 2 / 3]


def test_bundle_config_resolves_to_the_built_tiny_bundle(tiny_bundle):
    resolved = resolve_sources(CustomPPOConfig.load(tiny_bundle.config))
    assert resolved.student == ModelSource(tiny_bundle.student, tiny_bundle.tokenizer)
    assert resolved.evaluation_bundle == tiny_bundle
