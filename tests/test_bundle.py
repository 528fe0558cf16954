"""The embedded bundle: what the tiny build contains and measures, reuse and rebuild, user-facing errors."""

from __future__ import annotations

import errno
import json
import shutil

import pytest

from tnd_core.bundle import BUNDLE_VERSION, SIZES, BundleError, BundlePaths, build_bundle, ensure_bundle, resolve_size
from tnd_core.bundle import build as bundle_build
from tnd_core.bundle.progress import BuildProgress
from tnd_core.cache import cache_root
from tnd_core.cli import main as tnd_main
from tnd_core.config import CustomPPOConfig
from tnd_core.data.recognizer import is_grammatical
from tnd_core.errors import ConfigError


def _jsonl(path, column):
    return [json.loads(line)[column] for line in path.read_text().splitlines()]


# ---------------------------------------------------------------------- the real tiny build
def test_tiny_bundle_has_every_part_loadable_with_from_pretrained(tiny_bundle):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_bundle.tokenizer)
    assert len({tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id, tokenizer.unk_token_id}) == 4
    teacher = AutoModelForCausalLM.from_pretrained(tiny_bundle.teacher)
    student = AutoModelForCausalLM.from_pretrained(tiny_bundle.student)
    assert AutoTokenizer.from_pretrained(tiny_bundle.student).get_vocab() == tokenizer.get_vocab()
    assert student.config.n_embd <= teacher.config.n_embd and student.config.n_layer <= teacher.config.n_layer
    assert student.config.vocab_size == teacher.config.vocab_size == len(tokenizer)
    for folder in (tiny_bundle.reward_stage, tiny_bundle.reward_grammar):
        assert AutoConfig.from_pretrained(folder).num_labels == 1
        AutoModelForSequenceClassification.from_pretrained(folder)
    assert AutoConfig.from_pretrained(tiny_bundle.reward_stage).model_type == "bert"
    checkpoints = sorted(p.name for p in tiny_bundle.teacher_checkpoints.iterdir())
    assert checkpoints[:4] == ["step-000001", "step-000002", "step-000004", "step-000008"]


def test_tiny_bundle_manifest_records_version_timings_and_measured_quality(tiny_bundle):
    info = tiny_bundle.info()
    assert info["version"] == BUNDLE_VERSION and info["size"] == "tiny"
    assert info["build_seconds"] > 0 and set(info["stage_seconds"]) >= {"teacher", "reward_stage", "reward_grammar"}
    metrics = info["metrics"]
    assert metrics["teacher_grammaticality"] >= 0.7
    assert metrics["student_grammaticality"] < 0.1
    assert metrics["reward_stage_pearson"] > 0.5
    assert metrics["reward_grammar_accuracy"] > 0.7
    assert info["teacher_checkpoints"][-1] == SIZES["tiny"].teacher_steps


def test_held_out_sentences_are_grammatical_and_not_in_the_corpus_and_prompts_are_prefixes(tiny_bundle):
    corpus = set(tiny_bundle.corpus.read_text().splitlines())
    eval_texts = _jsonl(tiny_bundle.eval, "text")
    assert len(eval_texts) == SIZES["tiny"].eval_sentences == len(set(eval_texts))
    assert not corpus & set(eval_texts)
    assert all(is_grammatical(s) for s in eval_texts)
    for text, prompt in zip(eval_texts, _jsonl(tiny_bundle.eval, "prompt")):
        assert text.startswith(prompt + " ")
    prompts = _jsonl(tiny_bundle.prompts, "prompt")
    assert all(1 <= len(p.split()) <= 3 and not is_grammatical(p) for p in prompts)


def test_recommended_config_points_at_the_bundle_and_validates(tiny_bundle):
    config = CustomPPOConfig.load(tiny_bundle.config)
    assert config.teacher_name_or_path == config.student_name_or_path == config.dataset_name_or_path == "bundle"
    assert config.eval_steps > 0 and config.use_teacher_demos and config.distill_coef > 0


def test_stage_reward_prefers_teacher_text_to_early_checkpoint_text(tiny_bundle):
    from transformers import AutoModelForCausalLM

    from tnd_core.evaluation import sample_texts
    from tnd_core.models import RewardModel

    reward = RewardModel.from_pretrained(tiny_bundle.reward_stage)
    tokenizer = reward.tokenizer
    early = AutoModelForCausalLM.from_pretrained(tiny_bundle.teacher_checkpoints / "step-000004")
    teacher = AutoModelForCausalLM.from_pretrained(tiny_bundle.teacher)
    early_scores = reward.score_texts(sample_texts(early, None, tokenizer, n=40, seed=1))
    teacher_scores = reward.score_texts(sample_texts(teacher, None, tokenizer, n=40, seed=1))
    assert teacher_scores.mean() > early_scores.mean() + 1.0


def test_ensure_bundle_reuses_a_current_bundle(tiny_bundle):
    before = tiny_bundle.manifest.stat().st_mtime_ns
    again = ensure_bundle("tiny", tiny_bundle.root.parent)
    assert again == tiny_bundle and tiny_bundle.manifest.stat().st_mtime_ns == before


def test_cli_bundle_reports_the_ready_bundle(tiny_bundle, capsys):
    assert tnd_main(["bundle", "--size", "tiny", "--cache_dir", str(tiny_bundle.root.parent)]) == 0
    assert str(tiny_bundle.root) in capsys.readouterr().out


# ---------------------------------------------------------------------- cache logic (recipe replaced by a quick one)
@pytest.fixture
def quick_recipe(monkeypatch):
    """Replace the minutes-long recipe with one that writes a manifest, to test caching and safety."""
    calls = []

    def build_into(paths, size, spec, progress):
        calls.append(paths.root)
        paths.corpus.write_text("the dog runs .\n")
        paths.manifest.write_text(json.dumps({"version": BUNDLE_VERSION, "size": size, "build": len(calls)}))
        progress.stage(0.0, 1.0, "quick")
        progress.close()

    monkeypatch.setattr(bundle_build, "build_into", build_into)
    return calls


def test_builds_once_then_reuses_and_rebuilds_on_force_or_version_change(quick_recipe, tmp_path):
    first = ensure_bundle("tiny", tmp_path)
    assert first.root == tmp_path / "bundle-tiny" and first.info()["build"] == 1
    assert ensure_bundle("tiny", tmp_path).info()["build"] == 1
    assert build_bundle("tiny", tmp_path, force=True).info()["build"] == 2
    first.manifest.write_text(json.dumps({"version": BUNDLE_VERSION - 1, "size": "tiny"}))
    assert ensure_bundle("tiny", tmp_path).info()["build"] == 3
    assert len(quick_recipe) == 3
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["bundle-tiny"]  # no staging folders left


def test_a_failed_build_leaves_the_previous_bundle_untouched(quick_recipe, tmp_path, monkeypatch):
    good = ensure_bundle("tiny", tmp_path)

    def broken(paths, size, spec, progress):
        paths.corpus.write_text("half")
        raise RuntimeError("training diverged")

    monkeypatch.setattr(bundle_build, "build_into", broken)
    with pytest.raises(RuntimeError):
        build_bundle("tiny", tmp_path, force=True)
    assert good.corpus.read_text() == "the dog runs .\n" and good.info()["build"] == 1
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == ["bundle-tiny"]


def test_progress_callback_goes_from_zero_to_one(quick_recipe, tmp_path):
    seen = []
    ensure_bundle("tiny", tmp_path, progress=lambda fraction, message: seen.append((fraction, message)))
    fractions = [f for f, _ in seen]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0 and fractions == sorted(fractions)
    assert all(m == "quick" for _, m in seen)


def test_progress_maps_each_stage_onto_its_slice():
    seen = []
    progress = BuildProgress(lambda f, m: seen.append((round(f, 3), m)), "test")
    progress.stage(0.2, 0.6, "teacher")
    progress.update(0.5)
    progress.update(2.0)
    assert seen == [(0.2, "teacher"), (0.4, "teacher"), (0.6, "teacher")]
    progress.bar.close()


def test_unwritable_cache_folder_is_a_clear_error(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(BundleError, match="cannot write the bundle") as info:
        build_bundle("tiny", blocker / "cache")
    assert "TND_CACHE_DIR" in str(info.value)


def test_full_disk_is_a_clear_error_before_and_during_the_build(quick_recipe, tmp_path, monkeypatch):
    real_usage = shutil.disk_usage
    monkeypatch.setattr(bundle_build.shutil, "disk_usage", lambda path: real_usage(path)._replace(free=1024))
    with pytest.raises(BundleError, match="not enough disk space"):
        build_bundle("tiny", tmp_path)
    monkeypatch.setattr(bundle_build.shutil, "disk_usage", real_usage)

    def disk_fills_up(paths, size, spec, progress):
        raise OSError(errno.ENOSPC, "No space left on device", str(paths.teacher))

    monkeypatch.setattr(bundle_build, "build_into", disk_fills_up)
    with pytest.raises(BundleError, match="not enough disk space"):
        build_bundle("tiny", tmp_path)
    assert not (tmp_path / "bundle-tiny").exists()


def test_cli_turns_bundle_errors_into_a_message(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert tnd_main(["bundle", "--size", "tiny", "--cache_dir", str(blocker / "cache")]) == 2
    assert "cannot write the bundle" in capsys.readouterr().err


def test_size_and_cache_root_come_from_arguments_then_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("TND_BUNDLE_SIZE", raising=False)
    monkeypatch.delenv("TND_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_size() == "default"
    assert cache_root() == tmp_path / ".cache" / "tnd_studio"
    monkeypatch.setenv("TND_BUNDLE_SIZE", "tiny")
    monkeypatch.setenv("TND_CACHE_DIR", str(tmp_path / "c"))
    assert resolve_size() == "tiny" and resolve_size("default") == "default"
    assert cache_root() == tmp_path / "c" and cache_root(tmp_path / "d") == tmp_path / "d"
    monkeypatch.setenv("TND_BUNDLE_SIZE", "huge")
    with pytest.raises(ConfigError, match="TND_BUNDLE_SIZE"):
        resolve_size()
    with pytest.raises(ConfigError, match="size"):
        ensure_bundle("medium", tmp_path)


def test_bundle_paths_layout(tmp_path):
    paths = BundlePaths.under(tmp_path)
    assert (
        paths.config.name == "config.yaml" and paths.prompts.suffix == ".jsonl" and paths.manifest.name == "bundle.json"
    )
