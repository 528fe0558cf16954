"""The baby language: a small generated language in the style of child-directed speech.

Statements ("the dog runs ."), questions ("does the dog run ?", "where are the cats ?") and
imperatives ("please hug the baby !"), with subject-verb agreement ("the dog runs" / "the dogs run"),
determiner-noun agreement ("this dog" / "these dogs"), do-support with the base form, and a/an.
Inside each word class, words are drawn with Zipf-like weights (the k-th word weighs 1 / k^s), so
the first words of each list are frequent and the last ones rare: those are acquired late.

Sentences are written as space-separated lowercase tokens with the final punctuation as its own
token, which is exactly what the word-level tokenizer decodes back to.

The grammar is data (`RULES` and `LEXICON`); `recognizer.py` parses with the same tables.
"""

from __future__ import annotations

import random
from functools import lru_cache

ZIPF_EXPONENT = 1.0
VOWELS = "aeiou"

# Ordered by frequency rank: the first words are the common ones.
NOUNS: list[tuple[str, str]] = [
    ("dog", "dogs"),
    ("ball", "balls"),
    ("baby", "babies"),
    ("cat", "cats"),
    ("book", "books"),
    ("cup", "cups"),
    ("car", "cars"),
    ("bird", "birds"),
    ("toy", "toys"),
    ("apple", "apples"),
    ("duck", "ducks"),
    ("cookie", "cookies"),
    ("bear", "bears"),
    ("child", "children"),
    ("hat", "hats"),
    ("shoe", "shoes"),
    ("boy", "boys"),
    ("girl", "girls"),
    ("box", "boxes"),
    ("bed", "beds"),
    ("chair", "chairs"),
    ("table", "tables"),
    ("spoon", "spoons"),
    ("bottle", "bottles"),
    ("sock", "socks"),
    ("truck", "trucks"),
    ("train", "trains"),
    ("egg", "eggs"),
    ("banana", "bananas"),
    ("frog", "frogs"),
    ("horse", "horses"),
    ("cow", "cows"),
    ("pig", "pigs"),
    ("mouse", "mice"),
    ("foot", "feet"),
    ("man", "men"),
    ("woman", "women"),
    ("house", "houses"),
    ("tree", "trees"),
    ("flower", "flowers"),
    ("door", "doors"),
    ("window", "windows"),
    ("blanket", "blankets"),
    ("pillow", "pillows"),
    ("bowl", "bowls"),
    ("plate", "plates"),
    ("cake", "cakes"),
    ("monkey", "monkeys"),
    ("lion", "lions"),
    ("tiger", "tigers"),
    ("elephant", "elephants"),
    ("rabbit", "rabbits"),
    ("puppy", "puppies"),
    ("kitty", "kitties"),
    ("balloon", "balloons"),
    ("block", "blocks"),
    ("doll", "dolls"),
    ("boat", "boats"),
    ("plane", "planes"),
    ("bus", "buses"),
    ("bike", "bikes"),
    ("star", "stars"),
    ("moon", "moons"),
    ("cloud", "clouds"),
    ("rock", "rocks"),
    ("stick", "sticks"),
    ("leaf", "leaves"),
    ("bug", "bugs"),
    ("bee", "bees"),
    ("ant", "ants"),
    ("tooth", "teeth"),
    ("owl", "owls"),
    ("hen", "hens"),
    ("goat", "goats"),
    ("sandwich", "sandwiches"),
    ("carrot", "carrots"),
    ("grape", "grapes"),
    ("pear", "pears"),
    ("peach", "peaches"),
    ("muffin", "muffins"),
    ("towel", "towels"),
    ("coat", "coats"),
    ("mitten", "mittens"),
    ("button", "buttons"),
    ("crayon", "crayons"),
    ("puzzle", "puzzles"),
    ("drum", "drums"),
    ("bell", "bells"),
    ("kite", "kites"),
    ("wagon", "wagons"),
    ("basket", "baskets"),
    ("bucket", "buckets"),
    ("shovel", "shovels"),
    ("garden", "gardens"),
    ("kitchen", "kitchens"),
    ("ladder", "ladders"),
    ("penguin", "penguins"),
    ("zebra", "zebras"),
    ("giraffe", "giraffes"),
    ("turtle", "turtles"),
    ("snail", "snails"),
    ("octopus", "octopuses"),
    ("dinosaur", "dinosaurs"),
    ("robot", "robots"),
    ("rocket", "rockets"),
    ("igloo", "igloos"),
    ("umbrella", "umbrellas"),
    ("island", "islands"),
    ("acorn", "acorns"),
    ("otter", "otters"),
    ("eagle", "eagles"),
    ("ostrich", "ostriches"),
    ("hippo", "hippos"),
    ("kangaroo", "kangaroos"),
    ("squirrel", "squirrels"),
    ("pumpkin", "pumpkins"),
    ("lemon", "lemons"),
    ("onion", "onions"),
    ("candle", "candles"),
    ("feather", "feathers"),
]
# (third person singular, base form)
INTRANSITIVE_VERBS: list[tuple[str, str]] = [
    ("runs", "run"),
    ("sleeps", "sleep"),
    ("jumps", "jump"),
    ("sits", "sit"),
    ("cries", "cry"),
    ("laughs", "laugh"),
    ("plays", "play"),
    ("walks", "walk"),
    ("swims", "swim"),
    ("falls", "fall"),
    ("sings", "sing"),
    ("dances", "dance"),
    ("smiles", "smile"),
    ("waits", "wait"),
    ("hides", "hide"),
    ("naps", "nap"),
    ("claps", "clap"),
    ("hops", "hop"),
    ("giggles", "giggle"),
    ("crawls", "crawl"),
    ("sneezes", "sneeze"),
    ("yawns", "yawn"),
    ("shouts", "shout"),
    ("spins", "spin"),
    ("splashes", "splash"),
    ("wiggles", "wiggle"),
    ("climbs", "climb"),
    ("floats", "float"),
    ("squeaks", "squeak"),
    ("whispers", "whisper"),
]
TRANSITIVE_VERBS: list[tuple[str, str]] = [
    ("sees", "see"),
    ("wants", "want"),
    ("likes", "like"),
    ("has", "have"),
    ("eats", "eat"),
    ("holds", "hold"),
    ("finds", "find"),
    ("takes", "take"),
    ("loves", "love"),
    ("gets", "get"),
    ("makes", "make"),
    ("needs", "need"),
    ("throws", "throw"),
    ("kicks", "kick"),
    ("pushes", "push"),
    ("pulls", "pull"),
    ("drops", "drop"),
    ("washes", "wash"),
    ("opens", "open"),
    ("closes", "close"),
    ("touches", "touch"),
    ("hugs", "hug"),
    ("feeds", "feed"),
    ("carries", "carry"),
    ("brings", "bring"),
    ("catches", "catch"),
    ("draws", "draw"),
    ("reads", "read"),
    ("builds", "build"),
    ("fixes", "fix"),
    ("hears", "hear"),
    ("chases", "chase"),
    ("paints", "paint"),
    ("tickles", "tickle"),
    ("smells", "smell"),
    ("shakes", "shake"),
    ("licks", "lick"),
    ("bites", "bite"),
    ("kisses", "kiss"),
    ("counts", "count"),
]
ADJECTIVES: list[str] = [
    "big",
    "little",
    "red",
    "good",
    "happy",
    "blue",
    "nice",
    "small",
    "hot",
    "soft",
    "funny",
    "sad",
    "green",
    "yellow",
    "wet",
    "pretty",
    "cold",
    "new",
    "old",
    "dirty",
    "clean",
    "tall",
    "tiny",
    "warm",
    "dry",
    "sleepy",
    "hungry",
    "silly",
    "round",
    "fast",
    "slow",
    "loud",
    "quiet",
    "shiny",
    "fluffy",
    "sticky",
    "brown",
    "pink",
    "white",
    "black",
    "purple",
    "fuzzy",
    "empty",
    "angry",
    "bumpy",
    "itchy",
    "icy",
]
ADVERBS: list[str] = [
    "now",
    "again",
    "too",
    "here",
    "there",
    "today",
    "outside",
    "inside",
    "together",
    "quickly",
    "slowly",
    "later",
]
PREPOSITIONS: list[str] = ["in", "on", "with", "under", "near", "by", "behind", "into", "over", "beside"]
NAMES: list[str] = ["sam", "mia", "ben", "lily", "max", "emma", "leo", "zoe", "tom", "anna", "oscar", "ivy"]
SUBJECT_PRONOUNS = {"sg": ["he", "it", "she"], "pl": ["you", "we", "they"]}
OBJECT_PRONOUNS: list[str] = ["it", "me", "you", "him", "her", "them", "us"]
DETERMINERS = {
    "sg": ["the", "a", "my", "this", "your", "that", "his", "our", "every"],
    "pl": ["the", "my", "some", "these", "your", "two", "those", "his", "our", "three", "many"],
}
PUNCTUATION = [".", "?", "!"]
FUNCTION_WORDS = ["is", "are", "does", "do", "can", "where", "what", "who", "please"]

# Lexical categories (preterminals) -> words in frequency order.
LEXICON: dict[str, list[str]] = {
    "N_sg": [s for s, _ in NOUNS],
    "N_pl": [p for _, p in NOUNS],
    "VI_sg": [s for s, _ in INTRANSITIVE_VERBS],
    "VI_base": [b for _, b in INTRANSITIVE_VERBS],
    "VT_sg": [s for s, _ in TRANSITIVE_VERBS],
    "VT_base": [b for _, b in TRANSITIVE_VERBS],
    "ADJ": ADJECTIVES,
    "ADV": ADVERBS,
    "PREP": PREPOSITIONS,
    "NAME": NAMES,
    "PRO_sg": SUBJECT_PRONOUNS["sg"],
    "PRO_pl": SUBJECT_PRONOUNS["pl"],
    "PRO_obj": OBJECT_PRONOUNS,
    "DET_sg": DETERMINERS["sg"],
    "DET_pl": DETERMINERS["pl"],
}
# Plural verbs take the base form ("the dogs run").
LEXICON["VI_pl"] = LEXICON["VI_base"]
LEXICON["VT_pl"] = LEXICON["VT_base"]

Alternatives = list[tuple[float, list[str]]]


def _rules() -> dict[str, Alternatives]:
    rules: dict[str, Alternatives] = {
        "S": [(0.5, ["DECL"]), (0.2, ["YNQ"]), (0.12, ["WHQ"]), (0.18, ["IMP"])],
        "DECL": [(0.6, ["DECL_sg"]), (0.4, ["DECL_pl"])],
        "OBJ": [(0.45, ["NP_sg"]), (0.3, ["NP_pl"]), (0.15, ["PRO_obj"]), (0.1, ["NAME"])],
        "MOD": [(0.6, []), (0.2, ["ADV"]), (0.2, ["PP"])],
        "PP": [(1.0, ["PREP", "OBJ"])],
        "BASEVP": [(0.5, ["VI_base", "MOD"]), (0.5, ["VT_base", "OBJ", "MOD"])],
        "YNQ": [
            (0.3, ["does", "SUBJ_sg", "BASEVP", "?"]),
            (0.2, ["do", "SUBJ_pl", "BASEVP", "?"]),
            (0.2, ["is", "SUBJ_sg", "ADJ", "?"]),
            (0.1, ["are", "SUBJ_pl", "ADJ", "?"]),
            (0.2, ["can", "SUBJ", "BASEVP", "?"]),
        ],
        "WHQ": [
            (0.25, ["where", "is", "SUBJ_sg", "?"]),
            (0.15, ["where", "are", "SUBJ_pl", "?"]),
            (0.2, ["what", "does", "SUBJ_sg", "VT_base", "?"]),
            (0.1, ["what", "do", "SUBJ_pl", "VT_base", "?"]),
            (0.15, ["who", "VI_sg", "MOD", "?"]),
            (0.15, ["who", "VT_sg", "OBJ", "?"]),
        ],
        "IMP": [(0.7, ["BASEVP", "!"]), (0.3, ["please", "BASEVP", "!"])],
        "SUBJ": [(0.6, ["SUBJ_sg"]), (0.4, ["SUBJ_pl"])],
        "SUBJ_sg": [(0.7, ["NP_sg"]), (0.18, ["PRO_sg"]), (0.12, ["NAME"])],
        "SUBJ_pl": [(0.75, ["NP_pl"]), (0.25, ["PRO_pl"])],
    }
    for n, copula in (("sg", "is"), ("pl", "are")):
        rules[f"DECL_{n}"] = [(1.0, [f"SUBJ_{n}", f"VP_{n}", "."])]
        rules[f"NP_{n}"] = [(0.6, [f"DET_{n}", f"N_{n}"]), (0.4, [f"DET_{n}", "ADJ", f"N_{n}"])]
        rules[f"VP_{n}"] = [
            (0.3, [f"VI_{n}", "MOD"]),
            (0.35, [f"VT_{n}", "OBJ", "MOD"]),
            (0.12, [copula, "ADJ"]),
            (0.08, [copula, "PP"]),
            (0.07, ["can", "VI_base", "MOD"]),
            (0.08, ["can", "VT_base", "OBJ", "MOD"]),
        ]
    return rules


RULES: dict[str, Alternatives] = _rules()


def zipf_weights(n: int, exponent: float = ZIPF_EXPONENT) -> list[float]:
    """Weights 1/k^s for ranks k = 1..n."""
    return [1.0 / (k**exponent) for k in range(1, n + 1)]


@lru_cache(maxsize=None)
def _lexical_weights(category: str) -> list[float]:
    return zipf_weights(len(LEXICON[category]))


def vocabulary() -> list[str]:
    """Every word form of the language (including 'an' and punctuation), sorted, without duplicates."""
    words = {w for ws in LEXICON.values() for w in ws}
    words.update(PUNCTUATION, FUNCTION_WORDS, ["an"])
    return sorted(words)


def fix_articles(tokens: list[str]) -> list[str]:
    """'a' becomes 'an' before a vowel-initial word (the generator only ever emits 'a')."""
    return [
        "an" if t == "a" and i + 1 < len(tokens) and tokens[i + 1][0] in VOWELS else t for i, t in enumerate(tokens)
    ]


def _expand(symbol: str, rng: random.Random, out: list[str]) -> None:
    if symbol in RULES:
        weights, expansions = zip(*RULES[symbol])
        for child in rng.choices(expansions, weights=weights)[0]:
            _expand(child, rng, out)
    elif symbol in LEXICON:
        out.append(rng.choices(LEXICON[symbol], weights=_lexical_weights(symbol))[0])
    else:
        out.append(symbol)


def generate_sentence(rng: random.Random) -> str:
    """One sentence drawn from the grammar with `rng`."""
    tokens: list[str] = []
    _expand("S", rng, tokens)
    return " ".join(fix_articles(tokens))


def generate_corpus(n: int, seed: int = 0) -> list[str]:
    """`n` sentences, the same ones for the same seed (duplicates kept: frequency matters)."""
    rng = random.Random(seed)
    return [generate_sentence(rng) for _ in range(n)]


def sentence_prefixes(sentences: list[str], seed: int = 0, max_words: int = 3) -> list[str]:
    """A 1..max_words-word prefix of each sentence (never the whole sentence or its punctuation)."""
    rng = random.Random(seed)
    prefixes = []
    for sentence in sentences:
        words = sentence.split()[:-1]
        if words:
            prefixes.append(" ".join(words[: rng.randint(1, min(max_words, len(words)))]))
    return prefixes
