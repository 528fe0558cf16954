"""Property-based fuzzing of every way a config comes in: keyword arguments, YAML/JSON text, files, CLI flags.

The one property: an input is either accepted (a valid config, which round-trips through YAML) or refused
with a ConfigError whose field is a real option, 'config', or the unknown/replaced name the input gave, and
whose message stays short. Nothing else (TypeError, OverflowError, RecursionError, yaml errors) escapes.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tnd_core import cli
from tnd_core.config import MAX_CONFIG_DEPTH, CustomPPOConfig, field_specs
from tnd_core.errors import ConfigError
from tnd_core.trainers.reward_trainer import RewardTrainingConfig

# Per property: 400 keeps this file near a minute; TND_FUZZ_EXAMPLES=1500 (or more) for a deeper run.
EXAMPLES = int(os.environ.get("TND_FUZZ_EXAMPLES", "400"))
FIELDS = {spec.name: spec for spec in field_specs()}
OTHER_NAMES = sorted({*CustomPPOConfig.ALIASES, *CustomPPOConfig.REPLACED})
MAX_MESSAGE = 4000  # the list of known options (about 1,500 characters) plus quoted values of at most ~200

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**120), max_value=10**120),
    st.just(10**100),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.integers(min_value=201, max_value=20_000).map(lambda n: "x" * n),  # longer than a message may quote
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=6,
)


def _plausible(spec) -> st.SearchStrategy:
    """Values near what the option accepts: its choices, numbers around its bounds, texts, small objects."""
    if spec.choices:
        return st.sampled_from(spec.choices)
    if spec.type == "bool":
        return st.booleans()
    low = spec.ge if spec.ge is not None else spec.gt if spec.gt is not None else -1e6
    high = spec.le if spec.le is not None else spec.lt if spec.lt is not None else 1e6
    if spec.type == "int":
        return st.integers(min_value=int(low) - 2, max_value=min(int(high) + 2, int(low) + 64))
    if spec.type == "float":
        return st.floats(min_value=low - 1, max_value=high + 1, allow_nan=False)
    if spec.type == "dict":
        keys = st.sampled_from(["weight_decay", "betas", "momentum", "power", "num_cycles", "lr", "foo"])
        return st.dictionaries(keys, st.one_of(st.floats(0, 1), st.integers(0, 3), json_values), max_size=2)
    return st.one_of(st.sampled_from(["bundle", "reward_model", "1.5", "", "out/run"]), st.text(max_size=40))


keys = st.one_of(st.sampled_from(sorted(FIELDS)), st.sampled_from(OTHER_NAMES), st.text(max_size=20))


@st.composite
def keyword_arguments(draw) -> dict:
    """Mostly real options with plausible values, some with any JSON value, and a few other names."""
    chosen = draw(st.lists(st.sampled_from(sorted(FIELDS)), max_size=8, unique=True))
    values = {name: draw(st.one_of(_plausible(FIELDS[name]), _plausible(FIELDS[name]), json_values)) for name in chosen}
    if draw(st.integers(0, 3)) == 0:
        values.update(draw(st.dictionaries(keys, json_values, max_size=3)))
    return values


def _check_refusal(error: ConfigError, given: dict | None = None) -> None:
    named = {*FIELDS, *(field.name for field in field_specs(RewardTrainingConfig)), "config"}
    if given is not None:
        named |= {key for key in given if isinstance(key, str) and key not in FIELDS}  # unknown/replaced names
    assert error.field in named, error
    assert len(str(error)) < MAX_MESSAGE, str(error)[:500]
    assert "\n" not in error.allowed


def _check_accepted(config: CustomPPOConfig) -> None:
    assert config.errors() == []
    for spec in field_specs(type(config)):
        value = getattr(config, spec.name)
        if spec.type == "float" and value is not None:
            assert math.isfinite(value)
    assert type(config).from_yaml(config.to_yaml()) == config
    assert type(config).from_json(config.to_json()) == config


@settings(max_examples=EXAMPLES, deadline=None)
@given(keyword_arguments())
def test_constructor_accepts_or_raises_a_config_error(values):
    try:
        config = CustomPPOConfig(**values)
    except ConfigError as error:
        _check_refusal(error, values)
    else:
        _check_accepted(config)


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.dictionaries(keys, json_values, max_size=6))
def test_reward_config_accepts_or_raises_a_config_error(values):
    try:
        config = RewardTrainingConfig(**values)
    except ConfigError as error:
        _check_refusal(error, values)
    else:
        _check_accepted(config)


def _with_anchors(draw, text: str) -> str:
    """YAML text with an anchor on a value and aliases to it, in the places a user (or attacker) writes them."""
    lines = text.splitlines() or ["steps: 3"]
    at = draw(st.integers(0, len(lines) - 1))
    key, _, value = lines[at].partition(": ")
    if value:
        lines[at] = f"{key}: &x {value}"
        lines.append(f"{draw(st.sampled_from(sorted(FIELDS)))}: *x")
    return "\n".join(lines)


@st.composite
def yaml_texts(draw) -> str:
    kind = draw(st.integers(0, 5))
    if kind == 0:
        return draw(st.text(max_size=200))
    if kind == 1:  # a real config document, perhaps with anchors and aliases
        text = yaml.safe_dump(draw(keyword_arguments()), sort_keys=False, allow_unicode=True)
        return _with_anchors(draw, text) if draw(st.booleans()) else text
    if kind == 2:  # any JSON value as a YAML document: non-mappings included
        return yaml.safe_dump(draw(json_values))
    if kind == 3:  # nesting around the limit, in flow or block style
        depth = draw(st.integers(MAX_CONFIG_DEPTH - 2, MAX_CONFIG_DEPTH + 200))
        shapes = ["a: " + "[" * depth + "]" * depth, "[" * depth, "{a: " * depth + "1" + "}" * depth]
        return draw(st.sampled_from(shapes))
    if kind == 4:  # several documents
        docs = draw(st.lists(st.sampled_from(["steps: 3", "", "0", "[]", "warmup: 2"]), min_size=2, max_size=4))
        return "\n---\n".join(docs)
    fragments = ["steps: ", "&a ", "*a", "[", "]", "{", "}", "- ", "\n", "  ", "!!", "? ", ": ", "'", '"', "1e400", "~"]
    return "".join(draw(st.lists(st.sampled_from(fragments), max_size=40)))


@settings(max_examples=EXAMPLES, deadline=None)
@given(yaml_texts())
def test_yaml_text_accepts_or_raises_a_config_error(text):
    try:
        config = CustomPPOConfig.from_yaml(text)
    except ConfigError as error:
        _check_refusal(error, _mapping_or_none(text))
    else:
        _check_accepted(config)


def _mapping_or_none(text: str) -> dict | None:
    """The mapping a text names keys of, so that a refusal may name one of its unknown keys."""
    try:
        loaded = yaml.safe_load(text)
    except Exception:  # only to learn which names the input gave; anything unreadable gives none
        return None
    return loaded if isinstance(loaded, dict) else None


@st.composite
def json_texts(draw) -> str:
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(st.text(max_size=200))
    if kind == 1:
        return json.dumps(draw(keyword_arguments()))
    if kind == 2:
        return json.dumps(draw(json_values))
    depth = draw(st.integers(MAX_CONFIG_DEPTH - 2, 5000))
    return '{"optimizer_kwargs": ' + '{"a": ' * depth + "1" + "}" * (depth + 1)


@settings(max_examples=EXAMPLES, deadline=None)
@given(json_texts())
def test_json_text_accepts_or_raises_a_config_error(text):
    try:
        config = CustomPPOConfig.from_json(text)
    except ConfigError as error:
        try:
            given = json.loads(text)
        except (ValueError, RecursionError):
            given = None
        _check_refusal(error, given if isinstance(given, dict) else None)
    else:
        _check_accepted(config)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    content=st.one_of(
        st.binary(max_size=300),
        yaml_texts().map(lambda text: text.encode("utf-8", "surrogatepass")),
        yaml_texts().map(lambda text: text.encode("utf-16")),
    ),
    suffix=st.sampled_from([".yaml", ".yml", ".json", ""]),
)
def test_config_files_of_any_bytes_load_or_raise_a_config_error(tmp_path, content, suffix):
    path = tmp_path / f"config{suffix}"
    path.write_bytes(content)
    try:
        config = CustomPPOConfig.load(path)
    except ConfigError as error:
        _check_refusal(error, _mapping_or_none(content.decode("utf-8", "replace")))
    else:
        _check_accepted(config)


FLAG_VALUES = st.one_of(
    st.sampled_from(["0", "1", "-1", "3", "0.5", "1e-5", "1e400", "nan", "inf", "true", "off", "", "none", "{}"]),
    st.sampled_from(['{"weight_decay": 0.1}', '{"lr": 1}', '{"power": 2}', "[1]", "1" + "0" * 100, "9" * 5000]),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.floats().map(repr),
    st.text(max_size=30),
)


@pytest.fixture(scope="module")
def defaults_file(tmp_path_factory) -> Path:
    """With --config, `tnd train` starts from this file instead of building the bundle for its recommended config."""
    path = tmp_path_factory.mktemp("cli") / "defaults.yaml"
    CustomPPOConfig().save(path)
    return path


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    flags=st.lists(
        st.tuples(st.sampled_from(sorted([*FIELDS, "optimize_cuda_cache"])), FLAG_VALUES), min_size=1, max_size=6
    )
)
def test_tnd_train_flags_give_a_config_or_a_config_error(defaults_file, flags):
    argv = ["train", f"--config={defaults_file}", *(f"--{name}={value}" for name, value in flags)]
    args = cli.build_parser().parse_args(argv)
    try:
        config = cli._training_config(args)
    except ConfigError as error:
        _check_refusal(error)
    else:
        _check_accepted(config)
