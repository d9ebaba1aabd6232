"""Statistics for the report: bootstrap confidence intervals and McNemar's paired test. Pure numpy/scipy."""

from __future__ import annotations

import numpy as np


def bootstrap_ci(correct: np.ndarray, n_resamples: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile CI of accuracy, resampling problems.

    ``correct`` is (problems,) or (seeds, problems); with several seeds each resample draws problems
    and averages over seeds, so the interval covers problem sampling with seed variation folded in.
    """
    matrix = np.atleast_2d(np.asarray(correct, dtype=float))
    n_problems = matrix.shape[1]
    if n_problems == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, n_problems, size=(n_resamples, n_problems))
    per_problem = matrix.mean(axis=0)
    estimates = per_problem[picks].mean(axis=1)
    alpha = (1 - level) / 2
    return float(np.quantile(estimates, alpha)), float(np.quantile(estimates, 1 - alpha))


def mcnemar_exact(a_correct: np.ndarray, b_correct: np.ndarray) -> tuple[int, int, float]:
    """Exact two-sided McNemar test on paired outcomes: (only A right, only B right, p-value)."""
    from scipy.stats import binomtest

    a = np.asarray(a_correct, dtype=bool)
    b = np.asarray(b_correct, dtype=bool)
    only_a = int(np.sum(a & ~b))
    only_b = int(np.sum(~a & b))
    discordant = only_a + only_b
    p_value = 1.0 if discordant == 0 else float(binomtest(only_a, discordant, 0.5).pvalue)
    return only_a, only_b, p_value


def difficulty_bucket(steps: int) -> str:
    if steps <= 2:
        return "1-2 steps"
    if steps <= 4:
        return "3-4 steps"
    if steps <= 6:
        return "5-6 steps"
    return "7+ steps"
