"""``trace-assets calibrate``: how often the report's statistics are wrong, measured by simulation.

Synthetic studies shaped like an experiment file (its datasets plus "base", its students, seeds and
test size) are pushed through the numpy cores of ``accuracy_summary`` and ``contrast_table``
(``arm_terms``, ``seed_noise``, ``arm_estimate``, ``contrast_estimate``, ``holm`` in
trace_assets/reporting/stats.py, via ``study_statistics``), and three
figures are counted:

* fwer: share of null studies (every arm, base included, has the same true accuracy) in which at
  least one planned contrast of any student is called distinguishable (Holm-adjusted p < 0.05);
* coverage: share of 95% accuracy intervals (every arm of every student of every null study) that
  contain the arm's true accuracy;
* power: share of (study, student) pairs in a world where one arm is truly 5 points better than all
  others in which its planned contrast is distinguishable in the right direction, at 1,319 problems x 3
  seeds (the figures of experiments/paper.yaml).

The world. Problem j has a logit difficulty theta_j ~ Normal(0, problem_sd) shared by all arms and
students (plus a student offset setting that student's accuracy), each arm has its own per-problem
deviation v_aj ~ Normal(0, arm_problem_sd) (arms are good at different problems), and each training
run (arm x seed) a logit shift u_as ~ Normal(0, seed_sd): the seed-to-seed training noise. A trained
run answers problem j correctly with probability logistic(offset + theta_j + v_aj + delta_a + u_as),
independently per run. "base" is the untrained student: no training noise, evaluated once, its
outcomes copied to every seed (greedy decoding of one model). Studies are split evenly over the
seed_sd levels (default 0, 0.15, 0.3: none, the issue's example, twice it).

An arm's true accuracy is the estimand of the report: the expected accuracy over problems drawn from
the population and over training seeds, E[logistic(offset + delta_a + Z * sqrt(problem_sd^2 +
arm_problem_sd^2 + seed_sd^2))] (Gauss-Hermite quadrature); delta_a is solved so that arms that are
meant to be equal have exactly equal true accuracy (a logit shift of mean zero changes the mean
accuracy, so delta_a = 0 would not do).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import polars as pl
from scipy.optimize import brentq
from scipy.special import expit

from trace_assets.experiment import BASE_DATASETS, BASELINE
from trace_assets.reporting.stats import (
    ALPHA,
    arm_estimate,
    arm_terms,
    contrast_estimate,
    holm,
    seed_noise,
)

SEED_SDS = (0.0, 0.15, 0.3)
PROBLEM_SD = 1.5
ARM_PROBLEM_SD = 0.5
POWER_EFFECT = 0.05
POWER_PROBLEMS = 1319
POWER_SEEDS = 3
_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(80)
_WEIGHTS = _WEIGHTS / _WEIGHTS.sum()


def population_accuracy(logit_mean: float, logit_sd: float) -> float:
    """E[logistic(logit_mean + logit_sd * Z)], Z standard normal."""
    return float(np.sum(_WEIGHTS * expit(logit_mean + logit_sd * _NODES)))


def logit_mean_for(accuracy: float, logit_sd: float) -> float:
    """The logit mean whose population accuracy at this spread is ``accuracy``."""
    return brentq(lambda m: population_accuracy(m, logit_sd) - accuracy, -30, 30, xtol=1e-12)


@dataclass(frozen=True)
class StudyShape:
    """What a simulated study looks like: arm names (the first is "base"), students, seeds, problems,
    the planned contrasts as (a, b) index pairs into ``arms``."""

    arms: tuple[str, ...]
    students: tuple[str, ...]
    n_seeds: int
    n_problems: int
    contrasts: tuple[tuple[int, int], ...]
    student_accuracies: tuple[float, ...] = ()

    def accuracies(self) -> tuple[float, ...]:
        """True accuracy of each student's arms when they are all equal: spread from 0.3 to 0.75."""
        if self.student_accuracies:
            return self.student_accuracies
        return tuple(np.linspace(0.3, 0.75, len(self.students))) if len(self.students) > 1 else (0.5,)


def shape_from_experiment(
    experiment, contrasts: list[tuple[str, str]] | None = None, n_problems: int | None = None, n_seeds: int | None = None
) -> StudyShape:
    """The study shape of an experiment: its datasets + "base", students, seeds and test size (null
    n_test: 1,319 for GSM8K, 500 otherwise, as the dry-run assumes); contrasts default to
    ``Experiment.planned_contrasts``."""
    arms = ("base", *experiment.datasets)
    problems = experiment.problems
    n_test = n_problems or problems.n_test or (1319 if problems.source == "gsm8k" else 500)
    declared = contrasts if contrasts is not None else experiment.planned_contrasts()
    # The simulation has one untrained arm; the stronger baseline of a real run is one of two.
    pairs = [tuple("base" if arm in (BASELINE, *BASE_DATASETS) else arm for arm in pair) for pair in declared]
    index = {name: i for i, name in enumerate(arms)}
    unknown = sorted({name for pair in pairs for name in pair} - set(index))
    if unknown:
        raise ValueError(f"contrasts name arms that are not datasets of the experiment (or 'base'): {unknown}")
    return StudyShape(
        arms=arms,
        students=tuple(experiment.students),
        n_seeds=n_seeds or len(experiment.training.seeds),
        n_problems=n_test,
        contrasts=tuple((index[a], index[b]) for a, b in pairs),
    )


@dataclass
class World:
    """True effects: ``accuracy_shift[arm]`` added to the common true accuracy of every student."""

    seed_sd: float
    accuracy_shift: dict[int, float] = field(default_factory=dict)
    seed_sd_scale: dict[int, float] = field(default_factory=dict)  # arm -> factor on seed_sd (unequal noise)
    problem_sd: float = PROBLEM_SD
    arm_problem_sd: float = ARM_PROBLEM_SD

    def arm_seed_sd(self, arm: int) -> float:
        """Training noise of an arm; base (arm 0) has none."""
        return 0.0 if arm == 0 else self.seed_sd * self.seed_sd_scale.get(arm, 1.0)

    def logit_means(self, shape: StudyShape) -> tuple[np.ndarray, np.ndarray]:
        """(students x arms) logit means giving the intended true accuracies, and those accuracies."""
        n_arms = len(shape.arms)
        means = np.zeros((len(shape.students), n_arms))
        truth = np.zeros_like(means)
        for s, accuracy in enumerate(shape.accuracies()):
            for a in range(n_arms):
                target = accuracy + self.accuracy_shift.get(a, 0.0)
                sd = np.hypot(np.hypot(self.problem_sd, self.arm_problem_sd), self.arm_seed_sd(a))
                means[s, a] = logit_mean_for(target, sd)
                truth[s, a] = target
        return means, truth


def simulate_outcomes(rng: np.random.Generator, shape: StudyShape, world: World, n_studies: int) -> tuple[np.ndarray, np.ndarray]:
    """0/1 outcomes of ``n_studies`` studies, (studies, students, arms, seeds, problems) bool, and the
    (students, arms) true accuracies. Arm 0 is base: one evaluation copied to every seed."""
    means, truth = world.logit_means(shape)
    n_students, n_arms = means.shape
    k, n = shape.n_seeds, shape.n_problems
    f32 = np.float32
    logits = rng.standard_normal((n_studies, 1, 1, 1, n), dtype=f32) * f32(world.problem_sd)
    logits = logits + rng.standard_normal((n_studies, n_students, n_arms, 1, n), dtype=f32) * f32(world.arm_problem_sd)
    logits = logits + means[None, :, :, None, None].astype(f32)
    if world.seed_sd > 0:
        sds = np.array([world.arm_seed_sd(a) for a in range(n_arms)], dtype=f32)  # base: untrained, 0
        logits = logits + rng.standard_normal((n_studies, n_students, n_arms, k, 1), dtype=f32) * sds[:, None, None]
    else:
        logits = np.broadcast_to(logits, (n_studies, n_students, n_arms, k, n))
    # correct when u < logistic(x), i.e. logit(u) < x: one log per draw instead of an exp per logit
    draws = rng.random((n_studies, n_students, n_arms, k, n), dtype=f32)
    draws[:, :, 0] = draws[:, :, 0, :1]  # base: one evaluation, the same answers for every seed
    with np.errstate(divide="ignore"):
        return np.log(draws) - np.log1p(-draws) < logits, truth


def study_frame(outcomes: np.ndarray, shape: StudyShape) -> pl.DataFrame:
    """One simulated study, (students, arms, seeds, problems) outcomes, as an eval_results frame."""
    s, a, k, j = np.meshgrid(*[np.arange(d) for d in outcomes.shape], indexing="ij")
    return pl.DataFrame(
        {
            "dataset": np.array(shape.arms)[a.ravel()],
            "student": np.array(shape.students)[s.ravel()],
            "seed": k.ravel().astype(np.int64),
            "problem_id": np.char.add("p", j.ravel().astype(str)),
            "is_correct": outcomes.ravel().astype(bool),
            "difficulty": np.ones(outcomes.size, dtype=np.int64),
        }
    )


@dataclass
class Tally:
    """Counts over simulated studies."""

    studies: int = 0
    any_false_positive: int = 0
    intervals: int = 0
    covered: int = 0
    power_trials: int = 0
    detected: int = 0

    def add(self, other: Tally) -> None:
        for name in vars(self):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @property
    def fwer(self) -> float:
        return self.any_false_positive / self.studies if self.studies else float("nan")

    @property
    def coverage(self) -> float:
        return self.covered / self.intervals if self.intervals else float("nan")

    @property
    def power(self) -> float:
        return self.detected / self.power_trials if self.power_trials else float("nan")


def study_statistics(outcomes: np.ndarray, shape: StudyShape):
    """What the report computes, for a batch of studies: (studies, students, arms, seeds, problems)
    outcomes -> the arms' interval bounds (studies, students, arms) and the contrasts' Holm-adjusted
    p-values and differences (studies, students, contrasts). Arm 0 (base) uses its own training-noise
    estimate, the others one pooled per student, as ``accuracy_summary`` and ``contrast_table`` do."""
    terms = [arm_terms(outcomes[:, :, a]) for a in range(outcomes.shape[2])]
    pooled = seed_noise(terms[1:])
    noise = [seed_noise(terms[:1])] + [pooled] * (len(terms) - 1)
    bounds = [arm_estimate(t, z).interval() for t, z in zip(terms, noise)]
    low = np.stack([b[0] for b in bounds], axis=-1)
    high = np.stack([b[1] for b in bounds], axis=-1)
    if not shape.contrasts:
        empty = np.zeros((*outcomes.shape[:2], 0))
        return low, high, empty, empty
    estimates = [contrast_estimate(terms[a], terms[b], noise[a], noise[b]) for a, b in shape.contrasts]
    p = np.stack([e.p_value() for e in estimates], axis=-1)
    diff = np.stack([e.estimate for e in estimates], axis=-1)
    adjusted = holm(p.reshape(p.shape[0], -1)).reshape(p.shape)  # one family per study: students x contrasts
    return low, high, adjusted, diff


def null_tally(
    rng: np.random.Generator, shape: StudyShape, seed_sd: float, n_studies: int, chunk: int = 25, world: World | None = None
) -> Tally:
    """FWER and coverage over ``n_studies`` null studies (all arms truly equal, or ``world``): a false
    positive is a distinguishable contrast between two arms of equal true accuracy."""
    tally = Tally()
    world = world or World(seed_sd=seed_sd)
    done = 0
    while done < n_studies:
        size = min(chunk, n_studies - done)
        outcomes, truth = simulate_outcomes(rng, shape, world, size)
        low, high, adjusted, _ = study_statistics(outcomes, shape)
        tally.intervals += low.size
        tally.covered += int(np.sum((low <= truth) & (truth <= high)))
        null = np.array([[np.isclose(row[a], row[b]) for a, b in shape.contrasts] for row in truth], dtype=bool)
        false_positive = (adjusted < ALPHA) & null.reshape((1, *null.shape))
        tally.any_false_positive += int(np.sum(false_positive.reshape(size, -1).any(axis=1)))
        tally.studies += size
        done += size
    return tally


def power_contrast(shape: StudyShape) -> int | None:
    """Index of the contrast a power study targets: the first one between two trained arms, else the first."""
    if not shape.contrasts:
        return None
    for i, (a, b) in enumerate(shape.contrasts):
        if a != 0 and b != 0:
            return i
    return 0


def power_tally(
    rng: np.random.Generator, shape: StudyShape, seed_sd: float, n_studies: int, effect: float = POWER_EFFECT, chunk: int = 25
) -> Tally:
    """Power: arm a of the target contrast is truly ``effect`` better than every other arm."""
    tally = Tally()
    target = power_contrast(shape)
    if target is None:
        return tally
    better = shape.contrasts[target][0]
    world = World(seed_sd=seed_sd, accuracy_shift={better: effect})
    done = 0
    while done < n_studies:
        size = min(chunk, n_studies - done)
        outcomes, _ = simulate_outcomes(rng, shape, world, size)
        _, _, adjusted, diff = study_statistics(outcomes, shape)
        hit = (adjusted[:, :, target] < ALPHA) & (diff[:, :, target] > 0)
        tally.power_trials += hit.size
        tally.detected += int(hit.sum())
        done += size
    return tally


def calibrate(
    shape: StudyShape,
    studies: int,
    seed: int = 0,
    seed_sds: tuple[float, ...] = SEED_SDS,
    power_shape: StudyShape | None = None,
    log: Callable[[str], None] = print,
) -> tuple[Tally, dict[float, Tally]]:
    """Null and power studies split evenly over ``seed_sds``; returns the pooled tally and one per level."""
    rng = np.random.default_rng(seed)
    power_shape = power_shape or shape
    pooled, by_level = Tally(), {}
    for i, sd in enumerate(seed_sds):
        n = studies // len(seed_sds) + (1 if i < studies % len(seed_sds) else 0)
        start = time.perf_counter()
        tally = null_tally(rng, shape, sd, n)
        tally.add(power_tally(rng, power_shape, sd, n))
        by_level[sd] = tally
        pooled.add(tally)
        log(
            f"seed_sd={sd:g}: {n} null + {n} power studies: fwer={tally.fwer:.3f} coverage={tally.coverage:.3f} "
            f"power={tally.power:.3f} ({time.perf_counter() - start:.1f} s)"
        )
    return pooled, by_level


def run_calibration(
    experiment,
    studies: int = 2000,
    seed: int = 0,
    contrasts: list[tuple[str, str]] | None = None,
    seed_sds: tuple[float, ...] = SEED_SDS,
    log: Callable[[str], None] = print,
) -> Tally:
    """``trace-assets calibrate``: simulate ``studies`` null studies shaped like ``experiment`` (and as many
    power studies at 1,319 problems x 3 seeds), print progress, and end with the line
    ``fwer=<x> coverage=<y> power=<z>`` pooled over all studies."""
    shape = shape_from_experiment(experiment, contrasts)
    power_shape = shape_from_experiment(experiment, contrasts, n_problems=POWER_PROBLEMS, n_seeds=POWER_SEEDS)
    names = [(shape.arms[a], shape.arms[b]) for a, b in shape.contrasts]
    target = power_contrast(shape)
    log(
        f"experiment {experiment.name}: arms {list(shape.arms)}, {len(shape.students)} students, {shape.n_seeds} seeds, "
        f"{shape.n_problems} problems; {len(names)} contrasts per student (Holm over {len(names) * len(shape.students)}): "
        f"{', '.join(f'{a}-{b}' for a, b in names)}"
    )
    log(
        f"world: problem logit sd {PROBLEM_SD}, arm x problem sd {ARM_PROBLEM_SD}, training noise (arm x seed logit sd) "
        f"{', '.join(f'{sd:g}' for sd in seed_sds)}; power: {names[target][0]} +{POWER_EFFECT * 100:g} points in "
        f"{names[target][0]}-{names[target][1]} at {POWER_PROBLEMS} problems x {POWER_SEEDS} seeds"
        if target is not None
        else "world: no contrasts, no fwer or power"
    )
    start = time.perf_counter()
    pooled, _ = calibrate(shape, studies, seed, seed_sds, power_shape, log)
    log(
        f"{pooled.studies} null studies, {pooled.intervals} intervals, {pooled.power_trials} power trials in "
        f"{time.perf_counter() - start:.0f} s"
    )
    log(f"fwer={pooled.fwer:.3f} coverage={pooled.coverage:.3f} power={pooled.power:.3f}")
    return pooled
