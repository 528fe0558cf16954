"""Model wrappers: teacher (frozen), student (policy + value head), reward model; each with a Protocol."""

from tnd_core.models.reward import RewardLike, RewardModel
from tnd_core.models.roles import (
    as_reward_model,
    as_student,
    as_teacher,
    load_reward_model,
    load_student,
    load_teacher,
)
from tnd_core.models.student import StudentLike, StudentModel, ValueHead
from tnd_core.models.teacher import TeacherLike, TeacherModel

__all__ = [
    "RewardLike",
    "RewardModel",
    "StudentLike",
    "StudentModel",
    "TeacherLike",
    "TeacherModel",
    "ValueHead",
    "as_reward_model",
    "as_student",
    "as_teacher",
    "load_reward_model",
    "load_student",
    "load_teacher",
]
