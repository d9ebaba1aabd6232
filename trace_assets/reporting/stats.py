"""Statistics for the report: bootstrap confidence intervals and McNemar's paired test. Pure numpy/scipy/polars."""

from __future__ import annotations

import numpy as np
import polars as pl

from trace_assets.reporting.schemas import AccuracySchema
from trace_assets.tables import frame_of

ALPHA = 0.05


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


def accuracy_table(eval_results: pl.DataFrame, seed: int = 0) -> pl.DataFrame:
    """Accuracy per dataset x student with a bootstrap 95% CI over problems (seeds averaged per problem)."""
    rows = []
    for (dataset, student), group in eval_results.group_by(["dataset", "student"], maintain_order=True):
        pivot = group.pivot(on="seed", index="problem_id", values="is_correct").drop("problem_id")
        matrix = pivot.to_numpy().T.astype(float)  # seeds x problems
        low, high = bootstrap_ci(matrix, seed=seed)
        rows.append({
            "dataset": dataset, "student": student, "n": matrix.shape[1], "n_seeds": matrix.shape[0],
            "accuracy": float(matrix.mean()), "ci_low": low, "ci_high": high,
            "accuracy_strict": float(group["is_correct_strict"].mean()),
        })
    return frame_of(rows, AccuracySchema).sort(["student", "accuracy"], descending=[False, True])


def paired_tests(eval_results: pl.DataFrame, accuracy: pl.DataFrame) -> pl.DataFrame:
    """McNemar's exact test of each dataset against the best one, per student, on the same problems (seed-majority)."""
    rows = []
    for student in accuracy["student"].unique(maintain_order=True):
        ranked = accuracy.filter(pl.col("student") == student).sort("accuracy", descending=True)
        if ranked.height < 2:
            continue
        best = ranked["dataset"][0]
        majority = (
            eval_results.filter(pl.col("student") == student)
            .group_by(["dataset", "problem_id"]).agg(pl.col("is_correct").mean().alias("p"))
            .with_columns((pl.col("p") >= 0.5).alias("ok"))
        )
        best_ok = majority.filter(pl.col("dataset") == best).select("problem_id", pl.col("ok").alias("best"))
        for dataset in ranked["dataset"][1:]:
            paired = majority.filter(pl.col("dataset") == dataset).join(best_ok, on="problem_id")
            only_best, only_other, p = mcnemar_exact(paired["best"].to_numpy(), paired["ok"].to_numpy())
            rows.append({"student": student, "best": best, "dataset": dataset, "n": paired.height,
                         "only_best_right": only_best, "only_dataset_right": only_other, "p_value": p,
                         "distinguishable": p < ALPHA})
    return pl.DataFrame(rows, schema={"student": pl.Utf8, "best": pl.Utf8, "dataset": pl.Utf8, "n": pl.Int64,
                                      "only_best_right": pl.Int64, "only_dataset_right": pl.Int64,
                                      "p_value": pl.Float64, "distinguishable": pl.Boolean})
