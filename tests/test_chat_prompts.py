"""Chat-format prompt rows (lists of {role, content}) in files: kept as messages by load_prompts, rendered
with the student's chat template by the trainer, and shown rendered in the Data tab's preview."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from families import CHAT_TEMPLATE, make_tokenizer

from tnd_core.data.prompts import is_chat, load_prompts, render_prompts
from tnd_core.errors import ConfigError

CHATS = [
    [{"role": "system", "content": "be kind"}, {"role": "user", "content": "the dog"}],
    [{"role": "user", "content": "where is the cat ?"}],
]


@pytest.fixture
def chat_file(tmp_path):
    path = tmp_path / "chats.jsonl"
    path.write_text("".join(json.dumps({"prompt": c, "id": i}) + "\n" for i, c in enumerate(CHATS)))
    return path


def test_load_prompts_keeps_chat_rows_as_messages_and_the_template_renders_them(chat_file):
    prompts = load_prompts(str(chat_file))
    assert prompts == CHATS and all(is_chat(p) for p in prompts)
    tok = make_tokenizer("qwen2")
    tok.chat_template = CHAT_TEMPLATE
    rendered = render_prompts(prompts + ["plain text"], tok, "prompt")
    assert rendered[0] == "<|im_start|>system\nbe kind<|im_end|>\n<|im_start|>user\nthe dog<|im_end|>\n" + (
        "<|im_start|>assistant\n"
    )
    assert rendered[2] == "plain text"
    with pytest.raises(ConfigError) as err:
        render_prompts(prompts, make_tokenizer("qwen2"), "messages")
    assert err.value.field == "prompt_column" and err.value.value == "messages" and "chat template" in str(err.value)


def test_the_data_tab_preview_shows_the_rendered_chat_prompt(chat_file):
    from app.context import AppContext, BundleManager, LoadedModels
    from app.data_tab import NOT_LOADED, RENDERED, preview
    from app.runner import Runner

    ctx = AppContext(runner=Runner(run_function=lambda *a, **k: {}), bundle=BundleManager())
    names, rows, count, column = preview(ctx, str(chat_file), None)
    assert (names, count, column) == (["prompt", "id"], 2, "prompt")
    assert list(rows.columns) == ["prompt", RENDERED, "id"] and rows[RENDERED].tolist() == [NOT_LOADED] * 2
    assert json.loads(rows["prompt"][1]) == CHATS[1]

    tok = make_tokenizer("qwen2")
    tok.chat_template = CHAT_TEMPLATE
    ctx.models = LoadedModels(student=SimpleNamespace(tokenizer=tok))
    _, rows, _, _ = preview(ctx, str(chat_file), "prompt")
    assert rows[RENDERED][1] == "<|im_start|>user\nwhere is the cat ?<|im_end|>\n<|im_start|>assistant\n"

    ctx.models = LoadedModels(student=SimpleNamespace(tokenizer=make_tokenizer("qwen2")))
    _, rows, _, _ = preview(ctx, str(chat_file), "prompt")
    assert all(cell.startswith("❌") and "chat template" in cell for cell in rows[RENDERED])
