"""Words for the word-acquisition view: what counts as a word, the uploaded word list, the bundle's
vocabulary and word frequencies in texts.

A word is a whitespace-separated token with a letter in it, lowercased: the unit `word_surprisals`
scores, so counts and surprisals name the same words.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Iterable

from tnd_core.errors import ConfigError

MAX_WORD_LIST_BYTES = 1024 * 1024
MAX_WORD_LIST_WORDS = 20_000
MAX_WORD_CHARS = 64


def words_of(text: str) -> list[str]:
    """The words of `text`: lowercased whitespace tokens with at least one letter."""
    return [token.lower() for token in text.split() if any(ch.isalpha() for ch in token)]


def count_words(texts: Iterable[str], counts: Counter | None = None) -> Counter:
    """How often each word occurs in `texts`, added to `counts` when given."""
    counts = Counter() if counts is None else counts
    for text in texts:
        counts.update(words_of(text))
    return counts


def load_word_list(path: str | Path, field: str = "eval_word_list") -> list[str]:
    """A CDI-style word list: one word a line, lowercased, blank lines and duplicates dropped, in file order.

    Refused with a ConfigError naming `field`: a missing or unreadable file, more than 1 MiB or
    20,000 words, no word at all, a line of over 64 characters. An entry with a space ("choo choo")
    is kept; surprisal cannot score it, so evaluations report it as unscored.
    """
    file = Path(path)
    if not file.is_file():
        raise ConfigError(field, str(path), "an existing text file with one word a line")
    size = file.stat().st_size
    if size > MAX_WORD_LIST_BYTES:
        raise ConfigError(
            field, str(path), f"a file of at most {MAX_WORD_LIST_BYTES // 1024} KiB (this one: {size:,} bytes)"
        )
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(field, str(path), f"a readable UTF-8 text file ({type(exc).__name__})") from exc
    words: dict[str, None] = {}
    for number, line in enumerate(text.splitlines(), 1):
        word = " ".join(line.split()).lower()
        if not word:
            continue
        if len(word) > MAX_WORD_CHARS:
            raise ConfigError(
                field, str(path), f"words of at most {MAX_WORD_CHARS} characters (line {number} is longer)"
            )
        words[word] = None
        if len(words) > MAX_WORD_LIST_WORDS:
            raise ConfigError(field, str(path), f"at most {MAX_WORD_LIST_WORDS:,} words")
    if not words:
        raise ConfigError(field, str(path), "at least one word (one word a line)")
    return list(words)


def tokenizer_vocabulary(tokenizer_dir: str | Path) -> list[str]:
    """The words of a word-level tokenizer saved in `tokenizer_dir` (tokenizer.json), sorted; special
    tokens like <pad> and punctuation left out. Empty for a tokenizer that is not word-level."""
    file = Path(tokenizer_dir) / "tokenizer.json"
    if not file.is_file():
        return []
    model = json.loads(file.read_text()).get("model", {})
    if model.get("type") != "WordLevel":
        return []
    return sorted(
        token
        for token in model.get("vocab", {})
        if not (token.startswith("<") and token.endswith(">")) and words_of(token) == [token]
    )
