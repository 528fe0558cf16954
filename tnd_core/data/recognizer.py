"""Exact recognizer of the baby language: a memoised top-down parser over `language.RULES`.

A sentence is grammatical when the whole token sequence derives from the start symbol `S` and every
'a' / 'an' matches the first letter of the next word.
"""

from __future__ import annotations

import re
from functools import lru_cache

from tnd_core.data.language import LEXICON, RULES, VOWELS

_TOKEN = re.compile(r"[a-z]+|[^a-z\s]")
_CATEGORIES: dict[str, frozenset[str]] = {cat: frozenset(words) for cat, words in LEXICON.items()}
_CATEGORIES["DET_sg"] = _CATEGORIES["DET_sg"] | {"an"}


def tokenize_words(sentence: str) -> list[str]:
    """Split lowercase text into words and single punctuation marks."""
    return _TOKEN.findall(sentence.lower())


def _articles_ok(tokens: tuple[str, ...]) -> bool:
    for word, following in zip(tokens, tokens[1:] + ("",)):
        if word == "a" and (not following or following[0] in VOWELS):
            return False
        if word == "an" and (not following or following[0] not in VOWELS):
            return False
    return True


def _parse(tokens: tuple[str, ...]) -> bool:
    @lru_cache(maxsize=None)
    def ends(symbol: str, start: int) -> frozenset[int]:
        """Positions where a derivation of `symbol` starting at `start` can end."""
        if symbol in RULES:
            found: set[int] = set()
            for _, sequence in RULES[symbol]:
                positions = {start}
                for child in sequence:
                    positions = {e for p in positions for e in ends(child, p)}
                    if not positions:
                        break
                found |= positions
            return frozenset(found)
        if start >= len(tokens):
            return frozenset()
        word = tokens[start]
        matches = word in _CATEGORIES[symbol] if symbol in _CATEGORIES else word == symbol
        return frozenset({start + 1}) if matches else frozenset()

    return len(tokens) in ends("S", 0)


def is_grammatical(sentence: str) -> bool:
    """True when `sentence` is exactly one sentence of the baby language (case and spacing ignored)."""
    tokens = tuple(tokenize_words(sentence))
    return bool(tokens) and _articles_ok(tokens) and _parse(tokens)
