"""Generation diversity: distinct-n and the number of distinct words used."""

from __future__ import annotations


def distinct_n(texts: list[str], n: int) -> float:
    """Unique word n-grams / all word n-grams over `texts` (0 when there are none)."""
    grams = [tuple(words[i : i + n]) for words in (t.split() for t in texts) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def vocabulary_size(texts: list[str]) -> int:
    """Number of distinct whitespace-separated words in `texts`."""
    return len({w for t in texts for w in t.split()})
