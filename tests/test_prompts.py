"""Prompt datasets: bundle, local CSV/JSONL/JSON/TXT, dataset folders; previews; user-facing errors."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tnd_core.data import prompts as prompts_module
from tnd_core.data.prompts import load_prompts, preview_table, read_table
from tnd_core.errors import ConfigError, TndError


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_csv_jsonl_json_and_txt_give_the_same_prompts(tmp_path):
    texts = ["the dog", "where are", 'a, quoted "one"']
    pd.DataFrame({"id": [1, 2, 3], "question": texts}).to_csv(tmp_path / "p.csv", index=False)
    _jsonl(tmp_path / "p.jsonl", [{"question": t, "n": i} for i, t in enumerate(texts)])
    (tmp_path / "p.json").write_text(json.dumps([{"question": t} for t in texts]))
    (tmp_path / "p.txt").write_text("\n".join(texts) + "\n\n")
    for name in ("p.csv", "p.jsonl", "p.json"):
        assert load_prompts(str(tmp_path / name), "question") == texts
    assert load_prompts(str(tmp_path / "p.txt")) == texts


def test_empty_cells_are_skipped_and_non_text_values_become_text(tmp_path):
    _jsonl(
        tmp_path / "p.jsonl", [{"prompt": "the cat"}, {"prompt": ""}, {"prompt": None}, {"prompt": 7}, {"other": "x"}]
    )
    assert load_prompts(str(tmp_path / "p.jsonl")) == ["the cat", "7"]


def test_missing_column_names_the_column_and_lists_the_ones_present(tmp_path):
    pd.DataFrame({"text": ["a"], "label": [1]}).to_csv(tmp_path / "p.csv", index=False)
    with pytest.raises(ConfigError) as info:
        load_prompts(str(tmp_path / "p.csv"), "prompt")
    assert info.value.field == "prompt_column"
    assert "'prompt'" in str(info.value) and "text, label" in str(info.value)


def test_malformed_jsonl_line_is_reported_with_its_number(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "ok"}\n\n{"prompt": "broken"\n')
    with pytest.raises(TndError, match=r"line 3 is not valid JSON"):
        read_table(path)
    path.write_text('{"prompt": "ok"}\n["a list"]\n')
    with pytest.raises(TndError, match=r"line 2 must be a JSON object"):
        read_table(path)


def test_missing_file_unknown_type_and_empty_column_are_user_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_prompts(str(tmp_path / "nope.csv"))
    (tmp_path / "p.parquet").write_text("x")
    with pytest.raises(ConfigError, match="file type"):
        read_table(tmp_path / "p.parquet")
    pd.DataFrame({"prompt": ["", "  "]}).to_csv(tmp_path / "empty.csv", index=False)
    with pytest.raises(TndError, match="no non-empty text"):
        load_prompts(str(tmp_path / "empty.csv"))
    with pytest.raises(ConfigError, match="dataset_name_or_path"):
        load_prompts("  ")


def test_files_over_the_size_limit_are_refused(tmp_path, monkeypatch):
    path = tmp_path / "big.txt"
    path.write_text("the dog\n" * 100)
    monkeypatch.setattr(prompts_module, "MAX_TABLE_BYTES", 100)
    with pytest.raises(TndError, match="MiB are accepted"):
        load_prompts(str(path))


def test_preview_reads_only_the_first_rows(tmp_path):
    _jsonl(tmp_path / "p.jsonl", [{"prompt": f"p{i}", "score": i} for i in range(50)] + [])
    with (tmp_path / "p.jsonl").open("a") as f:
        f.write("not json at line 51\n")
    table = preview_table(tmp_path / "p.jsonl", 5)
    assert list(table.columns) == ["prompt", "score"]
    assert table["prompt"].tolist() == [f"p{i}" for i in range(5)]
    pd.DataFrame({"q": range(30)}).to_csv(tmp_path / "p.csv", index=False)
    assert len(preview_table(tmp_path / "p.csv", 7)) == 7


def test_a_dataset_folder_goes_through_datasets_load_dataset(tmp_path):
    folder = tmp_path / "my_dataset"
    folder.mkdir()
    pd.DataFrame({"prompt": ["the dog", "is the"]}).to_csv(folder / "train.csv", index=False)
    assert load_prompts(str(folder)) == ["the dog", "is the"]
    with pytest.raises(ConfigError, match="not a column"):
        load_prompts(str(folder), "question")


def test_unreachable_hub_dataset_is_a_user_error():
    with pytest.raises(TndError, match="could not load dataset"):
        load_prompts("someone/no-such-dataset-xyz")


def test_bundle_prompts_are_short_prefixes(tiny_bundle):
    prompts = load_prompts(tiny_bundle.prompts)
    assert len(prompts) >= 100 and len(set(prompts)) == len(prompts)
    assert all(1 <= len(p.split()) <= 3 for p in prompts)
