"""From a config's sources to paths and hub ids: the one place that knows what 'bundle' means.

A source is the bundle when it is exactly 'bundle' or 'bundle:<variant>' (`is_bundle`). `resolve_sources`
turns every source of a config into a model folder or hub id plus a tokenizer folder or hub id per role,
the prompts file or dataset id, and the bundle's CLM corpus and evaluation set where they apply,
building the bundle first when a source names it. The loaders below (`tnd_core.models`,
`tnd_core.data.prompts`) only ever see what this module hands them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tnd_core.bundle import BundlePaths, ensure_bundle
from tnd_core.errors import ConfigError

BUNDLE = "bundle"
MODEL_SOURCE_FIELDS = ("teacher_name_or_path", "student_name_or_path", "reward_model_name_or_path")
SOURCE_FIELDS = (*MODEL_SOURCE_FIELDS, "dataset_name_or_path")

# For each field that may name the bundle: its variants ('' is plain 'bundle') and the part of the bundle each names.
_BUNDLE_PARTS: dict[str, dict[str, str]] = {
    "teacher_name_or_path": {"": "teacher"},
    "student_name_or_path": {"": "student"},
    "reward_model_name_or_path": {"": "reward_stage", "stage": "reward_stage", "grammar": "reward_grammar"},
    "dataset_name_or_path": {"": "prompts"},
    "tokenizer": {"": "tokenizer"},
}


def is_bundle(source: str | Path | None) -> bool:
    """Whether a source names the embedded bundle: exactly 'bundle' or 'bundle:<variant>'.

    A local folder such as 'bundled_model/' or 'bundle_x' is not the bundle, nor is any Path object.
    """
    if not isinstance(source, str):
        return False
    return source == BUNDLE or source.startswith(BUNDLE + ":")


def uses_bundle(config: Any) -> bool:
    """Whether any source of the config (teacher, student, reward model, prompts) is the bundle."""
    return any(is_bundle(getattr(config, name)) for name in SOURCE_FIELDS)


@dataclass(frozen=True)
class ModelSource:
    """Where one model and its tokenizer load from: a local folder or a hub id each."""

    model: str | Path
    tokenizer: str | Path


@dataclass(frozen=True)
class ResolvedSources:
    """A config's sources as paths or hub ids.

    `clm_corpus` is the bundle's corpus when the prompts are the bundle's (None: CLM steps use the
    prompts). `evaluation_bundle` is the bundle whose held-out set evaluates the student, set when the
    student is the bundle's (they share its tokenizer).
    """

    teacher: ModelSource
    student: ModelSource
    reward_model: ModelSource
    prompts: str | Path
    prompt_column: str
    clm_corpus: Path | None
    evaluation_bundle: BundlePaths | None


def _bundle_part(field: str, source: str | Path | None) -> str | None:
    """The part of the bundle (a BundlePaths attribute) that `source` names; None when it is not the bundle."""
    if not is_bundle(source):
        return None
    variants = _BUNDLE_PARTS[field]
    part = variants.get(source.partition(":")[2])
    if part is None:
        names = ", ".join(repr(f"{BUNDLE}:{v}" if v else BUNDLE) for v in variants)
        raise ConfigError(field, source, f"must be {names}, a hub id or a local path")
    return part


def resolve_sources(config: Any) -> ResolvedSources:
    """Every source of a CustomPPOConfig as paths or hub ids, building the bundle first if a source names it.

    Raises ConfigError naming the field for an unknown bundle variant ('bundle:x' for a teacher,
    'bundle:foo' for a reward model), before any build starts.
    """
    parts = {field: _bundle_part(field, getattr(config, field)) for field in SOURCE_FIELDS}
    paths = ensure_bundle() if any(parts.values()) else None

    def model(field: str) -> ModelSource:
        if parts[field] is None:
            source = getattr(config, field)
            return ModelSource(source, source)
        return ModelSource(getattr(paths, parts[field]), paths.tokenizer)

    prompts_from_bundle = parts["dataset_name_or_path"] is not None
    return ResolvedSources(
        teacher=model("teacher_name_or_path"),
        student=model("student_name_or_path"),
        reward_model=model("reward_model_name_or_path"),
        prompts=paths.prompts if prompts_from_bundle else config.dataset_name_or_path,
        prompt_column=config.prompt_column,
        clm_corpus=paths.corpus if prompts_from_bundle else None,
        evaluation_bundle=paths if parts["student_name_or_path"] is not None else None,
    )


def resolve_tokenizer(source: str | None) -> str | None:
    """A tokenizer source (e.g. `tnd reward --tokenizer`) as a folder or hub id: 'bundle' becomes the
    bundle's tokenizer folder (building the bundle first if needed); anything else, None included, is kept."""
    if _bundle_part("tokenizer", source) is None:
        return source
    return str(ensure_bundle().tokenizer)


def recommended_config_path() -> Path:
    """The bundle's recommended config file (building the bundle first if needed)."""
    return ensure_bundle().config
