"""Hypothesis strategies for what a stranger may send `/start_training`, and the rule every answer obeys.

Shared by the in-process fuzz test (`tests/test_fuzz_api.py`) and the one through a real server
(`tests/test_hosted_api.py`).
"""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import strategies as st

from tnd_core.config import CustomPPOConfig, field_specs

FIELDS = [spec.name for spec in field_specs()]
NAMES = FIELDS + list(CustomPPOConfig.ALIASES) + list(CustomPPOConfig.REPLACED)
# values an attacker would try on path and name fields
NASTY_TEXT = [
    "/etc/passwd",
    "/etc",
    "../x",
    "../../../../tmp/pwn",
    "~/.ssh",
    "upload:../../secret.txt",
    "upload:prompts.csv",
    "bundle",
    "bundle:grammar",
    "bundle:../../x",
    "owner/name",
    "gpt2",
    ".hidden",
    "a" * 5000,
    "",
    "LBFGS",
    "latest",
    "checkpoint-1",
    "checkpoint-99999999999999999999",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([0, 1, -1, 2**31, 2**32, 2**63, 10**100, -(10**30)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(NASTY_TEXT),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=12,
)
keys = st.one_of(st.sampled_from(NAMES), st.text(alphabet=st.characters(exclude_characters="="), max_size=20))
mappings = st.dictionaries(keys, values, max_size=6)


def _plausible(spec: Any) -> st.SearchStrategy:
    """Values near what the option accepts: its default, numbers around its bounds, choices, nasty text."""
    options = [st.just(spec.default), values]
    if spec.choices:
        options.append(st.sampled_from(spec.choices))
    if spec.type == "int":
        low = int(spec.ge if spec.ge is not None else (spec.gt + 1 if spec.gt is not None else 0))
        options.append(st.integers(low, low + 64))
    if spec.type == "float":
        options.append(st.floats(0.0, 2.0))
    if spec.type == "str":
        options.append(st.sampled_from(NASTY_TEXT))
    return st.one_of(*options)


# mostly real option names with values near what they accept: many configs pass and start
_PLAUSIBLE = {spec.name: _plausible(spec) for spec in field_specs()}
plausible_mappings = st.lists(st.sampled_from(FIELDS), max_size=6, unique=True).flatmap(
    lambda names: st.fixed_dictionaries({name: _PLAUSIBLE[name] for name in names})
)


@st.composite
def yaml_documents(draw: Any) -> str:
    """YAML text: a dumped mapping (mostly), raw text, a non-mapping, or a document with anchors and aliases."""
    kind = draw(st.sampled_from(["mapping", "mapping", "mapping", "raw", "scalar", "aliases", "nested"]))
    if kind == "mapping":
        return yaml.safe_dump(draw(mappings))
    if kind == "raw":
        return draw(st.text(max_size=200))
    if kind == "scalar":
        return yaml.safe_dump(draw(values))
    if kind == "aliases":
        name = draw(st.sampled_from(NAMES))
        return f"x: &a [1, 2, 3]\n{name}: *a\n"
    depth = draw(st.integers(1, 60))
    return "steps: " + "[" * depth + "1" + "]" * depth + "\n"


def check_answer(answer: str, document: str) -> str:
    """'started' or 'refused' for an answer of `/start_training`; fails unless a refusal names a field
    (an option, 'config', or a key the document gave)."""
    if answer.startswith("started: "):
        return "started"
    assert answer.startswith("error: "), answer[:300]
    body = answer[len("error: ") :]
    if body.startswith("A training job started by"):
        return "busy"  # the config passed every check; only the single job slot is taken
    candidates = {"config", "config_yaml", *NAMES}
    try:
        given = yaml.safe_load(document)
    except Exception:  # the app refuses what the plain loader cannot read too, naming 'config'
        given = None
    if isinstance(given, dict):
        candidates |= {str(k) for k in given} | {repr(k) for k in given}
    assert any(body.startswith(f"{name}=") for name in candidates), answer[:300]
    return "refused"
