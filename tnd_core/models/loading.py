"""Load models from 'bundle', a hub id or a local path, and wrap model objects handed to the trainer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from tnd_core.errors import ConfigError, TndError
from tnd_core.models.reward import RewardLike, RewardModel
from tnd_core.models.student import StudentLike, StudentModel
from tnd_core.models.teacher import TeacherLike, TeacherModel


def _from_pretrained(loader: Any, name_or_path: str | Path, field: str, **kwargs: Any) -> Any:
    try:
        return loader.from_pretrained(str(name_or_path), **kwargs)
    except (OSError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(field, str(name_or_path), f"must be a local model folder or a reachable hub id ({first_line})") from exc


def load_causal_lm(name_or_path: str | Path, trust_remote_code: bool = False, field: str = "model", **kwargs: Any) -> nn.Module:
    """`AutoModelForCausalLM.from_pretrained` with a user-facing error."""
    from transformers import AutoModelForCausalLM

    return _from_pretrained(AutoModelForCausalLM, name_or_path, field, trust_remote_code=trust_remote_code, **kwargs)


def load_sequence_classifier(name_or_path: str | Path, trust_remote_code: bool = False, field: str = "reward_model_name_or_path", **kwargs: Any) -> nn.Module:
    """`AutoModelForSequenceClassification.from_pretrained` with a user-facing error."""
    from transformers import AutoModelForSequenceClassification

    return _from_pretrained(AutoModelForSequenceClassification, name_or_path, field, trust_remote_code=trust_remote_code, **kwargs)


def load_tokenizer(name_or_path: str | Path, trust_remote_code: bool = False, field: str = "tokenizer") -> Any:
    """`AutoTokenizer.from_pretrained`; a missing pad token becomes the EOS token."""
    from transformers import AutoTokenizer

    tokenizer = _from_pretrained(AutoTokenizer, name_or_path, field, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _bundle_paths() -> Any:
    from tnd_core.data.bundle import ensure_bundle

    return ensure_bundle()


def _resolve(source: str, role: str) -> tuple[Path | str, Path | str | None]:
    """Model folder and tokenizer folder (None: the model's own) of a source string."""
    if source == "bundle" or source.startswith("bundle:"):
        variant = source.partition(":")[2]
        if role == "reward" and variant not in ("", "stage", "grammar"):
            raise ConfigError("reward_model_name_or_path", source, "must be 'bundle', 'bundle:stage', 'bundle:grammar', a hub id or a local path")
        if role != "reward" and variant:
            raise ConfigError(f"{role}_name_or_path", source, "must be 'bundle', a hub id or a local path")
        paths = _bundle_paths()
        if role == "reward":
            return (paths.reward_grammar if variant == "grammar" else paths.reward_stage), paths.tokenizer
        return getattr(paths, role), paths.tokenizer
    return source, None


def _config_flag(config: Any) -> bool:
    return bool(getattr(config, "trust_remote_code", False))


def load_teacher(source: str, config: Any = None) -> TeacherModel:
    """Teacher from 'bundle', a hub id or a local path."""
    model_path, tok_path = _resolve(source, "teacher")
    remote = _config_flag(config)
    model = load_causal_lm(model_path, trust_remote_code=remote, field="teacher_name_or_path")
    tokenizer = load_tokenizer(tok_path or model_path, trust_remote_code=remote, field="teacher_name_or_path")
    return TeacherModel(model, tokenizer)


def load_student(source: str, config: Any = None) -> StudentModel:
    """Student (value head included when saved beside it) from 'bundle', a hub id or a local path."""
    model_path, tok_path = _resolve(source, "student")
    remote = _config_flag(config)
    tokenizer = load_tokenizer(tok_path or model_path, trust_remote_code=remote, field="student_name_or_path")
    try:
        return StudentModel.from_pretrained(model_path, trust_remote_code=remote, tokenizer=tokenizer)
    except ConfigError as exc:
        raise ConfigError("student_name_or_path", source, exc.allowed) from exc


def load_reward_model(source: str, config: Any = None) -> RewardModel:
    """Reward model from 'bundle' (stage regressor), 'bundle:grammar', a hub id or a local path."""
    model_path, tok_path = _resolve(source, "reward")
    remote = _config_flag(config)
    model = load_sequence_classifier(model_path, trust_remote_code=remote, field="reward_model_name_or_path")
    tokenizer = load_tokenizer(tok_path or model_path, trust_remote_code=remote, field="reward_model_name_or_path")
    try:
        return RewardModel(model, tokenizer)
    except ConfigError as exc:
        raise ConfigError("reward_model_name_or_path", source, exc.allowed) from exc


_REQUIRED = {
    "teacher": ("get_teacher_logits", "generate"),
    "student": ("get_student_logits", "generate", "save_pretrained", "parameters"),
}


def _missing(obj: Any, role: str) -> str:
    return ", ".join(n for n in _REQUIRED[role] if not hasattr(obj, n)) or "torch.nn.Module"


def as_teacher(obj: Any, tokenizer: Any = None) -> TeacherLike:
    """A TeacherLike from a wrapper, any object with its methods, a causal LM (+ tokenizer) or a path."""
    if isinstance(obj, (str, Path)):
        return load_teacher(str(obj))
    if isinstance(obj, TeacherLike):
        return obj
    if isinstance(obj, nn.Module) and hasattr(obj, "generate"):
        return TeacherModel(obj, tokenizer)
    raise TndError(f"teacher: {type(obj).__name__} is not a teacher; it lacks {_missing(obj, 'teacher')} (pass a TeacherModel, a causal LM, or a path)")


def as_student(obj: Any, tokenizer: Any = None) -> StudentLike:
    """A StudentLike from a wrapper, any module with its methods, a causal LM (+ tokenizer) or a path."""
    if isinstance(obj, (str, Path)):
        return load_student(str(obj))
    if isinstance(obj, StudentLike) and isinstance(obj, nn.Module):
        if getattr(obj, "tokenizer", None) is None and tokenizer is not None:
            obj.tokenizer = tokenizer
        return obj
    if isinstance(obj, nn.Module) and hasattr(obj, "generate"):
        return StudentModel(obj, tokenizer)
    raise TndError(f"student: {type(obj).__name__} is not a trainable student; it lacks {_missing(obj, 'student')} (pass a StudentModel, a causal LM, or a path)")


def as_reward_model(obj: Any, tokenizer: Any = None) -> RewardLike:
    """A RewardLike from a wrapper, any object with `score_texts`, a sequence classifier (+ tokenizer) or a path."""
    if isinstance(obj, (str, Path)):
        return load_reward_model(str(obj))
    if isinstance(obj, RewardLike):
        return obj
    if isinstance(obj, nn.Module):
        return RewardModel(obj, tokenizer)
    raise TndError(f"reward_model: {type(obj).__name__} cannot score text; it needs a score_texts(texts) method (pass a RewardModel, a sequence classifier, or a path)")
