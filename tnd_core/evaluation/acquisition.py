"""Age of acquisition of a word from its surprisal curve (pure functions; docs/ALGORITHM.md, "Word acquisition").

A curve is the word's surprisal (bits) at each evaluation step. Its status comes from the threshold:
*known at start* when every value is below it, *not acquired* when the last value is not, *acquired*
otherwise. The age of an acquired word is, by `method`:

- ``"threshold"``: the step where the curve crosses the threshold for the last time, going down (after
  it, every value is below), interpolated linearly in log(step) between the two evaluations around it;
- ``"sigmoid"`` (Chang and Bergen's neural age of acquisition): a sigmoid in log10(step) is fitted by
  least squares, `s(x) = final + (initial - final) / (1 + exp(k * (x - m)))`, and the age is `10**m`,
  the step where the fit is halfway between its initial and final levels. The fit is used when there are
  at least 4 scored evaluations, it falls (initial > final, k > 0), its midpoint lies strictly between
  the first and last evaluated steps (on their edge, the fall lies outside them) and it explains at
  least half of the variance (R^2 >= 0.5); otherwise the threshold age is given, and `method` of the
  result says so.

A known-at-start word's age is its first evaluated step; a word not acquired has no age.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from tnd_core.errors import ConfigError

METHODS = ("threshold", "sigmoid")
ACQUIRED, KNOWN_AT_START, NOT_ACQUIRED, UNSCORED = "acquired", "known at start", "not acquired", "unscored"
MIN_SIGMOID_POINTS = 4
MIN_SIGMOID_R2 = 0.5
# The sigmoid's search grid; steepness is per the evaluated span of log10(step): 0.5 is nearly a line,
# 200 a step between two evaluations.
_COARSE_MIDPOINTS, _COARSE_STEEPNESS, _FINE_POINTS = 25, 14, 21
_STEEPNESS_RANGE = (0.5, 200.0)


@dataclass(frozen=True)
class Acquisition:
    """A word's acquisition: `status` (acquired, known at start, not acquired, unscored), `age` in steps
    (None unless acquired or known at start) and the `method` that gave the age."""

    status: str
    age: float | None
    method: str


@dataclass(frozen=True)
class SigmoidFit:
    """Surprisal = final + (initial - final) / (1 + exp(steepness * (log10(step) - midpoint)))."""

    initial: float
    final: float
    midpoint: float
    steepness: float
    r2: float

    @property
    def midpoint_step(self) -> float:
        return float(10.0**self.midpoint)


def _scored(steps: Sequence[float], surprisal: Sequence[float | None]) -> tuple[np.ndarray, np.ndarray]:
    if len(steps) != len(surprisal):
        raise ConfigError("surprisal", len(surprisal), f"one value per step ({len(steps)} steps)")
    x = np.asarray(steps, dtype=float)
    y = np.array([math.nan if v is None else v for v in surprisal], dtype=float)
    keep = np.isfinite(y) & (x > 0)
    x, y = x[keep], y[keep]
    order = np.argsort(x, kind="stable")
    return x[order], y[order]


def threshold_age(steps: Sequence[float], surprisal: Sequence[float | None], threshold: float) -> Acquisition:
    """The status and the threshold-crossing age (module docstring); steps must be > 0, None values are skipped."""
    x, y = _scored(steps, surprisal)
    if len(y) == 0:
        return Acquisition(UNSCORED, None, "threshold")
    below = y < threshold
    if below.all():
        return Acquisition(KNOWN_AT_START, float(x[0]), "threshold")
    if not below[-1]:
        return Acquisition(NOT_ACQUIRED, None, "threshold")
    last_above = int(np.flatnonzero(~below)[-1])
    x0, x1, y0, y1 = np.log10(x[last_above]), np.log10(x[last_above + 1]), y[last_above], y[last_above + 1]
    fraction = (y0 - threshold) / (y0 - y1)  # y0 >= threshold > y1, so 0 <= fraction < 1
    return Acquisition(ACQUIRED, float(10.0 ** (x0 + fraction * (x1 - x0))), "threshold")


def _best_on_grid(x: np.ndarray, y: np.ndarray, midpoints: np.ndarray, steepness: np.ndarray) -> tuple[float, ...]:
    """(squared error, initial, final, midpoint, steepness) of the best grid point; for each (midpoint,
    steepness) the two levels are the exact least-squares solution, so the search needs no starting point."""
    grid_m, grid_k = (g.ravel() for g in np.meshgrid(midpoints, steepness, indexing="ij"))
    # rising[g, i]: 0 before the midpoint, 1 after it; the curve is initial * (1 - rising) + final * rising
    rising = 1.0 / (1.0 + np.exp(np.clip(-grid_k[:, None] * (x[None, :] - grid_m[:, None]), -60, 60)))
    falling = 1.0 - rising
    aa, ab, bb = (falling**2).sum(1), (falling * rising).sum(1), (rising**2).sum(1)
    ay, by = falling @ y, rising @ y
    det = aa * bb - ab**2
    usable = det > 1e-12 * np.maximum(aa * bb, 1e-300)
    safe = np.where(usable, det, 1.0)
    initial, final = (bb * ay - ab * by) / safe, (aa * by - ab * ay) / safe
    fitted = initial[:, None] * falling + final[:, None] * rising
    errors = np.where(usable, ((fitted - y[None, :]) ** 2).sum(1), np.inf)
    g = int(np.argmin(errors))
    return float(errors[g]), float(initial[g]), float(final[g]), float(grid_m[g]), float(grid_k[g])


def fit_sigmoid(steps: Sequence[float], surprisal: Sequence[float | None]) -> SigmoidFit | None:
    """The least-squares sigmoid in log10(step) (module docstring): a coarse grid of midpoints (within the
    evaluated steps) and steepnesses, then a finer one around the best; None with fewer than 4 scored
    points or a flat curve."""
    x, y = _scored(steps, surprisal)
    if len(y) < MIN_SIGMOID_POINTS:
        return None
    x = np.log10(x)
    total = float(((y - y.mean()) ** 2).sum())
    span = x[-1] - x[0]
    if total <= 0 or span <= 0:
        return None
    midpoints = np.linspace(x[0], x[-1], _COARSE_MIDPOINTS)
    steepness = np.geomspace(_STEEPNESS_RANGE[0], _STEEPNESS_RANGE[1], _COARSE_STEEPNESS) / span
    _, _, _, m, k = _best_on_grid(x, y, midpoints, steepness)
    m_cell, k_ratio = midpoints[1] - midpoints[0], steepness[1] / steepness[0]
    fine_m = np.linspace(max(x[0], m - m_cell), min(x[-1], m + m_cell), _FINE_POINTS)
    fine_k = np.geomspace(k / k_ratio, k * k_ratio, _FINE_POINTS)
    error, initial, final, midpoint, k = _best_on_grid(x, y, fine_m, fine_k)
    if not math.isfinite(error):
        return None
    return SigmoidFit(initial, final, midpoint, k, 1.0 - error / total)


def sigmoid_age(steps: Sequence[float], surprisal: Sequence[float | None], threshold: float) -> Acquisition:
    """The status from the threshold, the age from a good sigmoid fit, else from the threshold crossing."""
    by_threshold = threshold_age(steps, surprisal, threshold)
    if by_threshold.status != ACQUIRED:
        return by_threshold
    fit = fit_sigmoid(steps, surprisal)
    if fit is None or not (fit.initial > fit.final and fit.r2 >= MIN_SIGMOID_R2):
        return by_threshold
    x, _ = _scored(steps, surprisal)
    # a midpoint on the edge of the evaluated steps means the fall lies outside them: no age from the fit
    if not (math.log10(x[0]) < fit.midpoint < math.log10(x[-1])):
        return by_threshold
    return Acquisition(ACQUIRED, fit.midpoint_step, "sigmoid")


def acquisition_age(
    steps: Sequence[float], surprisal: Sequence[float | None], threshold: float, method: str = "threshold"
) -> Acquisition:
    """A word's acquisition by `method` ('threshold' or 'sigmoid', module docstring)."""
    if method not in METHODS:
        raise ConfigError("method", method, f"one of {', '.join(METHODS)}")
    if not (math.isfinite(threshold) and threshold > 0):
        raise ConfigError("threshold", threshold, "a number of bits > 0")
    return (sigmoid_age if method == "sigmoid" else threshold_age)(steps, surprisal, threshold)


def acquisition_ages(
    steps: Sequence[float],
    curves: dict[str, Sequence[float | None]],
    threshold: float,
    method: str = "threshold",
) -> dict[str, Acquisition]:
    """`acquisition_age` of every word of `curves` ({word: one surprisal per step})."""
    return {word: acquisition_age(steps, curve, threshold, method) for word, curve in curves.items()}


def age_order(ages: dict[str, Acquisition]) -> list[str]:
    """Words from earliest to latest acquired: known at start first, then acquired by age, then not
    acquired, then unscored; ties in word order."""
    rank = {KNOWN_AT_START: 0, ACQUIRED: 1, NOT_ACQUIRED: 2, UNSCORED: 3}

    def key(word: str) -> tuple[int, float, str]:
        a = ages[word]
        return rank[a.status], a.age if a.age is not None else math.inf, word

    return sorted(ages, key=key)
