"""Prompt datasets: a local CSV / JSONL / JSON / TXT file, a dataset folder, or a hub dataset.

Every user mistake (missing file, missing column, malformed line, file too large, empty data) raises
a `ConfigError` or `TndError` whose message names the file, the line or the column.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from tnd_core.errors import ConfigError, TndError

MAX_TABLE_BYTES = 100 * 1024 * 1024
TABLE_SUFFIXES = (".csv", ".jsonl", ".json", ".txt")
TXT_COLUMN = "text"


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise ConfigError("dataset_name_or_path", str(path), "no such file")
    if path.suffix.lower() not in TABLE_SUFFIXES:
        raise ConfigError("dataset_name_or_path", str(path), f"file type must be one of {', '.join(TABLE_SUFFIXES)}")
    size = path.stat().st_size
    if size > MAX_TABLE_BYTES:
        raise TndError(f"{path} is {size / 2**20:.0f} MiB; files up to {MAX_TABLE_BYTES / 2**20:.0f} MiB are accepted")


def _read_jsonl(path: Path, limit: int | None) -> pd.DataFrame:
    rows = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TndError(f"{path}: line {number} is not valid JSON ({exc.msg}): {line.strip()[:80]!r}") from None
            if not isinstance(row, dict):
                raise TndError(
                    f'{path}: line {number} must be a JSON object like {{"prompt": "..."}}, got {type(row).__name__}'
                )
            rows.append(row)
            if limit is not None and len(rows) >= limit:
                break
    return pd.DataFrame(rows)


def _read(path: Path, limit: int | None) -> pd.DataFrame:
    _check_file(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl":
            return _read_jsonl(path, limit)
        if suffix == ".csv":
            return pd.read_csv(path, nrows=limit, dtype=str, keep_default_na=False)
        if suffix == ".json":
            frame = pd.read_json(path)
            return frame if limit is None else frame.head(limit)
        lines = [line.rstrip("\n") for line in path.open(encoding="utf-8")]
        lines = [line for line in lines if line.strip()]
        return pd.DataFrame({TXT_COLUMN: lines if limit is None else lines[:limit]})
    except UnicodeDecodeError:
        raise TndError(f"{path} is not UTF-8 text") from None
    except (pd.errors.ParserError, ValueError) as exc:
        raise TndError(f"{path} could not be parsed as {suffix[1:].upper()}: {exc}") from None


def read_table(path: str | Path) -> pd.DataFrame:
    """The whole CSV / JSONL / JSON / TXT file as a DataFrame (TXT: one 'text' row per non-empty line)."""
    return _read(Path(path), None)


def preview_table(path: str | Path, n: int = 20) -> pd.DataFrame:
    """The first `n` rows, for a preview with a column picker."""
    return _read(Path(path), n)


Prompt = str | list[dict[str, str]]


def is_chat(value: Any) -> bool:
    """Whether a prompt value is chat messages: a non-empty list of {"role", "content"} mappings."""
    return (
        isinstance(value, (list, tuple))
        and len(value) > 0
        and all(isinstance(m, dict) and "role" in m and "content" in m for m in value)
    )


def render_chat(messages: list[dict[str, str]], tokenizer: Any, column: str) -> str:
    """Chat messages as the prompt text the tokenizer's chat template makes of them, ending with the
    assistant's turn (add_generation_prompt). Raises ConfigError naming `column` when the tokenizer has
    no chat template.

    The BOS text a template writes is removed when the tokenizer adds BOS itself on encoding, so that
    the encoded prompt holds it once."""
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(
            "prompt_column",
            column,
            "holds chat messages (lists of {role, content}), which need a tokenizer with a chat template; "
            "the student's tokenizer has none: use a column of plain text, or a student whose tokenizer has one",
        )
    text = tokenizer.apply_chat_template(
        [{"role": str(m["role"]), "content": str(m["content"])} for m in messages],
        tokenize=False,
        add_generation_prompt=True,
    )
    bos = getattr(tokenizer, "bos_token", None)
    if bos and text.startswith(bos) and tokenizer("")["input_ids"][:1] == [tokenizer.bos_token_id]:
        text = text[len(bos) :]
    return text


def render_prompts(prompts: list[Prompt], tokenizer: Any, column: str) -> list[str]:
    """Every prompt as text: chat messages through the tokenizer's chat template, text as it is."""
    return [render_chat(p, tokenizer, column) if is_chat(p) else p for p in prompts]


def _column_values(values: list, column: str, source: str) -> list[Prompt]:
    prompts: list[Prompt] = []
    for value in values:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        if is_chat(value):
            prompts.append([dict(m) for m in value])
            continue
        text = value if isinstance(value, str) else str(value)
        if text.strip():
            prompts.append(text)
    if not prompts:
        raise TndError(f"column {column!r} of {source} holds no non-empty text")
    return prompts


def _require_column(columns: list[str], column: str, source: str) -> None:
    if column not in columns:
        listed = ", ".join(map(str, columns)) or "(none)"
        raise ConfigError("prompt_column", column, f"not a column of {source}; its columns are: {listed}")


def load_prompts(source: str | Path | None, column: str = "prompt") -> list[Prompt]:
    """Prompts from a local file (CSV/JSONL/JSON/TXT), a dataset folder or a hub dataset id (train split).

    A prompt is a text, or chat messages (a list of {"role", "content"}) that the trainer renders with the
    student's chat template (`render_prompts`).

    TXT files hold one prompt per line and ignore `column`. 'bundle' is resolved to a file by
    `tnd_core.sources` before it gets here.
    """
    source = "" if source is None else str(source)
    if not source.strip():
        raise ConfigError(
            "dataset_name_or_path", source, "must be 'bundle', a local CSV/JSONL/JSON/TXT file or a hub dataset id"
        )
    path = Path(source).expanduser()
    if path.is_dir():
        return _load_with_datasets(str(path), column)
    if path.suffix.lower() in TABLE_SUFFIXES or path.exists() or source.startswith((".", "/", "~")):
        table = read_table(path)
        if path.suffix.lower() == ".txt":
            column = TXT_COLUMN
        _require_column(list(table.columns), column, str(path))
        return _column_values(table[column].tolist(), column, str(path))
    return _load_with_datasets(source, column)


def _load_with_datasets(source: str, column: str) -> list[Prompt]:
    """A hub dataset id or a local dataset folder, through `datasets.load_dataset` (train split)."""
    import datasets

    try:
        dataset = datasets.load_dataset(source, split="train")
    except Exception as exc:  # datasets raises many types (connection, missing repo, offline mode)
        raise TndError(
            f"could not load dataset {source!r} (a hub dataset id or a dataset folder; train split): {exc}"
        ) from None
    _require_column(dataset.column_names, column, f"dataset {source!r}")
    return _column_values(dataset[column], column, f"dataset {source!r}")
