"""Each role's model (teacher, student, reward model) from a local folder or hub id, or wrapped from an object."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from tnd_core.errors import ConfigError, TndError
from tnd_core.models.loading import load_causal_lm, load_sequence_classifier, load_tokenizer
from tnd_core.models.reward import RewardLike, RewardModel
from tnd_core.models.student import StudentLike, StudentModel
from tnd_core.models.teacher import TeacherLike, TeacherModel


def load_teacher(
    model: str | Path, tokenizer: str | Path | None = None, trust_remote_code: bool = False
) -> TeacherModel:
    """Teacher from a local folder or hub id; the tokenizer from `tokenizer` (default: the model's own)."""
    lm = load_causal_lm(model, trust_remote_code=trust_remote_code, field="teacher_name_or_path")
    tok = load_tokenizer(tokenizer or model, trust_remote_code=trust_remote_code, field="teacher_name_or_path")
    return TeacherModel(lm, tok)


def load_student(
    model: str | Path, tokenizer: str | Path | None = None, trust_remote_code: bool = False
) -> StudentModel:
    """Student (value head included when saved beside it) from a local folder or hub id."""
    tok = load_tokenizer(tokenizer or model, trust_remote_code=trust_remote_code, field="student_name_or_path")
    try:
        return StudentModel.from_pretrained(model, trust_remote_code=trust_remote_code, tokenizer=tok)
    except ConfigError as exc:
        raise ConfigError("student_name_or_path", str(model), exc.allowed) from exc


def load_reward_model(
    model: str | Path, tokenizer: str | Path | None = None, trust_remote_code: bool = False
) -> RewardModel:
    """Reward model (a sequence classifier with one output) from a local folder or hub id."""
    classifier = load_sequence_classifier(model, trust_remote_code=trust_remote_code, field="reward_model_name_or_path")
    tok = load_tokenizer(tokenizer or model, trust_remote_code=trust_remote_code, field="reward_model_name_or_path")
    try:
        return RewardModel(classifier, tok)
    except ConfigError as exc:
        raise ConfigError("reward_model_name_or_path", str(model), exc.allowed) from exc


def same_vocabulary(tokenizer: Any, other: Any) -> bool:
    """Whether two tokenizers map the same strings to the same ids (token-level KL and distillation need it)."""
    if tokenizer is other:
        return True
    return tokenizer.get_vocab() == other.get_vocab()


_REQUIRED = {
    "teacher": ("get_teacher_logits", "generate"),
    "student": ("get_student_logits", "generate", "save_pretrained", "parameters"),
}


def _missing(obj: Any, role: str) -> str:
    return ", ".join(n for n in _REQUIRED[role] if not hasattr(obj, n)) or "torch.nn.Module"


def as_teacher(obj: Any, tokenizer: Any = None) -> TeacherLike:
    """A TeacherLike from a wrapper, any object with its methods, a causal LM (+ tokenizer) or a path."""
    if isinstance(obj, (str, Path)):
        return load_teacher(obj)
    if isinstance(obj, TeacherLike):
        return obj
    if isinstance(obj, nn.Module) and hasattr(obj, "generate"):
        return TeacherModel(obj, tokenizer)
    raise TndError(
        f"teacher: {type(obj).__name__} is not a teacher; it lacks {_missing(obj, 'teacher')} "
        "(pass a TeacherModel, a causal LM, or a path)"
    )


def as_student(obj: Any, tokenizer: Any = None) -> StudentLike:
    """A StudentLike from a wrapper, any module with its methods, a causal LM (+ tokenizer) or a path."""
    if isinstance(obj, (str, Path)):
        return load_student(obj)
    if isinstance(obj, StudentLike) and isinstance(obj, nn.Module):
        if getattr(obj, "tokenizer", None) is None and tokenizer is not None:
            obj.tokenizer = tokenizer
        return obj
    if isinstance(obj, nn.Module) and hasattr(obj, "generate"):
        return StudentModel(obj, tokenizer)
    raise TndError(
        f"student: {type(obj).__name__} is not a trainable student; it lacks {_missing(obj, 'student')} "
        "(pass a StudentModel, a causal LM, or a path)"
    )


def as_reward_model(obj: Any, tokenizer: Any = None) -> RewardLike:
    """A RewardLike from a wrapper, any object with `score_texts`, a sequence classifier (+ tokenizer) or a path."""
    if isinstance(obj, (str, Path)):
        return load_reward_model(obj)
    if isinstance(obj, RewardLike):
        return obj
    if isinstance(obj, nn.Module):
        return RewardModel(obj, tokenizer)
    raise TndError(
        f"reward_model: {type(obj).__name__} cannot score text; it needs a score_texts(texts) method "
        "(pass a RewardModel, a sequence classifier, or a path)"
    )
