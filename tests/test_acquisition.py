"""Age of acquisition on synthetic surprisal curves with known answers (tnd_core.evaluation.acquisition)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tnd_core.errors import ConfigError
from tnd_core.evaluation.acquisition import (
    ACQUIRED,
    KNOWN_AT_START,
    NOT_ACQUIRED,
    UNSCORED,
    Acquisition,
    acquisition_age,
    acquisition_ages,
    age_order,
    fit_sigmoid,
    threshold_age,
)

STEPS = np.arange(10, 1001, 10)


def sigmoid_curve(steps, midpoint_step, initial=10.0, final=2.0, steepness=6.0):
    x = np.log10(np.asarray(steps, dtype=float))
    return final + (initial - final) / (1.0 + np.exp(steepness * (x - math.log10(midpoint_step))))


@pytest.mark.parametrize("midpoint", [40.0, 200.0, 650.0])
def test_sigmoid_fit_recovers_a_known_midpoint(midpoint):
    fit = fit_sigmoid(STEPS, sigmoid_curve(STEPS, midpoint))
    assert fit is not None
    assert fit.midpoint_step == pytest.approx(midpoint, rel=0.02)
    assert fit.initial == pytest.approx(10.0, abs=0.1) and fit.final == pytest.approx(2.0, abs=0.1)
    assert fit.r2 > 0.999
    age = acquisition_age(STEPS, sigmoid_curve(STEPS, midpoint), threshold=7.0, method="sigmoid")
    assert age == Acquisition(ACQUIRED, pytest.approx(midpoint, rel=0.02), "sigmoid")


def test_threshold_age_is_the_crossing_interpolated_in_log_step():
    # 8 bits at step 100, 6 at step 400: 7 bits is halfway, in log(step) the step 200
    age = threshold_age([100, 400, 800], [8.0, 6.0, 5.0], threshold=7.0)
    assert age.status == ACQUIRED and age.age == pytest.approx(200.0)
    # on the sigmoid, the threshold crossing is where the curve equals the threshold, solved exactly
    x = math.log10(200.0) + math.log((10.0 - 7.0) / (7.0 - 2.0)) / 6.0
    dense = threshold_age(STEPS, sigmoid_curve(STEPS, 200.0), threshold=7.0)
    assert dense.age == pytest.approx(10.0**x, rel=0.02)


def test_noisy_sigmoid_keeps_its_midpoint_and_the_last_crossing_counts():
    rng = np.random.default_rng(0)
    noisy = sigmoid_curve(STEPS, 200.0) + rng.normal(0.0, 0.4, len(STEPS))
    by_sigmoid = acquisition_age(STEPS, noisy, 7.0, "sigmoid")
    assert by_sigmoid.method == "sigmoid" and by_sigmoid.age == pytest.approx(200.0, rel=0.15)
    # a curve that dips below the threshold early and comes back up is acquired at its last crossing
    dip = [9.0, 6.5, 8.0, 8.0, 6.0, 5.0]
    steps = [10, 20, 40, 80, 160, 320]
    age = threshold_age(steps, dip, 7.0)
    assert age.status == ACQUIRED and 80 < age.age < 160


def test_never_crossing_and_known_at_start_and_unscored():
    flat_high = [9.0] * 10
    assert acquisition_age(STEPS[:10], flat_high, 7.0, "sigmoid") == Acquisition(NOT_ACQUIRED, None, "threshold")
    # falling but still above the threshold at the end: not acquired, whatever a sigmoid says
    falling = sigmoid_curve(STEPS, 200.0, initial=12.0, final=7.5)
    assert acquisition_age(STEPS, falling, 7.0, "sigmoid").status == NOT_ACQUIRED
    known = sigmoid_curve(STEPS, 200.0, initial=5.0, final=2.0)
    assert acquisition_age(STEPS, known, 7.0, "sigmoid") == Acquisition(KNOWN_AT_START, 10.0, "threshold")
    assert acquisition_age([10, 20], [None, None], 7.0) == Acquisition(UNSCORED, None, "threshold")


def test_sigmoid_falls_back_to_the_threshold_when_the_fit_cannot_be_trusted():
    # three points: too few for a sigmoid
    few = acquisition_age([10, 100, 1000], [9.0, 8.0, 3.0], 7.0, "sigmoid")
    assert few.method == "threshold" and few.status == ACQUIRED
    # a zig-zag that ends below the threshold: no sigmoid explains half of its variance
    zigzag = [9.0, 3.0, 9.0, 3.0, 9.0, 3.0, 9.0, 3.0]
    steps = [10 * 2**i for i in range(8)]
    assert acquisition_age(steps, zigzag, 7.0, "sigmoid").method == "threshold"


def test_missing_values_are_skipped_and_steps_sorted():
    with_gaps = [9.0, None, float("nan"), 8.0, 6.0]
    age = threshold_age([10, 20, 30, 100, 400], with_gaps, 7.0)
    assert age.age == pytest.approx(200.0)
    shuffled = threshold_age([400, 100], [6.0, 8.0], 7.0)
    assert shuffled.age == pytest.approx(200.0)


def test_bad_inputs_name_the_field():
    with pytest.raises(ConfigError, match="method"):
        acquisition_age([1], [1.0], 7.0, method="median")
    with pytest.raises(ConfigError, match="threshold"):
        acquisition_age([1], [1.0], 0.0)
    with pytest.raises(ConfigError, match="surprisal"):
        threshold_age([1, 2], [1.0], 7.0)


def test_ages_of_many_words_and_their_order():
    curves = {
        "late": list(sigmoid_curve(STEPS, 600.0)),
        "early": list(sigmoid_curve(STEPS, 50.0)),
        "never": [9.0] * len(STEPS),
        "known": [1.0] * len(STEPS),
        "gone": [None] * len(STEPS),
    }
    ages = acquisition_ages(STEPS, curves, 7.0, "sigmoid")
    assert ages["early"].age < ages["late"].age
    assert age_order(ages) == ["known", "early", "late", "never", "gone"]


def test_a_fall_before_the_first_evaluation_gets_no_sigmoid_age():
    # 'big' in a 20-step tiny-bundle TnD run: most of the fall happened before the first evaluation, so
    # the best sigmoid puts its midpoint on the first step; the age is the threshold crossing instead
    steps = [2, 4, 6, 8, 10, 12, 14, 16, 18, 20]
    big = [7.679, 6.455, 6.126, 6.38, 6.697, 6.288, 6.269, 5.889, 5.921, 5.949]
    fit = fit_sigmoid(steps, big)
    assert fit.midpoint_step == pytest.approx(2.0) and fit.r2 > 0.5
    age = acquisition_age(steps, big, 7.0, "sigmoid")
    assert age.method == "threshold" and age.status == ACQUIRED and 2.0 < age.age < 4.0
