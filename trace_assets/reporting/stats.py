"""Statistics for the report. Pure functions over numpy/scipy/polars; no Dagster.

The unit of analysis is one student trained on one dataset ("an arm"), evaluated with one or more
training seeds on the same test problems. An arm's accuracy means: the expected accuracy over the
distribution of training runs (seeds) and over the population of problems the test set samples.
Two sources of noise enter every interval and every test:

* problem sampling: which problems happen to be in the test set, and which way each run's answer
  to each of them falls;
* training noise: a fresh seed gives a different model (seed-to-seed spread of accuracy).

Method (``METHOD`` says it in one line for the report). An arm's outcomes form a seeds x problems
0/1 matrix, a crossed two-way layout with mean squares MS_problems, MS_seeds, MS_residual. The
variance of its mean accuracy is

    Var = MS_problems / (n k)  +  sigma2_seed / k

the first term the problem-level variance of the seed-averaged outcomes over n (it contains the
per-run answer noise too), the second the training noise: sigma2_seed, the variance of one run's
accuracy from seed to seed, is (MS_seeds - MS_residual) / n by moments.

Training noise per arm, moderated (``student_noise``). Training noise is a logit shift per run: an
arm's seed mean square in logit units is w = MS_seeds / (n g^2), with k - 1 degrees of freedom,
where g = mean over problems of p(1 - p) is the slope of accuracy in a logit shift (so arms at
different accuracies are compared on the scale the noise lives on). Three seeds give each arm two
degrees of freedom, too few to trust one arm's own w, and pooling all arms of a student assumes
they are equally noisy (one arm eight times as noisy as the rest then covers its truth 65% of the
time). So each arm's w is shrunk towards the student's typical value by an amount the data decide,
as limma moderates per-gene variances (Smyth 2004): the prior df d0 and prior value s0^2 of a
scaled inverse chi-square are fitted to the student's arms' log w by the method of moments
(digamma / trigamma, ``variance_prior``), and each arm gets the posterior

    w~ = (d0 s0^2 + d w) / (d0 + d)     with d0 + d degrees of freedom (at most the pooled df).

Arms that really are equally noisy give a large d0 (close to pooling); one arm far out makes d0
small, so that arm keeps most of its own estimate. sigma2_seed = g^2 (w~ - MS_residual / (n g^2)).
The untrained arms ("base", "base_few_shot") have no training noise: their own estimate is used
(zero when their seeds' answers are identical).

Single-seed arms. An arm with one seed has no seed variance of its own and 0/1 problem means (its
own slope is 0): it borrows the pooled training noise of the student's multi-seed runs (this study's
and earlier runs of the same student in the database, named), with a slope g = m(1 - m) times the
ratio g / (m(1 - m)) those runs show. When no run of the student has two seeds, the experiment's
declared ``statistics.seed_sd`` (a logit SD) is used, with g from the student's arms pooled per
problem. With neither, the training noise is unknown: the arm's interval covers problem sampling
only (conditional on that run), and its contrasts are per-run tests conditional on those runs,
never called distinguishable (``conditional``); the report lists them as needing two seeds.

A difference between two arms is paired by problem (same problems): its problem term is the
variance over problems of the difference of seed-averaged outcomes, over n, and each arm adds its
own seed variance / k (the seeds of two arms are independent training runs that only share a number,
so nothing is paired across seeds). An interaction, (a - b) at student S1 vs (a - b) at S2, is the
same on the per-problem difference of differences with four arms' seed variances. Tests are t tests
with Satterthwaite df; p-values are Holm-adjusted across the whole family (every student x contrast
and every interaction). ``baseline`` in a contrast is tested against each untrained arm (zero-shot
and few-shot), each row in the family: choosing the larger after looking would bias the gain.
``trace-assets calibrate`` (trace_assets/reporting/calibration.py) measures what all this achieves.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import polars as pl

from trace_assets.experiment import BASE_DATASETS, BASELINE
from trace_assets.reporting.schemas import AccuracySchema
from trace_assets.tables import frame_of

LEVEL = 0.95
ALPHA = 0.05
POWER = 0.80
METHOD = (
    "accuracy = mean over training seeds and problems; 95% t interval from a crossed problems x seeds "
    "variance-components model: problem-level variance of seed-averaged outcomes / n + seed-to-seed variance / k, "
    "the training noise a logit shift whose per-arm variance is moderated towards the student's typical value "
    "(empirical Bayes, limma's method of moments; a single-seed arm borrows the pooled or declared value), "
    "Satterthwaite df (an arm answering every problem alike, all right or all wrong in every seed, has no variance to "
    "estimate: Clopper-Pearson's exact interval over its problems instead); contrasts and interactions paired by problem with each arm's seed variance, t test, "
    "Holm-adjusted across all of them; 'baseline' tested against each untrained arm; distinguishable when "
    "adjusted p < 0.05 and the training noise is known"
)
# The world power planning assumes about problems (the calibration simulates the same one): logit
# difficulty SD across problems, and each arm's own per-problem deviation.
PLANNING_PROBLEM_SD = 1.5
PLANNING_ARM_PROBLEM_SD = 0.5
# Training noise assumed in planning when nothing is measured or declared: seed 000's scale (logit SD).
ASSUMED_SEED_SD = 0.15


# --------------------------------------------------------------------------------------------------
# numpy cores: outcomes are (seeds, problems) 0/1 arrays (leading batch axes allowed in arm_terms)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    """Point estimate, its variance and Satterthwaite df; arrays over any leading batch axes."""

    estimate: np.ndarray
    variance: np.ndarray
    df: np.ndarray

    def interval(self, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
        from scipy.special import stdtrit  # the t quantile as a ufunc: scipy.stats.t.ppf's checks cost 1 ms a call

        half = stdtrit(self.df, 0.5 + level / 2) * np.sqrt(self.variance)
        return self.estimate - half, self.estimate + half

    def p_value(self) -> np.ndarray:
        """Two-sided p of estimate = 0 (1 when estimate and variance are both 0, 0 when only the variance is)."""
        from scipy.special import stdtr

        se = np.sqrt(self.variance)
        with np.errstate(divide="ignore", invalid="ignore"):
            stat = np.where(se > 0, np.abs(self.estimate) / np.where(se > 0, se, 1.0), np.where(self.estimate == 0, 0.0, np.inf))
        return np.where(np.isnan(self.variance), np.nan, 2 * stdtr(self.df, -stat))


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
class TrainingNoise:
    """Training noise of one arm's runs: ``mean_square`` (logit units; minus ``residual``, the answer
    noise inside it, it is the logit variance of one run) with ``df`` degrees of freedom (inf: declared),
    ``slope`` (accuracy per logit unit for this arm), where it comes from, and whether it is known at all."""

    mean_square: float
    residual: float
    df: float
    residual_df: float
    slope: float
    source: str
    known: bool = True

    @property
    def seed_variance(self) -> float:
        """Variance of one run's accuracy from seed to seed."""
        return float(self.slope**2 * max(self.mean_square - self.residual, 0.0))


NO_NOISE = TrainingNoise(0.0, 0.0, np.inf, np.inf, 1.0, "untrained: no training noise")


def trigamma_inverse(value: float) -> float:
    """x with trigamma(x) = value (scipy's polygamma(1, .) is decreasing on (0, inf))."""
    from scipy.optimize import brentq
    from scipy.special import polygamma

    if value <= 1e-8:
        return 1e8
    return float(brentq(lambda x: float(polygamma(1, x)) - value, 1e-10, 1e9, xtol=1e-12, rtol=1e-10))


def variance_prior(values: np.ndarray, dfs: np.ndarray) -> tuple[float, float]:
    """Prior df d0 and value s0^2 of a scaled inverse chi-square fitted to sample variances ``values``
    with ``dfs`` degrees of freedom, by limma's method of moments on log values (``fitFDist``):
    d0 = inf when the values scatter no more than chance alone would (then every arm gets s0^2)."""
    from scipy.special import digamma, polygamma

    values, dfs = np.asarray(values, dtype=float), np.asarray(dfs, dtype=float)
    keep = (values > 0) & (dfs > 0)
    values, dfs = values[keep], dfs[keep]
    if values.size == 0:
        return 0.0, float("nan")
    if values.size == 1:
        return 0.0, float(values[0])
    e = np.log(values) - digamma(dfs / 2) + np.log(dfs / 2)
    excess = e.var(ddof=1) - float(np.mean(polygamma(1, dfs / 2)))
    if excess <= 0:
        return float("inf"), float(np.exp(e.mean()))
    d0 = 2 * trigamma_inverse(excess)
    return d0, float(np.exp(e.mean() + digamma(d0 / 2) - np.log(d0 / 2)))


def moderation_prior(values: np.ndarray, dfs: np.ndarray, flag_level: float = 0.01) -> tuple[float, float, np.ndarray]:
    """``variance_prior`` made robust to values far above the rest (as limma's ``robust=True`` is): each value
    is checked against the prior fitted to the others (value / s0^2 ~ F(df, d0) under the prior), those
    above its upper ``flag_level`` quantile are flagged (they keep their own estimate), and the prior is
    refitted without them. Returns (d0, s0^2, flagged)."""
    from scipy.special import fdtrc

    values, dfs = np.asarray(values, dtype=float), np.asarray(dfs, dtype=float)
    flagged = np.zeros(values.size, dtype=bool)
    if values.size >= 3:
        for i in range(values.size):
            others = np.arange(values.size) != i
            d0, s0 = variance_prior(values[others], dfs[others])
            if s0 > 0 and d0 > 0:
                flagged[i] = fdtrc(dfs[i], min(d0, 1e6), values[i] / s0) < flag_level
    d0, s0 = variance_prior(values[~flagged], dfs[~flagged])
    return d0, s0, flagged


def _measured(terms: ArmTerms) -> bool:
    return terms.k > 1 and terms.n > 1 and float(terms.slope) > 0


def untrained_noise(terms: ArmTerms) -> TrainingNoise:
    """An untrained arm (greedy decoding of one model): its own seeds' spread, zero when they agree."""
    if terms.k < 2 or terms.n < 2:
        return NO_NOISE
    return TrainingNoise(
        float(terms.ms_seeds) / terms.n,
        float(terms.ms_residual) / terms.n,
        terms.k - 1,
        (terms.k - 1) * (terms.n - 1),
        1.0,
        "untrained: its own seeds' spread",
    )


def _logit_mean_squares(terms: ArmTerms) -> tuple[float, float]:
    """(w, tau): an arm's seed mean square and its residual (answer-noise) part, in logit units."""
    scale = terms.n * float(terms.slope) ** 2
    return float(terms.ms_seeds) / scale, float(terms.ms_residual) / scale


def _student_scales(runs: dict[tuple[str, str], ArmTerms], skip: set[str]) -> dict[str, tuple[float, float, float | None]]:
    """Per student with multi-seed runs (of datasets not in ``skip``): its scale (pooled logit seed mean
    square), its Satterthwaite df, and its slope ratio g / (m(1 - m))."""
    by_student: dict[str, list[ArmTerms]] = {}
    for (dataset, student), terms in runs.items():
        if _measured(terms) and dataset not in skip:
            by_student.setdefault(student, []).append(terms)
    scales = {}
    for student, measured in by_student.items():
        d = np.array([t.k - 1 for t in measured], dtype=float)
        w = np.array([_logit_mean_squares(t)[0] for t in measured])
        bernoulli = sum(float(t.mean) * (1 - float(t.mean)) for t in measured)
        ratio = sum(float(t.slope) for t in measured) / bernoulli if bernoulli > 0 else None
        # Satterthwaite's df of the pooled mean square from the arms' own values: the sum of their df when they
        # agree, fewer when they do not (as the pooled estimate then leans on a few arms)
        scales[student] = (float(d @ w / d.sum()), float((d @ w) ** 2 / (d @ w**2)) if w.any() else float(d.sum()), ratio)
    return scales


def _dataset_factors(study: dict[tuple[str, str], ArmTerms], scales: dict) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Per dataset with multi-seed arms: the df-weighted mean over students of w / the student's scale, and its df."""
    total: dict[str, float] = {}
    dof: dict[str, float] = {}
    for (dataset, student), terms in study.items():
        if _measured(terms) and scales[student][0] > 0:
            total[dataset] = total.get(dataset, 0.0) + (terms.k - 1) * _logit_mean_squares(terms)[0] / scales[student][0]
            dof[dataset] = dof.get(dataset, 0.0) + terms.k - 1
    datasets = sorted(dof)
    return datasets, np.array([total[a] / dof[a] for a in datasets]), np.array([dof[a] for a in datasets])


def trained_noise(
    study: dict[tuple[str, str], ArmTerms],
    reference: dict[tuple[str, str], ArmTerms] | None = None,
    reference_name: str = "",
    declared_sd: float | None = None,
    cross_arm_ratios: dict[str, float | None] | None = None,
) -> dict[tuple[str, str], TrainingNoise]:
    """The training noise of every trained arm ``study`` ((dataset, student) -> terms).

    Model: an arm's logit seed mean square is its student's scale times its dataset's factor. A student's
    scale is the pooled w of its multi-seed runs (``study`` and ``reference``: (student, terms) of earlier
    runs, named by ``reference_name``); a dataset's factor is the df-weighted mean of w / scale over every
    student trained on it (2 df per student with 3 seeds), moderated across the datasets as limma moderates
    gene variances (``variance_prior``): data that make training unstable are found from all students'
    seeds, and one dataset far from the rest keeps its own factor (small prior df). A single-seed arm
    gets its student's scale times its dataset's moderated factor (the prior when no student has seeds of
    it), answer noise included (never zero; errs wide); its slope is m(1 - m) times the ratio g / (m(1 - m)) of the
    student's multi-seed runs, else ``cross_arm_ratios[student]``. With no multi-seed run of its student:
    ``declared_sd`` (a logit SD), else unknown (``known`` False).
    """
    ratios = cross_arm_ratios or {}
    runs = {**(reference or {}), **study}
    scales = _student_scales(runs, set())
    datasets, factors, dfs = _dataset_factors(study, scales)
    d0, f0, flagged = moderation_prior(factors, dfs) if datasets else (0.0, 1.0, np.zeros(0, dtype=bool))
    if flagged.any():  # the students' scales again without the flagged datasets, which would inflate them
        skip = {dataset for dataset, outlier in zip(datasets, flagged) if outlier}
        scales = {**scales, **_student_scales(runs, skip)}  # a student with only flagged runs keeps its first scale
        datasets, factors, dfs = _dataset_factors(study, scales)
        d0, f0 = variance_prior(factors[~flagged], dfs[~flagged])
    by_student = scales
    outliers = {dataset for dataset, outlier in zip(datasets, flagged) if outlier}
    total_df = float(dfs[~flagged].sum())
    if np.isinf(d0) or np.isnan(f0):
        # pooled: the datasets' df-weighted mean factor (limma's exp(mean log) would assume the factors scatter
        # as chi-squares do, but they are normalised by scales fitted to the same runs); none: the typical, 1
        f0 = float(dfs[~flagged] @ factors[~flagged] / total_df) if total_df > 0 else 1.0
    moderated: dict[str, tuple[float, float]] = {}
    for dataset, value, df, outlier in zip(datasets, factors, dfs, flagged):
        if outlier:  # noisier than the others: its own factor, its own df
            moderated[dataset] = (float(value), float(df))
        elif np.isinf(d0):
            moderated[dataset] = (f0, total_df)
        elif d0 == 0:
            moderated[dataset] = (float(value), float(df))
        else:
            moderated[dataset] = ((d0 * f0 + df * value) / (d0 + df), min(d0 + df, total_df))
    prior = (f0, np.inf if total_df == 0 else total_df if np.isinf(d0) or d0 == 0 else min(d0, total_df))
    where = "this study's multi-seed arms" + (f" and earlier runs ({reference_name})" if reference and reference_name else "")
    out = {}
    for (dataset, student), terms in study.items():
        if terms.k > 1 and not _measured(terms):  # seeds that answer every problem alike: no spread to see
            out[(dataset, student)] = TrainingNoise(
                0.0, 0.0, terms.k - 1, np.inf, 0.0, f"own {terms.k} seeds answer every problem alike: no spread"
            )
            continue
        if student not in by_student:
            bernoulli_a = float(terms.mean) * (1 - float(terms.mean)) if terms.n else 0.0
            if declared_sd is not None:
                slope = bernoulli_a * (ratios.get(student) or 1.0)
                out[(dataset, student)] = TrainingNoise(
                    declared_sd**2, 0.0, np.inf, np.inf, slope, f"declared statistics.seed_sd = {declared_sd:g}"
                )
            else:
                out[(dataset, student)] = TrainingNoise(
                    0.0, 0.0, np.inf, np.inf, 0.0, "unknown: one seed, nothing measured or declared", False
                )
            continue
        scale, scale_df, slope_ratio = by_student[student]
        factor, factor_dof = moderated.get(dataset, prior)
        # the arm's mean square is the product of two estimates: their df combine as for independent ones
        # (Satterthwaite, equal CVs), the scale counted without the arm's own runs, which the factor has
        others = scale_df - (terms.k - 1 if _measured(terms) else 0)
        if np.isinf(d0) and dataset not in outliers:  # every factor is the prior: the student's pooled scale
            df = scale_df
        elif others > 0:
            df = 1.0 / (1.0 / factor_dof + 1.0 / others)
        else:
            df = min(factor_dof, scale_df)
        if _measured(terms):
            out[(dataset, student)] = TrainingNoise(
                scale * factor,
                _logit_mean_squares(terms)[1],
                df,
                (terms.k - 1) * (terms.n - 1),
                float(terms.slope),
                f"own {terms.k} seeds; {student}'s scale x {dataset}'s factor {factor:.2f}, moderated "
                f"(prior df {d0:.3g}) over {where}",
            )
        else:
            bernoulli_a = float(terms.mean) * (1 - float(terms.mean)) if terms.n else 0.0
            out[(dataset, student)] = TrainingNoise(
                scale * factor,  # the answer noise in it is counted twice (its problem term has it): errs wide, never 0
                0.0,
                df,
                np.inf,
                bernoulli_a * (slope_ratio or 1.0),
                f"borrowed: {student}'s scale x {dataset}'s factor {factor:.2f} over {where}",
            )
    return out


def _estimate(value, problem_term, n: int, parts: Sequence[tuple[float, TrainingNoise]]) -> Estimate:
    """value with variance problem_term + sum(coefficient * seed variance) and Satterthwaite df."""
    if n < 2:
        nan = np.full(np.shape(value), np.nan)
        return Estimate(np.asarray(value, dtype=float), nan, nan)
    variance = problem_term + sum(c * noise.seed_variance for c, noise in parts)
    # The arms' training-noise estimates share their student's scale and the datasets' prior, so they are
    # correlated: their Satterthwaite terms are added as if perfectly so (sqrt of each term's share), which
    # is conservative.
    denominator = np.square(problem_term) / (n - 1)
    shared, residual = 0.0, 0.0
    for c, noise in parts:
        if noise.seed_variance > 0:
            scale = c * noise.slope**2
            shared += scale * noise.mean_square / np.sqrt(noise.df)
            residual += np.square(scale * noise.residual) / noise.residual_df
    denominator = denominator + shared**2 + residual
    with np.errstate(divide="ignore", invalid="ignore"):
        df = np.where(denominator > 0, np.square(variance) / np.where(denominator > 0, denominator, 1.0), float(n - 1))
    return Estimate(np.asarray(value, dtype=float), variance, np.maximum(df, 1.0))


def arm_estimate(arm: ArmTerms, noise: TrainingNoise) -> Estimate:
    """Accuracy of one arm (mean over seeds and problems), the variance of that mean under problem sampling
    plus its training noise, and Satterthwaite's df."""
    problem_term = arm.ms_problems / (arm.n * max(arm.k, 1))
    return _estimate(arm.mean, problem_term, arm.n, [(1 / max(arm.k, 1), noise)])


def paired_estimate(per_problem: np.ndarray, parts: Sequence[tuple[float, TrainingNoise]]) -> Estimate:
    """Mean of a per-problem difference (of seed-averaged outcomes; last axis problems) with its problem
    term and the arms' seed variances (``parts``: (1 / k, noise) per arm)."""
    n = per_problem.shape[-1]
    problem_term = per_problem.var(axis=-1, ddof=1) / n if n > 1 else np.full(per_problem.shape[:-1], np.nan)
    value = per_problem.mean(axis=-1) if n else np.full(per_problem.shape[:-1], np.nan)
    return _estimate(value, problem_term, n, parts)


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


# --------------------------------------------------------------------------------------------------
# one study: its arms, their training noise, the report's tables (the calibration calls these too)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Arm:
    """One (dataset, student): its seeds x problems 0/1 matrix, the problem ids (sorted) and seeds."""

    matrix: np.ndarray
    problems: np.ndarray
    seeds: tuple[int, ...]
    terms: ArmTerms


def make_arm(matrix: np.ndarray, problems: np.ndarray, seeds: Sequence[int] | None = None) -> Arm:
    matrix = np.asarray(matrix, dtype=float)
    return Arm(matrix, problems, tuple(seeds if seeds is not None else range(matrix.shape[0])), arm_terms(matrix))


Arms = dict[tuple[str, str], Arm]  # (dataset, student) -> Arm


@dataclass(frozen=True)
class NoiseSettings:
    """Where training noise comes from besides the study's own seeds: ``declared_sd`` (the experiment's
    ``statistics.seed_sd``, a logit SD) and ``reference``, earlier runs of the same students (named)."""

    declared_sd: float | None = None
    reference: Arms = field(default_factory=dict)
    reference_name: str = ""


def arms_of(eval_results: pl.DataFrame) -> Arms:
    """Every (dataset, student) arm, keeping problems every seed answered."""
    arms = {}
    for (dataset, student), group in eval_results.group_by(["dataset", "student"], maintain_order=True):
        wide = group.pivot(on="seed", index="problem_id", values="is_correct", aggregate_function="first")
        seeds = sorted(int(c) for c in wide.columns if c != "problem_id")
        wide = wide.drop_nulls().sort("problem_id")
        matrix = wide.select([str(s) for s in seeds]).to_numpy().T.astype(float).reshape(len(seeds), wide.height)
        arms[(dataset, student)] = make_arm(matrix, wide["problem_id"].cast(pl.Utf8).to_numpy().astype(str), seeds)
    return arms


def _cross_arm_ratio(arms: Sequence[Arm]) -> float | None:
    """g / (m(1 - m)) from the arms' answers pooled per problem (an unbiased p(1 - p) per problem answered
    at least twice): the slope ratio for single-seed arms when no run has two seeds. Treating different arms
    as draws of one probability overstates p(1 - p) a little: the borrowed noise errs on the wide side."""
    if not arms:
        return None
    ids, inverse = np.unique(np.concatenate([arm.problems for arm in arms]), return_inverse=True)
    right = np.bincount(inverse, weights=np.concatenate([arm.matrix.sum(axis=0) for arm in arms]), minlength=ids.size)
    runs = np.bincount(inverse, weights=np.concatenate([np.full(arm.matrix.shape[1], arm.matrix.shape[0]) for arm in arms]))
    keep = runs >= 2
    if not keep.any():
        return None
    p, total = right[keep] / runs[keep], runs[keep]
    slope = float(np.mean(p * (1 - p) * total / (total - 1)))
    m = float(right[keep].sum() / total.sum())
    return slope / (m * (1 - m)) if 0 < m < 1 else None


def study_noise(arms: Arms, settings: NoiseSettings | None = None) -> dict[tuple[str, str], TrainingNoise]:
    """Training noise of every arm: ``trained_noise`` over the trained arms, the untrained arms their own
    (``untrained_noise``)."""
    settings = settings or NoiseSettings()
    trained = {key: arm.terms for key, arm in arms.items() if key[0] not in BASE_DATASETS}
    students = list(dict.fromkeys(s for _, s in arms))
    ratios = {
        student: _cross_arm_ratio([arm for key, arm in arms.items() if key[1] == student and key in trained])
        for student in students
        if any(terms.k < 2 for key, terms in trained.items() if key[1] == student)
    }
    reference = {key: arm.terms for key, arm in settings.reference.items()}
    noise = trained_noise(trained, reference, settings.reference_name, settings.declared_sd, ratios)
    for key, arm in arms.items():
        if key[0] in BASE_DATASETS:
            noise[key] = untrained_noise(arm.terms)
    return noise


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


def _all_alike(matrix: np.ndarray) -> bool:
    """Whether every answer of an arm (its seeds x problems matrix of 0/1) has one outcome."""
    return matrix.size > 0 and bool(np.all(matrix == matrix.flat[0]))


def _exact_interval(matrix: np.ndarray, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Clopper-Pearson's interval for an arm whose every answer is alike: 0 (or all) of its problems right.
    The t interval is [p, p] there (no variance); the exact one says how far from 0 (or 1) the accuracy
    over such problems may be: for 0 of 1,319, up to 0.28%."""
    from scipy.stats import beta  # (statsmodels' proportion_confint(method="beta") is this; it is not a runtime dependency)

    right = n if matrix.flat[0] == 1 else 0
    tail = (1 - level) / 2
    low = beta.ppf(tail, right, n - right + 1) if right > 0 else 0.0
    high = beta.ppf(1 - tail, right + 1, n - right) if right < n else 1.0
    return float(low), float(high)


def summary_rows(arms: Arms, noise: dict[tuple[str, str], TrainingNoise]) -> list[dict]:
    """accuracy_summary's rows (without accuracy_strict) from a study's arms and their noise."""
    rows = []
    for (dataset, student), arm in arms.items():
        estimate = arm_estimate(arm.terms, noise[(dataset, student)])
        exact = arm.terms.n >= 2 and _all_alike(arm.matrix)
        low, high = _exact_interval(arm.matrix, arm.terms.n) if exact else estimate.interval()
        rows.append(
            {
                "dataset": dataset,
                "student": student,
                "n": arm.terms.n,
                "n_seeds": arm.terms.k,
                "accuracy": _none_if_nan(estimate.estimate),
                "sd_seeds": _none_if_nan(seed_sd(arm.matrix)),
                "ci_low": None if np.isnan(low) else float(np.clip(low, 0.0, 1.0)),
                "ci_high": None if np.isnan(high) else float(np.clip(high, 0.0, 1.0)),
            }
        )
    return rows


def accuracy_summary(eval_results: pl.DataFrame, seed: int = 0, settings: NoiseSettings | None = None) -> pl.DataFrame:
    """Accuracy per dataset x student with its noise floor and 95% interval.

    Columns: dataset, student, n (problems answered by every seed), n_seeds, accuracy (mean over seeds
    and problems), sd_seeds (standard deviation of the per-seed accuracies; null with one seed), ci_low,
    ci_high (``METHOD``; null when n < 2; conditional on the run when its training noise is unknown, see
    ``noise_table``), accuracy_strict (mean of ``is_correct_strict``; null when that column is absent), training
    (pooled, per_task or none: how the answering models were trained; null when that column is absent): the
    ``accuracy`` table's ``AccuracySchema``. Sorted by student, then accuracy descending. ``seed`` is
    accepted for call compatibility; nothing is random.
    """
    del seed
    arms = arms_of(eval_results)
    rows = summary_rows(arms, study_noise(arms, settings))
    if "is_correct_strict" in eval_results.columns:
        strict = {
            (d, s): v
            for d, s, v in eval_results.group_by(["dataset", "student"])
            .agg(pl.col("is_correct_strict").cast(pl.Float64).mean())
            .iter_rows()
        }
        rows = [{**row, "accuracy_strict": strict[(row["dataset"], row["student"])]} for row in rows]
    if "training" in eval_results.columns:
        kinds = {
            (d, s): ", ".join(sorted(k))
            for d, s, k in eval_results.group_by(["dataset", "student"]).agg(pl.col("training").unique()).iter_rows()
        }
        rows = [{**row, "training": kinds[(row["dataset"], row["student"])]} for row in rows]
    return frame_of(rows, AccuracySchema).sort(["student", "accuracy"], descending=[False, True])


NOISE_SCHEMA = {
    "student": pl.Utf8,
    "dataset": pl.Utf8,
    "n_seeds": pl.Int64,
    "training_sd": pl.Float64,
    "df": pl.Float64,
    "known": pl.Boolean,
    "source": pl.Utf8,
}


def noise_table(eval_results: pl.DataFrame, settings: NoiseSettings | None = None) -> pl.DataFrame:
    """Per arm, the training noise its interval and tests use: training_sd (SD of one run's accuracy
    from seed to seed), its df, whether it is known, and where it comes from (the per-arm noise floor)."""
    arms = arms_of(eval_results)
    noise = study_noise(arms, settings)
    rows = [
        {
            "student": student,
            "dataset": dataset,
            "n_seeds": arms[(dataset, student)].terms.k,
            "training_sd": float(np.sqrt(n.seed_variance)) if n.known else None,
            "df": None if np.isinf(n.df) else float(n.df),
            "known": n.known,
            "source": n.source,
        }
        for (dataset, student), n in noise.items()
    ]
    return pl.DataFrame(rows, schema=NOISE_SCHEMA).sort(["student", "dataset"])


def noise_floor_note(noise: pl.DataFrame) -> str:
    """What the seeds allow, per arm (``noise_table``): which arms have no training-noise estimate."""
    if noise.is_empty():
        return "No arms."
    unknown = noise.filter(~pl.col("known"))
    borrowed = noise.filter(pl.col("known") & pl.col("source").str.starts_with("borrowed"))
    declared = noise.filter(pl.col("known") & pl.col("source").str.starts_with("declared"))
    parts = [f"training noise is estimated per arm (table below); seeds per arm: {sorted(set(noise['n_seeds']))}."]
    if borrowed.height:
        parts.append(f"{borrowed.height} single-seed arm(s) borrow the pooled value of their student's multi-seed runs.")
    if declared.height:
        parts.append(f"{declared.height} single-seed arm(s) use the declared statistics.seed_sd.")
    if unknown.height:
        names = ", ".join(f"{r['dataset']} ({r['student']})" for r in unknown.iter_rows(named=True))
        parts.append(
            f"There is no noise floor for {names}: one training seed and nothing measured or declared, so their intervals and "
            "tests cover problem sampling only, conditional on that run; another seed could move accuracy by more."
        )
    return " ".join(parts)


def stronger_baselines(eval_results: pl.DataFrame) -> dict[str, str]:
    """Per student, the untrained evaluation with the higher accuracy (zero-shot ``base`` or
    ``base_few_shot``): described in the report and used for failure modes. Ties go to zero-shot.
    Contrasts do not use it (chosen after looking, it biases the gain): see ``contrast_table``."""
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
    "family_ci_low": pl.Float64,
    "family_ci_high": pl.Float64,
    "df": pl.Float64,
    "p_value": pl.Float64,
    "p_adjusted": pl.Float64,
    "direction": pl.Utf8,
    "distinguishable": pl.Boolean,
    "conditional": pl.Boolean,
}

Interaction = tuple[str, str, str, str]  # (a, b, student 1, student 2): (a - b) at student 1 vs at student 2


def _shared_columns(*arms: Arm) -> list[np.ndarray]:
    """Column indices, per arm, of the problems every arm answered, in one order."""
    common = arms[0].problems
    if all(arm.problems is common for arm in arms):  # the calibration's arms share one array
        return [np.arange(common.size)] * len(arms)
    for arm in arms[1:]:
        common = np.intersect1d(common, arm.problems, assume_unique=True)
    return [np.searchsorted(arm.problems, common) for arm in arms]


def _pairs(declared: tuple[str, str], student: str, arms: Arms, baselines: dict[str, str] | None) -> list[tuple[str, str]]:
    """The arm pairs a declared contrast tests for ``student``: ``baseline`` is every untrained arm (or the
    one ``baselines`` names, declared in advance); pairs with a missing arm are skipped."""

    def names(arm: str) -> list[str]:
        if arm != BASELINE:
            return [arm]
        return [baselines.get(student, BASE_DATASETS[0])] if baselines is not None else list(BASE_DATASETS)

    return [(a, b) for a in names(declared[0]) for b in names(declared[1]) if (a, student) in arms and (b, student) in arms]


def _row(student: str, a: str, b: str, k_a: int, k_b: int, mean_a, mean_b, estimate: Estimate, conditional: bool) -> dict:
    low, high = estimate.interval()
    return {
        "student": student,
        "a": a,
        "b": b,
        "n_problems": None,
        "n_seeds_a": k_a,
        "n_seeds_b": k_b,
        "accuracy_a": _none_if_nan(mean_a),
        "accuracy_b": _none_if_nan(mean_b),
        "diff": _none_if_nan(estimate.estimate),
        "ci_low": _none_if_nan(low),
        "ci_high": _none_if_nan(high),
        "df": _none_if_nan(estimate.df),
        "p_value": float(estimate.p_value()),
        "conditional": conditional,
        "_estimate": estimate,  # for the family interval, once the family's size is known
    }


def contrast_rows(
    arms: Arms,
    noise: dict[tuple[str, str], TrainingNoise],
    contrasts: Sequence[tuple[str, str]],
    baselines: dict[str, str] | None = None,
    interactions: Sequence[Interaction] = (),
) -> list[dict]:
    """contrast_table's rows from a study's arms and their noise: every student x contrast pair, then every
    interaction; Holm over the rows whose training noise is known, and separately (per-run tests, never
    distinguishable) over the conditional ones."""
    rows = []
    for student in dict.fromkeys(s for _, s in arms):
        for declared in contrasts:
            for a, b in _pairs(declared, student, arms, baselines):
                arm_a, arm_b = arms[(a, student)], arms[(b, student)]
                cols_a, cols_b = _shared_columns(arm_a, arm_b)
                per_problem = arm_a.terms.problem_means[cols_a] - arm_b.terms.problem_means[cols_b]
                noise_a, noise_b = noise[(a, student)], noise[(b, student)]
                estimate = paired_estimate(per_problem, [(1 / arm_a.terms.k, noise_a), (1 / arm_b.terms.k, noise_b)])
                shared = cols_a.size > 0
                row = _row(
                    student,
                    a,
                    b,
                    arm_a.terms.k,
                    arm_b.terms.k,
                    arm_a.matrix[:, cols_a].mean() if shared else np.nan,
                    arm_b.matrix[:, cols_b].mean() if shared else np.nan,
                    estimate,
                    not (noise_a.known and noise_b.known),
                )
                rows.append({**row, "n_problems": int(cols_a.size)})
    for a, b, first, second in interactions:
        keys = [(a, first), (b, first), (a, second), (b, second)]
        if any(key not in arms for key in keys):
            continue
        four = [arms[key] for key in keys]
        cols = _shared_columns(*four)
        means = [arm.terms.problem_means[c] for arm, c in zip(four, cols)]
        estimate = paired_estimate(
            (means[0] - means[1]) - (means[2] - means[3]), [(1 / arm.terms.k, noise[key]) for arm, key in zip(four, keys)]
        )
        n = int(cols[0].size)
        row = _row(
            f"{first} vs {second}",
            f"{a}-{b}@{first}",
            f"{a}-{b}@{second}",
            min(four[0].terms.k, four[1].terms.k),
            min(four[2].terms.k, four[3].terms.k),
            float(np.mean(means[0] - means[1])) if n else np.nan,
            float(np.mean(means[2] - means[3])) if n else np.nan,
            estimate,
            not all(noise[key].known for key in keys),
        )
        rows.append({**row, "n_problems": n})
    for conditional in (False, True):
        family = [row for row in rows if row["conditional"] == conditional]
        adjusted = holm(np.array([row["p_value"] for row in family], dtype=float))
        tested = max(1, sum(not np.isnan(row["p_value"]) for row in family))  # Holm's m: rows with a p-value
        for row, p_adj in zip(family, adjusted):
            # Bonferroni's simultaneous interval over the family: it covers 0 wherever Holm's adjusted p is
            # at least 0.05 (Holm's p is at most m times the raw p), so it agrees with "not distinguishable"
            # where the per-contrast 95% interval may not
            low, high = row.pop("_estimate").interval(1 - ALPHA / tested)
            row["family_ci_low"], row["family_ci_high"] = _none_if_nan(low), _none_if_nan(high)
            row["p_value"] = _none_if_nan(row["p_value"])
            row["p_adjusted"] = _none_if_nan(p_adj)
            row["direction"] = direction(row["diff"]) if row["diff"] is not None else None
            row["distinguishable"] = bool(not conditional and row["p_adjusted"] is not None and row["p_adjusted"] < ALPHA)
    return rows


def contrast_table(
    eval_results: pl.DataFrame,
    contrasts: Sequence[tuple[str, str]],
    seed: int = 0,
    baselines: dict[str, str] | None = None,
    interactions: Sequence[Interaction] = (),
    settings: NoiseSettings | None = None,
) -> pl.DataFrame:
    """Planned contrasts a - b for every student and interactions, Holm-adjusted across the whole family.

    Columns: student, a, b, n_problems (problems both arms answered with every seed), n_seeds_a, n_seeds_b,
    accuracy_a, accuracy_b (on those problems), diff (a - b), ci_low, ci_high (95%), family_ci_low and
    family_ci_high (Bonferroni's simultaneous 95% over the row's Holm family), df, p_value, p_adjusted
    (Holm over every row with a p-value and known training noise), direction ("a>b", "a<b" or "="),
    distinguishable (p_adjusted < 0.05, never for a conditional row), conditional (an arm's training noise
    is unknown: a per-run test, conditional on those runs, adjusted in its own family). A contrast whose arm
    is missing for a student is skipped; one with fewer than 2 shared problems has null interval and p.
    ``baseline`` in a contrast is tested against every untrained arm (one row each), unless ``baselines``
    names one per student (declared in advance). An interaction (a, b, s1, s2) is a row with student
    "s1 vs s2", a "a-b@s1", b "a-b@s2", accuracy_a and accuracy_b the two differences.
    ``seed`` is accepted for call compatibility (nothing is random).
    """
    del seed
    arms = arms_of(eval_results)
    rows = contrast_rows(arms, study_noise(arms, settings), contrasts, baselines, interactions)
    return pl.DataFrame(rows, schema=CONTRAST_SCHEMA)


# --------------------------------------------------------------------------------------------------
# power planning: the smallest difference a design detects, before the GPU-hours are spent
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanningNoise:
    """The training noise a plan assumes for one student (a logit SD), its df and where it comes from."""

    logit_sd: float
    df: float
    source: str
    accuracy: float = 0.5


def planning_noise(student: str, settings: NoiseSettings) -> PlanningNoise:
    """Measured in earlier multi-seed runs of ``student`` (pooled moment estimate), else declared, else assumed."""
    measured = [arm.terms for (_, s), arm in settings.reference.items() if s == student and _measured(arm.terms)]
    if measured:
        d = np.array([t.k - 1 for t in measured], dtype=float)
        logit = np.array([(float(t.ms_seeds) - float(t.ms_residual)) / (t.n * float(t.slope) ** 2) for t in measured])
        variance = max(float(np.sum(d * logit) / d.sum()), 0.0)
        names = sorted(d for (d, s) in settings.reference if s == student)
        return PlanningNoise(
            float(np.sqrt(variance)),
            float(d.sum()),
            f"measured in earlier runs of {student} ({', '.join(names)})",
            float(np.mean([float(t.mean) for t in measured])),
        )
    if settings.declared_sd is not None:
        return PlanningNoise(settings.declared_sd, np.inf, "declared statistics.seed_sd")
    return PlanningNoise(ASSUMED_SEED_SD, np.inf, f"assumed {ASSUMED_SEED_SD:g} (nothing measured or declared)")


def _planning_problem_terms(accuracy: float) -> tuple[float, float]:
    """(D, B) at ``accuracy`` in the planning world: D the variance over problems of p_a - p_b for two arms
    of equal accuracy, B the mean of p(1 - p) (the per-answer variance, and the logit slope)."""
    from scipy.optimize import brentq
    from scipy.special import expit

    rng = np.random.default_rng(0)
    theta = rng.standard_normal(40_000) * PLANNING_PROBLEM_SD
    v_a, v_b = rng.standard_normal((2, 40_000)) * PLANNING_ARM_PROBLEM_SD
    accuracy = min(max(accuracy, 0.02), 0.98)
    mu = brentq(lambda m: float(expit(m + theta + v_a).mean()) - accuracy, -30, 30)
    p_a, p_b = expit(mu + theta + v_a), expit(mu + theta + v_b)
    return float(np.var(p_a - p_b)), float(np.mean(p_a * (1 - p_a)))


def detectable_difference(kind: str, n: int, k: int, family: int, noise: PlanningNoise, power: float = POWER) -> float:
    """Smallest true difference a two-sided t test finds with probability ``power`` (noncentral t) at Holm's strictest step
    (alpha / family), for ``kind`` "pair" (two trained arms), "baseline" (a trained arm against an untrained
    one) or "interaction" (a difference of differences across two students), n problems, k seeds per arm."""
    from scipy.stats import t

    d, b = _planning_problem_terms(noise.accuracy)
    seed = b**2 * noise.logit_sd**2 / k  # one trained arm's seed variance of its mean
    pair = (d + 2 * b / k) / n + 2 * seed
    variance = {"pair": pair, "baseline": (d + b / k + b) / n + seed, "interaction": 2 * pair}[kind]
    from scipy.optimize import brentq
    from scipy.stats import nct, norm

    level = ALPHA / (2 * max(family, 1))
    if noise.df > 1000:  # a declared (known) noise: the normal test
        critical = norm.isf(level)
        rejects = lambda d: norm.sf(critical - d) + norm.cdf(-critical - d)  # noqa: E731
    else:
        critical = t.isf(level, noise.df)
        rejects = lambda d: nct.sf(critical, noise.df, d) + nct.cdf(-critical, noise.df, d)  # noqa: E731
    # the noncentrality at which the test rejects with probability ``power``
    shift = brentq(lambda d: np.nan_to_num(rejects(d), nan=1.0) - power, 0.0, 3 * critical + 10)
    return float(shift * np.sqrt(variance))


def seeds_needed(target: float, kind: str, n: int, family: int, noise: PlanningNoise, most: int = 100) -> int | None:
    """Fewest seeds per arm at which ``target`` is detectable with 80% power; None when even ``most`` are not enough."""
    return next((k for k in range(1, most + 1) if detectable_difference(kind, n, k, family, noise) <= target), None)


def holm_family_size(contrasts: Sequence[tuple[str, str]], students: int, interactions: int, untrained: int = 2) -> int:
    """Rows of the Holm family: every contrast per student (a ``baseline`` one once per untrained arm), and
    every interaction."""
    return sum(untrained if BASELINE in pair else 1 for pair in contrasts) * students + interactions


def contrast_kind(a: str, b: str) -> str:
    return "baseline" if {a, b} & {BASELINE, *BASE_DATASETS} else "pair"


def planning_df(trained_arms: int, k: int) -> float:
    """The df of a study's own training-noise estimate: D = arms x (k - 1), which Satterthwaite's estimate
    from the arms' own values (``_student_scales``) puts at about D^2 / (D + 2)."""
    pooled = float(trained_arms * (k - 1))
    return pooled**2 / (pooled + 2) if pooled > 0 else np.inf


def power_lines(
    contrasts: Sequence[tuple[str, str]],
    interactions: Sequence[Interaction],
    students: Sequence[str],
    n: int,
    k: int,
    settings: NoiseSettings,
    target: float | None = None,
    untrained: int = 2,
    trained_arms: int = 1,
) -> list[str]:
    """One line per planned contrast and interaction: the smallest difference detectable with 80% power (Holm
    over the whole family) at k seeds and n problems, per student, and the seeds ``target`` needs. With k > 1
    the study measures its own training noise from ``trained_arms`` arms per student: the test has their df."""
    family = holm_family_size(contrasts, len(students), len(interactions), untrained)
    noise = {student: planning_noise(student, settings) for student in students}
    if k > 1:  # the study measures its training noise from its own seeds: the test has their df
        noise = {s: replace(p, df=planning_df(trained_arms, k)) for s, p in noise.items()}
    lines = [
        f"power (80%, Holm over {family}, {k} seeds, {n} problems); training noise: "
        + "; ".join(f"{s}: logit SD {p.logit_sd:.3f}, {p.source}" for s, p in noise.items())
    ]

    def line(label: str, kind: str, per: list[tuple[str, PlanningNoise]]) -> str:
        def each(values: list[str]) -> str:
            same = len(set(values)) == 1 and len(values) > 1
            return f"{values[0]} (every student)" if same else ", ".join(f"{v} ({s})" for (s, _), v in zip(per, values))

        found = ["over 100" if (d := detectable_difference(kind, n, k, family, p)) > 1 else f"{d * 100:.1f}" for _, p in per]
        text = f"  {label}: detectable difference {each(found)} points"
        if target is not None:
            needed = [seeds_needed(target, kind, n, family, p) for _, p in per]
            text += f"; seeds per arm for {target * 100:g} points: " + each(["over 100" if x is None else str(x) for x in needed])
        return text

    lines += [line(f"{a} - {b}", contrast_kind(a, b), list(noise.items())) for a, b in contrasts]
    for a, b, first, second in interactions:
        worse = max((noise[first], noise[second]), key=lambda p: p.logit_sd)
        lines.append(line(f"({a} - {b}) at {first} vs {second}", "interaction", [(f"{first}/{second}", worse)]))
    return lines


def experiment_power_lines(experiment, n_test: int, database: Path) -> list[str]:
    """``power_lines`` for an experiment before it runs (``trace-assets dry-run``): its planned contrasts and
    interactions at its seeds and ``n_test`` problems, with the training noise of earlier runs of its students
    in ``database``, else its declared ``statistics.seed_sd``."""
    reference, names = earlier_runs(database, experiment.students, experiment.dataset_keys())
    settings = NoiseSettings(experiment.statistics.seed_sd, reference, names)
    untrained = sum(key in BASE_DATASETS for key in experiment.dataset_keys())
    return power_lines(
        experiment.planned_contrasts() + experiment.replicate_pairs(),
        experiment.interactions(),
        list(experiment.students),
        n_test,
        len(experiment.training.seeds),
        settings,
        experiment.statistics.target_difference,
        untrained,
        len(experiment.datasets),
    )


def earlier_runs(database: Path, students: Iterable[str], current: Iterable[str]) -> tuple[Arms, str]:
    """Earlier runs of ``students`` in this database: their eval_results rows for datasets not in ``current``
    (the experiment's dataset partitions), arms with two or more seeds; and their names for the report.
    Empty when the database or table is missing or locked by a writer."""
    import duckdb

    from trace_assets.storage import table_names

    if not database.exists():
        return {}, ""
    students, current = list(students), list(current)
    try:
        with duckdb.connect(str(database), read_only=True) as connection:
            if "eval_results" not in table_names(connection):
                return {}, ""
            frame = connection.execute(
                "select dataset, student, seed, problem_id, is_correct from main.eval_results "
                "where list_contains(?, student) and not list_contains(?, dataset)",
                [students, current],
            ).pl()
    except duckdb.Error:
        return {}, ""
    arms = {key: arm for key, arm in arms_of(frame).items() if arm.terms.k > 1 and key[0] not in BASE_DATASETS}
    return arms, ", ".join(f"{d}|{s}" for d, s in sorted(arms))


def difficulty_bucket(steps: int) -> str:
    """Label of a problem's difficulty (its number of solution steps) for the by-difficulty table."""
    if steps <= 2:
        return "1-2 steps"
    if steps <= 4:
        return "3-4 steps"
    if steps <= 6:
        return "5-6 steps"
    return "7+ steps"


def difficulty_level(steps: int) -> str:
    """Seed 000's coarser view of the same step counts: Easy (1-2 steps), Medium (3-4), Hard (5+), each a union
    of ``difficulty_bucket``'s buckets so the two tables agree."""
    return "1 Easy" if steps <= 2 else "2 Medium" if steps <= 4 else "3 Hard"
