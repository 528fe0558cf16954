"""The Models tab's presets (tnd_core/models/presets.py) against look-alikes of each family built locally:
same architecture class and tokenizer class as the hub models, tiny sizes. Nothing reaches the Hub
(HF_HUB_OFFLINE=1): the memory suggestions come from the architecture fields the presets keep."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from families import make_tokenizer, save_model
from tnd_tiny import one_torch_thread  # noqa: F401

from tnd_core.config import CustomPPOConfig
from tnd_core.models.presets import MEMORY_OPTIONS, PRESETS, preset_by_name, suggest_memory_options

# the tokenizer class each hub model ships, by architecture (SmolLM2's Llama uses GPT-2's tokenizer class)
TOKENIZER_KIND = {"gpt2": "gpt2", "llama": "llama", "qwen2": "qwen2", "distilbert": "distilbert"}
TINY = {
    "gpt2": {"n_embd": 32, "n_layer": 1, "n_head": 2, "n_positions": 128},
    "llama": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2},
    "qwen2": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2},
    "distilbert": {"dim": 32, "hidden_dim": 64, "n_layers": 1, "n_heads": 2},
}
PUBLISHED_PARAMETERS = {  # from the models' cards, in millions
    "gpt2": 124,
    "distilgpt2": 82,
    "lvwerra/distilbert-imdb": 67,
    "HuggingFaceTB/SmolLM2-360M": 362,
    "HuggingFaceTB/SmolLM2-135M": 135,
    "Qwen/Qwen2.5-1.5B": 1544,
    "Qwen/Qwen2.5-0.5B": 494,
}


def _look_alike(preset, role: str, root: Path) -> Path:
    """The preset's `role` model shrunk: its own config fields with tiny sizes, the tokenizer class it ships."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    fields = dict(preset.shapes[role])
    model_type = fields.pop("model_type")
    tok = make_tokenizer(TOKENIZER_KIND[model_type])
    fields.update(TINY[model_type], vocab_size=len(tok))
    if model_type in ("llama", "qwen2"):
        fields.update(num_key_value_heads=1, max_position_embeddings=128, dtype="float32")
    if tok.eos_token_id is not None and model_type != "distilbert":
        fields.update(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    config = AutoConfig.for_model(model_type, **fields)
    auto = AutoModelForSequenceClassification if role == "reward_model" else AutoModelForCausalLM
    torch.manual_seed(len(role))
    hub_id = getattr(preset, role)
    return save_model(root / hub_id, auto.from_config(config), tok)


def test_presets_fill_every_model_option_and_validate():
    from tnd_core.config import field_specs

    model_options = {s.name for s in field_specs() if s.group == "models"}
    for preset in PRESETS:
        assert set(preset.sources()) == model_options
        CustomPPOConfig(**preset.sources(), dataset_name_or_path=preset.dataset, prompt_column=preset.prompt_column)
        assert preset_by_name(preset.name) is preset
    with pytest.raises(KeyError, match="the presets are"):
        preset_by_name("nope")


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.student)
def test_preset_architectures_have_the_published_sizes(preset):
    from tnd_core.models.memory_plan import model_shape

    for role in ("teacher", "student", "reward_model"):
        shape = model_shape(preset.model_config(role), "classifier" if role == "reward_model" else "causal_lm")
        published = PUBLISHED_PARAMETERS[getattr(preset, role)]
        assert abs(shape.parameters / 1e6 - published) / published < 0.02, (role, shape.parameters)


def test_memory_suggestions_follow_the_devices_memory():
    qwen = preset_by_name("Qwen2.5-1.5B -> Qwen2.5-0.5B, IMDB sentiment")
    roomy, roomy_plan = suggest_memory_options(qwen, CustomPPOConfig(), device="cuda", available_gb=80)
    assert roomy == MEMORY_OPTIONS and roomy_plan.fits
    tight, tight_plan = suggest_memory_options(qwen, CustomPPOConfig(), device="cuda", available_gb=7)
    assert tight["use_lora"] is True and tight_plan.fits and tight_plan.total_gb < roomy_plan.total_gb
    CustomPPOConfig(**qwen.sources(), **tight)  # the suggestion is a valid config


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.student)
def test_a_look_alike_of_each_preset_loads_and_trains_a_step(preset, tmp_path):
    from tnd_core.pipeline import build_trainer

    folders = {role: _look_alike(preset, role, tmp_path / "hub") for role in ("teacher", "student", "reward_model")}
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({preset.prompt_column: t}) + "\n" for t in ["the dog", "a cat", "we run"]))
    # the options a small device gets (LoRA for the Qwen pair), so that they are trained too
    memory, _ = suggest_memory_options(preset, CustomPPOConfig(), device="cuda", available_gb=7)
    sources = {f"{role}_name_or_path": str(folder) for role, folder in folders.items()}
    config = CustomPPOConfig(
        **{**preset.sources(), **sources}, **memory, dataset_name_or_path=str(prompts),
        prompt_column=preset.prompt_column, steps=1, batch_size=2, mini_batch_size=2, ppo_epochs=1,
        max_new_tokens=4, memory_check="off", output_dir=str(tmp_path / "run"),
    )  # fmt: skip
    trainer = build_trainer(config)
    assert type(trainer.reward_model.model).__name__ == "DistilBertForSequenceClassification"
    assert trainer.reward_model.negative is not None  # the two-class sentiment head scores log-odds
    result = trainer.train()
    assert result["step"] == 1 and result["last_checkpoint"]


def test_the_models_tab_applies_a_preset_with_the_devices_suggestion():
    from app.context import AppContext, BundleManager
    from app.models_tab import apply_preset
    from app.runner import Runner

    ctx = AppContext(runner=Runner(run_function=lambda *a, **k: {}), bundle=BundleManager())
    values, note = apply_preset(ctx, PRESETS[0].name)
    assert values["teacher_name_or_path"] == "gpt2" and values["student_name_or_path"] == "distilgpt2"
    assert set(MEMORY_OPTIONS) <= set(values) and "Memory plan on" in note and "`imdb`" in note
