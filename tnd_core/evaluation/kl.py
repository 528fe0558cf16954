"""Teacher-to-student KL on held-out text: mean over predicted positions of KL(p_teacher || p_student)."""

from __future__ import annotations

from typing import Any

from tnd_core.divergence import kd_divergence
from tnd_core.errors import TndError
from tnd_core.evaluation.common import as_language_model, batches, encode_sentences, evaluation_mode


def teacher_student_kl(
    teacher: Any, student: Any, sentences: list[str], tokenizer: Any = None, batch_size: int = 64
) -> float:
    """Mean KL(teacher || student) in nats per token, on the student's tokenization of `sentences`.

    Both models must share the vocabulary (the logits must have the same width).
    """
    student_lm = as_language_model(student, tokenizer)
    teacher_lm = as_language_model(teacher, student_lm.tokenizer)
    total, count = 0.0, 0
    with evaluation_mode(student_lm), evaluation_mode(teacher_lm):
        for chunk in batches(sentences, batch_size):
            input_ids, mask = encode_sentences(student_lm.tokenizer, chunk, student_lm.device)
            student_logits = student_lm.logits(input_ids, mask)[:, :-1]
            teacher_logits = teacher_lm.logits(input_ids.to(teacher_lm.device), mask.to(teacher_lm.device))[:, :-1]
            if teacher_logits.size(-1) != student_logits.size(-1):
                raise TndError(
                    "teacher-student KL needs a shared vocabulary: teacher logits have "
                    f"{teacher_logits.size(-1)} entries, student logits {student_logits.size(-1)}"
                )
            per_token = kd_divergence(student_logits, teacher_logits.to(student_logits.device), "forward_kl")
            predicted = mask[:, 1:].bool()
            total += float(per_token[predicted].sum())
            count += int(predicted.sum())
    return total / count if count else float("nan")
