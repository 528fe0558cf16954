"""The memory plan: sane numbers (parameters counted like the real model, monotone in the batch, lowered by
LoRA, checkpointing and bf16 frozen models), suggestions found by re-planning, and a run that will not fit
refused before any model loads, by the CLI and the Python API."""

from __future__ import annotations

import logging

import pytest
from tnd_tiny import make_classifier, make_lm, make_tokenizer
from transformers import GPT2Config, LlamaConfig

from tnd_core.config import CustomPPOConfig
from tnd_core.models.memory_plan import GB, MemoryPlanError, model_shape, plan_memory

STUDENT = GPT2Config(n_embd=256, n_layer=4, n_head=4, vocab_size=5000, n_positions=1024)
TEACHER = GPT2Config(n_embd=512, n_layer=6, n_head=8, vocab_size=5000, n_positions=1024)
REWARD = GPT2Config(n_embd=256, n_layer=2, n_head=4, vocab_size=5000, n_positions=1024, num_labels=1)
BASE = dict(batch_size=16, mini_batch_size=4, max_prompt_length=64, max_new_tokens=64)
# Runs far beyond any machine's memory: 4096 sequences of 4160 tokens in one mini-batch.
TOO_BIG = ["--batch_size", "4096", "--mini_batch_size", "4096", "--max_new_tokens", "4096", "--steps", "1"]


def plan(available_gb=1000.0, **options):
    config = CustomPPOConfig(**{**BASE, **options})
    return plan_memory(config, STUDENT, TEACHER, REWARD, "cpu", available_gb=available_gb)


def test_parameters_are_counted_like_the_loaded_model():
    tok = make_tokenizer()
    for model, kind in ((make_lm(tok, n_embd=64), "causal_lm"), (make_classifier(tok), "classifier")):
        assert model_shape(model.config, kind).parameters == sum(p.numel() for p in model.parameters())
    llama = LlamaConfig(
        hidden_size=64, intermediate_size=172, num_hidden_layers=2, num_attention_heads=4, vocab_size=99
    )
    shape = model_shape(llama)
    assert shape.gated_mlp and shape.mlp == 172 and shape.layers == 2


def test_the_rows_are_what_the_options_say():
    full = plan(kl_reference="initial_student", optimizer_name="adamw")
    student_gb = full.rows["student parameters"]
    assert student_gb > 0
    assert full.rows["gradients"] == pytest.approx(student_gb)
    assert full.rows["optimizer states"] == pytest.approx(2 * student_gb)
    assert full.rows["reference copy"] == pytest.approx(student_gb, rel=1e-3)
    assert plan(optimizer_name="sgd").rows["optimizer states"] == 0
    assert plan(optimizer_name="sgd", optimizer_kwargs={"momentum": 0.9}).rows["optimizer states"] == pytest.approx(
        student_gb
    )
    assert plan(kl_reference="teacher").rows["reference copy"] == 0
    plain_ppo = plan(kl_reference="initial_student", distill_coef=0.0, use_teacher_demos=False)
    assert plain_ppo.rows["teacher"] == 0, "a run that never uses the teacher does not load it"


def test_the_plan_grows_with_the_batch_and_the_lengths():
    totals = [plan(batch_size=b, mini_batch_size=b).total_gb for b in (4, 8, 16, 32)]
    assert totals == sorted(totals) and totals[0] < totals[-1]
    updates = [plan(mini_batch_size=m).phases["update"] for m in (1, 2, 4)]
    assert updates == sorted(updates) and updates[0] < updates[-1]
    lengths = [plan(max_new_tokens=n).total_gb for n in (16, 64, 256)]
    assert lengths == sorted(lengths) and lengths[0] < lengths[-1]


def test_lora_lowers_gradients_and_optimizer_states_and_drops_the_reference_copy():
    full, lora = plan(kl_reference="initial_student"), plan(kl_reference="initial_student", use_lora=True)
    assert lora.rows["student parameters"] == full.rows["student parameters"]
    assert lora.rows["gradients"] < full.rows["gradients"] / 20
    assert lora.rows["optimizer states"] < full.rows["optimizer states"] / 20
    assert lora.rows["reference copy"] == 0 < full.rows["reference copy"]
    # r * (in + out) for GPT-2's c_attn (256 -> 768) in each of 4 layers, plus the value head
    assert lora.rows["gradients"] * GB / 4 == pytest.approx(4 * 16 * (256 + 768) + 257)


def test_checkpointing_lowers_the_activations_and_bf16_halves_the_frozen_models():
    assert plan(gradient_checkpointing=True).phases["update"] < plan().phases["update"]
    bf16 = plan(frozen_dtype="bfloat16")
    assert bf16.rows["teacher"] == pytest.approx(plan().rows["teacher"] / 2)
    assert bf16.rows["reward model"] == pytest.approx(plan().rows["reward model"] / 2)


def test_suggestions_are_the_plans_with_each_option_and_say_what_fits():
    roomy = plan()
    assert roomy.fits and roomy.suggestions == []
    config = CustomPPOConfig(**{**BASE, "batch_size": 64, "mini_batch_size": 64})
    needed = plan_memory(config, STUDENT, TEACHER, REWARD, "cpu", available_gb=1000).total_gb
    tight = plan_memory(config, STUDENT, TEACHER, REWARD, "cpu", available_gb=needed * 0.8)
    assert not tight.fits and tight.suggestions
    for suggestion in tight.suggestions:
        again = plan_memory(config.replace(**suggestion.changes), STUDENT, TEACHER, REWARD, "cpu", available_gb=1000)
        assert suggestion.total_gb == pytest.approx(again.total_gb)
        assert suggestion.fits == (again.total_gb <= needed * 0.8)
        assert suggestion.total_gb < needed
    assert tight.suggestions[0].fits, "the mini-batch or checkpointing alone brings this one under the limit"
    named = {name for s in tight.suggestions for name in s.changes}
    assert {"use_lora", "gradient_checkpointing", "mini_batch_size", "frozen_dtype"} <= named
    text = str(MemoryPlanError(tight))
    assert "| **total** |" in text and "gradient_checkpointing=True" in text and "memory_check=warn" in text


def test_the_device_memory_is_read_when_not_given():
    measured = plan_memory(CustomPPOConfig(**BASE), STUDENT, None, None, "cpu")
    assert 0 < measured.available_gb < 1e5
    assert "free on cpu" in measured.table()


# ---------------------------------------------------------------------- before a run starts
def test_the_cli_refuses_a_run_that_will_not_fit_with_the_plan(tiny_bundle, tmp_path, capsys):
    from tnd_core.cli import main

    code = main(["train", "--output_dir", str(tmp_path / "run"), *TOO_BIG])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("tnd train: error: memory_check:") and "| **total** |" in err
    assert "Options that lower it:" in err and "mini_batch_size=" in err
    assert not list((tmp_path / "run").glob("checkpoint-*"))


def test_the_python_api_refuses_it_and_warn_lets_it_through(tiny_bundle, tmp_path, caplog):
    from tnd_core import pipeline

    config = CustomPPOConfig(batch_size=4096, mini_batch_size=4096, max_new_tokens=4096, output_dir=str(tmp_path))
    with pytest.raises(MemoryPlanError) as caught:
        pipeline.build_trainer(config)
    assert not caught.value.plan.fits and caught.value.plan.suggestions
    with caplog.at_level(logging.WARNING, logger="tnd_core.pipeline"):
        warned = pipeline.check_memory(config.replace(memory_check="warn"))
    assert not warned.fits and any("memory_check" in r.getMessage() for r in caplog.records)
    assert pipeline.check_memory(config.replace(memory_check="off")) is None


def test_a_run_that_fits_passes_and_the_app_can_plan_without_fetching(tiny_bundle, tmp_path):
    from tnd_core import pipeline

    config = CustomPPOConfig(output_dir=str(tmp_path))
    assert pipeline.check_memory(config).fits
    assert pipeline.plan_without_fetching(config, bundle_ready=False) is None
    assert pipeline.plan_without_fetching(config, bundle_ready=True).fits
    elsewhere = config.replace(student_name_or_path="someone/not-downloaded")
    assert pipeline.plan_without_fetching(elsewhere, bundle_ready=True) is None
