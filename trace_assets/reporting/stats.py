"""Statistics for the report. Pure functions over numpy/scipy/polars; no Dagster.

The unit of analysis is one student trained on one dataset ("an arm"), evaluated with several
training seeds on the same test problems. An arm's accuracy means: the expected accuracy over the
distribution of training runs (seeds) and over the population of problems the test set samples.
Two sources of noise therefore enter every interval and every test:

* problem sampling: which problems happen to be in the test set, and which way each run's answer
  to each of them falls;
* training noise: a fresh seed gives a different model (seed-to-seed spread of accuracy).

Method (``METHOD`` says it in one line for the report). An arm's outcomes form a seeds x problems
0/1 matrix, a crossed two-way layout with mean squares MS_problems, MS_seeds, MS_residual. The
variance of its mean accuracy is

    Var = MS_problems / (n k)  +  sigma2_seed / k

the first term being the problem-level variance of the seed-averaged outcomes over n (it contains
the per-run answer noise too), the second the training noise: sigma2_seed is the variance of one
run's accuracy from seed to seed, by moments (MS_seeds - MS_residual) / n. Three seeds estimate it
from two degrees of freedom, too few for a t test after a multiplicity correction (a t quantile
with 2 df at Holm's first step, 0.05/27, is 22), and the Welch-Satterthwaite t interval with an
arm's own two-df estimate is liberal in the tail, up to ten times the nominal rate (measured on
paper.yaml's shape at logit SD 0.15-0.3: coverage 0.92-0.93, family-wise false positives 0.09). So training noise is modelled as in a mixed model with a common
arm x seed random effect per student: a logit shift of variance sigma2_logit shared by the
student's trained arms, estimated by pooling their moment estimates (2 df per arm, 16-18 per
student); arm a's seed variance is sigma2_logit * g_a^2, with g_a = mean over problems of
p(1 - p), the slope of accuracy in a logit shift, so arms at different accuracies share the
noise on the scale the noise lives on. The interval is mean +- t(0.975, df) sqrt(Var), df by
Satterthwaite. The untrained "base" arm has no training noise and is not pooled: its own estimate
(zero when its seeds' answers are identical) is used. The price of pooling is an assumption: arms of
one student are about equally noisy. Measured (calibration.py's World.seed_sd_scale): arms
alternating between logit SD 0.15 and 0.3 keep the family-wise rate at 0.05; one arm three times
as noisy as the rest, or arms alternating 0.1 and 0.45, raise it to 0.06-0.07. sd_seeds, printed
per arm, shows such an arm.

A difference between two arms is paired by problem (same problems): its problem term is the
variance over problems of the difference of seed-averaged outcomes, over n, and each arm adds its
seed variance / k (the seeds of two arms are independent training runs that only share a number,
so nothing is paired across seeds). The test is the matching t test with Satterthwaite df; p-values
are Holm-adjusted across the whole family (student x contrast). ``trace-assets calibrate``
(trace_assets/reporting/calibration.py) measures what all this achieves.

An arm with a single seed has no estimate of training noise (and a student with single-seed arms
only has none to pool): its interval and tests are conditional on that one training run, problem
sampling only; ``noise_floor_note`` says so for the report.

The numpy cores (``arm_terms``, ``seed_noise``, ``arm_estimate``, ``contrast_estimate``, ``holm``)
take arrays with any leading batch axes, so the calibration simulation runs thousands of studies
through the same arithmetic as the polars wrappers (``accuracy_summary``, ``contrast_table``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from trace_assets.experiment import BASE_DATASETS, BASELINE
from trace_assets.reporting.schemas import AccuracySchema
from trace_assets.tables import frame_of

LEVEL = 0.95
ALPHA = 0.05
METHOD = (
    "accuracy = mean over training seeds and problems; 95% t interval from a crossed problems x seeds "
    "variance-components model: problem-level variance of seed-averaged outcomes / n + seed-to-seed variance / k, "
    "the training noise a logit shift whose variance is pooled over the student's trained arms (moment estimates, "
    "Satterthwaite df); contrasts paired by problem with both arms' seed variance, t test, Holm-adjusted across all "
    "student x contrast pairs; distinguishable when adjusted p < 0.05"
)


# --------------------------------------------------------------------------------------------------
# numpy cores: outcomes are (..., seeds, problems) 0/1 arrays; leading axes are independent batches
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    """Point estimate, its variance and Satterthwaite df; arrays over any leading batch axes."""

    estimate: np.ndarray
    variance: np.ndarray
    df: np.ndarray

    def interval(self, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
        from scipy.stats import t

        half = t.ppf(0.5 + level / 2, self.df) * np.sqrt(self.variance)
        return self.estimate - half, self.estimate + half

    def p_value(self) -> np.ndarray:
        """Two-sided p of estimate = 0 (1 when estimate and variance are both 0, 0 when only the variance is)."""
        from scipy.stats import t

        se = np.sqrt(self.variance)
        with np.errstate(divide="ignore", invalid="ignore"):
            stat = np.where(se > 0, np.abs(self.estimate) / np.where(se > 0, se, 1.0), np.where(self.estimate == 0, 0.0, np.inf))
        return np.where(np.isnan(self.variance), np.nan, 2 * t.sf(stat, self.df))


@dataclass(frozen=True)
class ArmTerms:
    """Sufficient statistics of one arm's (..., k, n) outcomes: mean squares of the crossed layout
    and g, the slope of accuracy in a logit shift (mean over problems of p(1 - p), unbiased per problem)."""

    mean: np.ndarray
    problem_means: np.ndarray
    ms_problems: np.ndarray
    ms_seeds: np.ndarray
    ms_residual: np.ndarray
    slope: np.ndarray
    k: int
    n: int


def arm_terms(outcomes: np.ndarray) -> ArmTerms:
    """Mean squares (problems, seeds, residual) of an arm's (..., seeds, problems) outcomes."""
    y = np.asarray(outcomes, dtype=float)
    k, n = y.shape[-2:]
    batch = y.shape[:-2]
    problem_means = y.mean(axis=-2)
    seed_acc = y.mean(axis=-1)
    mean = seed_acc.mean(axis=-1) if k else np.full(batch, np.nan)
    ms_problems = k * problem_means.var(axis=-1, ddof=1) if n > 1 else np.full(batch, np.nan)
    if k > 1 and n > 1:
        ms_seeds = n * seed_acc.var(axis=-1, ddof=1)
        residual = y - problem_means[..., None, :] - seed_acc[..., :, None] + mean[..., None, None]
        ms_residual = np.square(residual).sum(axis=(-2, -1)) / ((k - 1) * (n - 1))
        slope = (problem_means * (1 - problem_means)).mean(axis=-1) * k / (k - 1)
    else:
        ms_seeds = ms_residual = np.zeros(batch)
        slope = (problem_means * (1 - problem_means)).mean(axis=-1) if n else np.zeros(batch)
    return ArmTerms(mean, problem_means, ms_problems, ms_seeds, ms_residual, slope, k, n)


@dataclass(frozen=True)
class SeedNoise:
    """Training noise of a pool of arms: the variance of a logit shift per training run, and the
    Satterthwaite denominator sum(c_i^2 MS_i^2 / df_i) of that estimate; ``df`` its degrees of freedom
    (sum of k - 1 over the pooled arms; 0: no estimate, the analysis is conditional on the runs)."""

    logit_var: np.ndarray
    denominator: np.ndarray
    df: int


def seed_noise(arms: list[ArmTerms]) -> SeedNoise:
    """Pooled moment estimate of the training noise of ``arms`` (one student's trained arms, or one arm alone).

    Per arm, sigma2_seed = (MS_seeds - MS_residual) / n estimates the seed-to-seed variance of its
    accuracy; divided by its slope g^2 it is a logit-shift variance. These are averaged with weights
    k - 1 and truncated at zero (then the estimate adds nothing to the df either).
    """
    pooled = [arm for arm in arms if arm.k > 1 and arm.n > 1]
    df = sum(arm.k - 1 for arm in pooled)
    shape = np.shape(arms[0].mean) if arms else ()
    if not pooled:
        return SeedNoise(np.zeros(shape), np.zeros(shape), 0)
    total = np.zeros(shape)
    denominator = np.zeros(shape)
    for arm in pooled:
        weight = (arm.k - 1) / df
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = np.where(arm.slope > 0, weight / (arm.n * np.square(arm.slope)), 0.0)
        total = total + scale * (arm.ms_seeds - arm.ms_residual)
        denominator = denominator + np.square(scale) * (
            np.square(arm.ms_seeds) / (arm.k - 1) + np.square(arm.ms_residual) / ((arm.k - 1) * (arm.n - 1))
        )
    positive = total > 0
    return SeedNoise(np.where(positive, total, 0.0), np.where(positive, denominator, 0.0), df)


def _estimate(value: np.ndarray, problem_term: np.ndarray, n: int, seed_parts: list[tuple[SeedNoise, np.ndarray]]) -> Estimate:
    """value with variance problem_term + sum(coefficient * noise.logit_var) and Satterthwaite df; arms
    sharing one pooled estimate must come as one (noise, summed coefficient) part."""
    if n < 2:
        nan = np.full(np.shape(value), np.nan)
        return Estimate(np.asarray(value, dtype=float), nan, nan)
    variance = problem_term + sum(c * noise.logit_var for noise, c in seed_parts)
    denominator = np.square(problem_term) / (n - 1) + sum(np.square(c) * noise.denominator for noise, c in seed_parts)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = np.where(denominator > 0, np.square(variance) / np.where(denominator > 0, denominator, 1.0), float(n - 1))
    return Estimate(np.asarray(value, dtype=float), variance, np.maximum(df, 1.0))


def arm_estimate(arm: ArmTerms, noise: SeedNoise) -> Estimate:
    """Accuracy of one arm (mean over seeds and problems), the variance of that mean under problem sampling
    plus training noise (``noise``: the arm's pool), and Satterthwaite's df."""
    problem_term = arm.ms_problems / (arm.n * max(arm.k, 1))
    return _estimate(arm.mean, problem_term, arm.n, [(noise, np.square(arm.slope) / max(arm.k, 1))])


def contrast_estimate(
    a: ArmTerms, b: ArmTerms, noise_a: SeedNoise, noise_b: SeedNoise, columns_a=slice(None), columns_b=slice(None)
) -> Estimate:
    """Difference a - b on the same problems (``columns_*`` pick them, in the same order, from each arm's
    problems). Paired by problem; each arm adds its seed variance / k (one part when both share a pool)."""
    per_problem = a.problem_means[..., columns_a] - b.problem_means[..., columns_b]
    n = per_problem.shape[-1]
    problem_term = per_problem.var(axis=-1, ddof=1) / n if n > 1 else np.full(per_problem.shape[:-1], np.nan)
    coef_a = np.square(a.slope) / max(a.k, 1)
    coef_b = np.square(b.slope) / max(b.k, 1)
    parts = [(noise_a, coef_a + coef_b)] if noise_a is noise_b else [(noise_a, coef_a), (noise_b, coef_b)]
    return _estimate(per_problem.mean(axis=-1) if n else np.full(per_problem.shape[:-1], np.nan), problem_term, n, parts)


def seed_sd(outcomes: np.ndarray) -> np.ndarray:
    """Standard deviation of per-seed accuracies (the noise floor as observed); nan with a single seed."""
    y = np.asarray(outcomes, dtype=float)
    if y.shape[-2] < 2:
        return np.full(y.shape[:-2], np.nan)
    return y.mean(axis=-1).std(axis=-1, ddof=1)


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm-adjusted p-values of a family along the last axis (leading axes: independent families).

    The arithmetic of statsmodels' ``multipletests(p, method="holm")[1]`` (sorted p times the number of
    hypotheses not yet rejected, running maximum, capped at 1; trace_assets_tests/test_stats.py checks
    they agree), vectorised over families: statsmodels runs a full ``gc.collect()`` per call, 60 ms,
    which would dominate the calibration. nan entries stay nan and are not counted in the family.
    """
    p = np.asarray(p_values, dtype=float)
    if p.size == 0:
        return p.copy()
    present = ~np.isnan(p)
    m = present.sum(axis=-1, keepdims=True)
    order = np.argsort(np.where(present, p, np.inf), axis=-1, kind="stable")
    ranked = np.take_along_axis(p, order, axis=-1)
    scaled = np.minimum((m - np.arange(p.shape[-1])) * np.where(np.isnan(ranked), 0.0, ranked), 1.0)
    running = np.maximum.accumulate(scaled, axis=-1)
    adjusted = np.empty_like(p)
    np.put_along_axis(adjusted, order, running, axis=-1)
    return np.where(present, adjusted, np.nan)


def direction(diff: float) -> str:
    """Sign of an estimated difference a - b: "a>b", "a<b" or "=" (an exact tie)."""
    return "a>b" if diff > 0 else "a<b" if diff < 0 else "="


def noise_floor_note(n_seeds: int) -> str:
    """One sentence for the report on what the seeds allow."""
    if n_seeds < 2:
        return (
            "Single training seed: there is no noise floor. Intervals and tests cover problem sampling only and "
            "are conditional on this one training run; another seed could move accuracy by more than they show."
        )
    return (
        f"{n_seeds} training seeds: sd_seeds is the seed-to-seed spread of accuracy (the noise floor); training "
        f"noise, pooled over each student's trained arms, widens every interval and test."
    )


# --------------------------------------------------------------------------------------------------
# polars wrappers used by the report
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Arm:
    matrix: np.ndarray
    problems: list[str]
    seeds: list[int]
    terms: ArmTerms


def _arm(group: pl.DataFrame) -> _Arm:
    """(seeds x problems) 0/1 matrix of one arm, keeping problems every seed answered, sorted by id."""
    wide = group.pivot(on="seed", index="problem_id", values="is_correct", aggregate_function="first")
    seeds = sorted(int(c) for c in wide.columns if c != "problem_id")
    wide = wide.drop_nulls().sort("problem_id")
    matrix = wide.select([str(s) for s in seeds]).to_numpy().T.astype(float).reshape(len(seeds), wide.height)
    return _Arm(matrix, wide["problem_id"].cast(pl.Utf8).to_list(), seeds, arm_terms(matrix))


def _arms_and_noise(eval_results: pl.DataFrame) -> tuple[dict[tuple[str, str], _Arm], dict[tuple[str, str], SeedNoise]]:
    """Every (dataset, student) arm, and the training-noise estimate each uses: pooled over the student's
    trained arms, its own for each untrained baseline."""
    arms = {key: _arm(group) for key, group in eval_results.group_by(["dataset", "student"], maintain_order=True)}
    noise = {}
    for student in {s for _, s in arms}:
        trained = [key for key in arms if key[1] == student and key[0] not in BASE_DATASETS]
        pooled = seed_noise([arms[key].terms for key in trained])
        noise.update({key: pooled for key in trained})
        for base in BASE_DATASETS:  # the untrained students have no training noise of their own to pool
            if (base, student) in arms:
                noise[(base, student)] = seed_noise([arms[(base, student)].terms])
    return arms, noise


def seed_accuracies(eval_results: pl.DataFrame) -> pl.DataFrame:
    """Accuracy of every dataset x student x seed: columns dataset, student, seed, n, accuracy."""
    return (
        eval_results.group_by(["dataset", "student", "seed"])
        .agg(pl.len().cast(pl.Int64).alias("n"), pl.col("is_correct").cast(pl.Float64).mean().alias("accuracy"))
        .sort(["student", "dataset", "seed"])
    )


def _none_if_nan(value) -> float | None:
    value = float(value)
    return None if np.isnan(value) else value


def accuracy_summary(eval_results: pl.DataFrame, seed: int = 0) -> pl.DataFrame:
    """Accuracy per dataset x student with its noise floor and 95% interval.

    Columns: dataset, student, n (problems answered by every seed), n_seeds, accuracy (mean over seeds
    and problems), sd_seeds (standard deviation of the per-seed accuracies; null with one seed), ci_low,
    ci_high (``METHOD``; null when n < 2), accuracy_strict (mean of ``is_correct_strict``; null when that
    column is absent): the ``accuracy`` table's ``AccuracySchema``. Sorted by student, then accuracy descending. ``seed`` is accepted for call
    compatibility; the interval is analytic and draws no random numbers.
    """
    del seed
    strict = "is_correct_strict" in eval_results.columns
    arms, noise = _arms_and_noise(eval_results)
    strict_means = (
        {
            (d, s): v
            for d, s, v in eval_results.group_by(["dataset", "student"])
            .agg(pl.col("is_correct_strict").cast(pl.Float64).mean())
            .iter_rows()
        }
        if strict
        else {}
    )
    rows = []
    for (dataset, student), arm in arms.items():
        estimate = arm_estimate(arm.terms, noise[(dataset, student)])
        low, high = estimate.interval()
        row = {
            "dataset": dataset,
            "student": student,
            "n": len(arm.problems),
            "n_seeds": len(arm.seeds),
            "accuracy": _none_if_nan(estimate.estimate),
            "sd_seeds": _none_if_nan(seed_sd(arm.matrix)),
            "ci_low": None if np.isnan(low) else float(np.clip(low, 0.0, 1.0)),
            "ci_high": None if np.isnan(high) else float(np.clip(high, 0.0, 1.0)),
        }
        if strict:
            row["accuracy_strict"] = strict_means[(dataset, student)]
        rows.append(row)
    return frame_of(rows, AccuracySchema).sort(["student", "accuracy"], descending=[False, True])


def stronger_baselines(eval_results: pl.DataFrame) -> dict[str, str]:
    """Per student, the untrained evaluation with the higher accuracy (zero-shot ``base`` or
    ``base_few_shot``): what "gain over base" is measured from. Ties go to zero-shot."""
    untrained = eval_results.filter(pl.col("dataset").is_in(list(BASE_DATASETS)))
    accuracy = {
        (student, dataset): value
        for student, dataset, value in untrained.group_by(["student", "dataset"])
        .agg(pl.col("is_correct").cast(pl.Float64).mean())
        .iter_rows()
    }
    return {
        student: max(
            (d for d in BASE_DATASETS if (student, d) in accuracy),
            key=lambda d: (accuracy[(student, d)], -BASE_DATASETS.index(d)),
        )
        for student in sorted({student for student, _ in accuracy})
    }


CONTRAST_SCHEMA = {
    "student": pl.Utf8,
    "a": pl.Utf8,
    "b": pl.Utf8,
    "n_problems": pl.Int64,
    "n_seeds_a": pl.Int64,
    "n_seeds_b": pl.Int64,
    "accuracy_a": pl.Float64,
    "accuracy_b": pl.Float64,
    "diff": pl.Float64,
    "ci_low": pl.Float64,
    "ci_high": pl.Float64,
    "df": pl.Float64,
    "p_value": pl.Float64,
    "p_adjusted": pl.Float64,
    "direction": pl.Utf8,
    "distinguishable": pl.Boolean,
}


def contrast_table(
    eval_results: pl.DataFrame, contrasts: list[tuple[str, str]], seed: int = 0, baselines: dict[str, str] | None = None
) -> pl.DataFrame:
    """Planned contrasts a - b for every student, Holm-adjusted across the whole family (student x contrast).

    Columns: student, a, b, n_problems (problems both arms answered with every seed), n_seeds_a, n_seeds_b,
    accuracy_a, accuracy_b (on those problems), diff (a - b), ci_low, ci_high (95%), df, p_value, p_adjusted
    (Holm over every row with a p-value), direction ("a>b", "a<b" or "=": the sign of diff), distinguishable
    (p_adjusted < 0.05). A contrast whose arm is missing for a student is skipped; one with fewer than 2 shared
    problems has null interval and p and is not part of the family. ``BASELINE`` in a contrast is the
    student's entry in ``baselines`` (default: ``stronger_baselines``), so the row names which baseline
    it used. ``seed`` is accepted for call compatibility (nothing is random).
    """
    del seed
    arms, noise = _arms_and_noise(eval_results)
    baselines = stronger_baselines(eval_results) if baselines is None else baselines
    rows = []
    for student in eval_results["student"].unique(maintain_order=True).to_list():
        for declared in contrasts:
            a, b = (baselines.get(student, BASE_DATASETS[0]) if arm == BASELINE else arm for arm in declared)
            if (a, student) not in arms or (b, student) not in arms:
                continue
            arm_a, arm_b = arms[(a, student)], arms[(b, student)]
            index_b = {p: i for i, p in enumerate(arm_b.problems)}
            shared = [(i, index_b[p]) for i, p in enumerate(arm_a.problems) if p in index_b]
            columns_a = np.array([i for i, _ in shared], dtype=int)
            columns_b = np.array([j for _, j in shared], dtype=int)
            estimate = contrast_estimate(arm_a.terms, arm_b.terms, noise[(a, student)], noise[(b, student)], columns_a, columns_b)
            low, high = estimate.interval()
            rows.append(
                {
                    "student": student,
                    "a": a,
                    "b": b,
                    "n_problems": len(shared),
                    "n_seeds_a": len(arm_a.seeds),
                    "n_seeds_b": len(arm_b.seeds),
                    "accuracy_a": _none_if_nan(arm_a.matrix[:, columns_a].mean()) if shared else None,
                    "accuracy_b": _none_if_nan(arm_b.matrix[:, columns_b].mean()) if shared else None,
                    "diff": _none_if_nan(estimate.estimate),
                    "ci_low": _none_if_nan(low),
                    "ci_high": _none_if_nan(high),
                    "df": _none_if_nan(estimate.df),
                    "p_value": float(estimate.p_value()),
                }
            )
    adjusted = holm(np.array([r["p_value"] for r in rows], dtype=float))
    for row, p_adj in zip(rows, adjusted):
        row["p_value"] = _none_if_nan(row["p_value"])
        row["p_adjusted"] = _none_if_nan(p_adj)
        row["direction"] = direction(row["diff"]) if row["diff"] is not None else None
        row["distinguishable"] = bool(row["p_adjusted"] is not None and row["p_adjusted"] < ALPHA)
    return pl.DataFrame(rows, schema=CONTRAST_SCHEMA)


def difficulty_bucket(steps: int) -> str:
    """Label of a problem's difficulty (its number of solution steps) for the by-difficulty table."""
    if steps <= 2:
        return "1-2 steps"
    if steps <= 4:
        return "3-4 steps"
    if steps <= 6:
        return "5-6 steps"
    return "7+ steps"
