"""Ungrammatical negatives made from grammatical sentences, checked with the exact recognizer.

A perturbation can land on another grammatical sentence ("the big dog runs ." minus "big"), so each
result is checked and another attempt is made until the output is really ungrammatical.
"""

from __future__ import annotations

import random

from tnd_core.data.language import INTRANSITIVE_VERBS, NOUNS, TRANSITIVE_VERBS
from tnd_core.data.recognizer import is_grammatical
from tnd_core.errors import ConfigError

PERTURBATIONS = ("shuffle", "drop", "agreement", "repeat")


def _number_twins() -> dict[str, list[str]]:
    twins: dict[str, set[str]] = {}
    pairs = [
        *NOUNS,
        *INTRANSITIVE_VERBS,
        *TRANSITIVE_VERBS,
        ("is", "are"),
        ("does", "do"),
        ("this", "these"),
        ("that", "those"),
        ("a", "some"),
        ("an", "some"),
    ]
    pairs += [(s, p) for s in ("he", "she", "it") for p in ("they", "we")]
    for one, other in pairs:
        twins.setdefault(one, set()).add(other)
        twins.setdefault(other, set()).add(one)
    return {w: sorted(ts) for w, ts in twins.items()}


_TWINS = _number_twins()


def shuffle_words(words: list[str], rng: random.Random) -> list[str]:
    """The same words in a new random order (the final punctuation moves too)."""
    out = words[:]
    while len(set(out)) > 1 and out == words:
        rng.shuffle(out)
    return out


def drop_word(words: list[str], rng: random.Random) -> list[str]:
    """One word removed."""
    i = rng.randrange(len(words))
    return words[:i] + words[i + 1 :]


def break_agreement(words: list[str], rng: random.Random) -> list[str]:
    """One word replaced by its other-number form (dog -> dogs, runs -> run, is -> are, this -> these)."""
    candidates = [i for i, w in enumerate(words) if w in _TWINS]
    if not candidates:
        return words
    i = rng.choice(candidates)
    return words[:i] + [rng.choice(_TWINS[words[i]])] + words[i + 1 :]


def repeat_word(words: list[str], rng: random.Random) -> list[str]:
    """One word said twice in a row."""
    i = rng.randrange(len(words))
    return words[: i + 1] + words[i:]


_FUNCTIONS = {"shuffle": shuffle_words, "drop": drop_word, "agreement": break_agreement, "repeat": repeat_word}


def perturb(sentence: str, rng: random.Random, kind: str | None = None, max_tries: int = 20) -> tuple[str, str] | None:
    """An ungrammatical variant of `sentence` and the perturbation used, or None if none was found.

    `kind` picks one of PERTURBATIONS; None draws one at random on each try.
    """
    if kind is not None and kind not in _FUNCTIONS:
        raise ConfigError("kind", kind, f"must be one of {', '.join(PERTURBATIONS)}")
    words = sentence.split()
    for _ in range(max_tries):
        chosen = kind or rng.choice(PERTURBATIONS)
        candidate = " ".join(_FUNCTIONS[chosen](words, rng))
        if candidate != sentence and not is_grammatical(candidate):
            return candidate, chosen
    return None
