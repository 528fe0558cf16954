"""Integration: `tnd train` with the bundle's default settings teaches the from-scratch student.

The short version of scripts/integration_run.py (docs/INTEGRATION.md): the tiny bundle, its
recommended config, 100 steps; the direction of every learning curve is asserted.
"""

from __future__ import annotations

import json

import pytest

from tnd_core.cli import main as tnd_main


@pytest.mark.slow
def test_tnd_train_on_the_bundle_raises_grammaticality_and_words_and_lowers_kl(tiny_bundle, tmp_path):
    from tnd_core.evaluation import bundle_evaluator
    from tnd_core.models import load_student, load_teacher

    evaluator = bundle_evaluator(tiny_bundle)
    student = load_student(tiny_bundle.student, tiny_bundle.tokenizer)
    start = evaluator(student, load_teacher(tiny_bundle.teacher, tiny_bundle.tokenizer))

    run_dir = tmp_path / "run"
    assert tnd_main(["train", "--output_dir", str(run_dir), "--steps", "100", "--eval_steps", "50"]) == 0

    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evaluations = [r for r in rows if "eval/grammaticality" in r]
    assert [r["step"] for r in evaluations] == [50, 100]
    end = evaluations[-1]
    assert start["eval/grammaticality"] < 0.05
    assert end["eval/grammaticality"] > start["eval/grammaticality"] + 0.15
    assert end["eval/words_acquired"] > start["eval/words_acquired"] + 10
    assert end["eval/teacher_student_kl"] < 0.6 * start["eval/teacher_student_kl"]
    assert end["eval/perplexity"] < 0.5 * start["eval/perplexity"]
