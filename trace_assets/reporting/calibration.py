"""``trace-assets calibrate``: how often the report's statistics are wrong, measured by simulation.

Synthetic studies shaped like an experiment file (its untrained arms and datasets, students, seeds,
test size, planned contrasts and interactions) are pushed, one study at a time, through the functions
the report itself calls (trace_assets/reporting/stats.py: ``study_noise``, ``summary_rows`` behind
``accuracy_summary``, ``contrast_rows`` behind ``contrast_table``; only the eval_results frame -> arms
reshaping, ``arms_of``, is skipped, and a test checks the frame path gives the same numbers). Per world:

* fwer: share of null studies (every arm, untrained ones included, has the same true accuracy) in which
  at least one contrast or interaction is called distinguishable (Holm-adjusted p < 0.05);
* coverage: share of 95% accuracy intervals (every arm of every student of every study) that contain
  the arm's true accuracy (for an arm whose training noise is unknown, the interval is labelled
  conditional on its run, and is checked against that run's own expected accuracy); also the worst
  single arm's coverage;
* power (a world of its own): share of (study, student) pairs in which a trained arm truly ``effect``
  better than every other arm is found distinguishable in the right direction by its planned contrast.

The worlds: equal training noise; one trained arm at 3x and at 8x the others' SD; one seed everywhere with
``statistics.seed_sd`` declared (the true value) and without (then nothing may be called distinguishable);
one arm with a single seed while the others have the experiment's; two untrained arms (zero-shot and
few-shot) against which ``baseline`` contrasts are tested; and no training noise at all.

The world's model. Problem j has a logit difficulty theta_j ~ Normal(0, problem_sd) shared by all arms
and students (plus a student offset setting that student's accuracy), each arm has its own per-problem
deviation v_aj ~ Normal(0, arm_problem_sd), and each training run (arm x seed) a logit shift
u_as ~ Normal(0, seed_sd x the arm's factor): the training noise. A trained run answers problem j
correctly with probability logistic(offset + theta_j + v_aj + delta_a + u_as), independently per run.
The untrained arms are evaluated once, their outcomes copied to every seed (greedy decoding of one model).
An arm's true accuracy is E[logistic(offset + delta_a + Z sqrt(problem_sd^2 + arm_problem_sd^2 +
seed_sd_a^2))] (Gauss-Hermite quadrature); delta_a is solved so that arms meant to be equal have exactly
equal true accuracy.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
from scipy.optimize import brentq
from scipy.special import expit

from trace_assets.experiment import BASE_DATASETS
from trace_assets.reporting.stats import (
    ASSUMED_SEED_SD,
    PLANNING_ARM_PROBLEM_SD,
    PLANNING_PROBLEM_SD,
    Interaction,
    NoiseSettings,
    PlanningNoise,
    contrast_rows,
    detectable_difference,
    holm_family_size,
    make_arm,
    planning_df,
    study_noise,
    summary_rows,
)

POWER_EFFECT = 0.05
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
    """What a simulated study looks like: arm names (untrained ones first), students, seeds, problems,
    the planned contrasts by name (``baseline`` allowed) and interactions (a, b, student 1, student 2)."""

    arms: tuple[str, ...]
    students: tuple[str, ...]
    n_seeds: int
    n_problems: int
    contrasts: tuple[tuple[str, str], ...]
    interactions: tuple[Interaction, ...] = ()
    student_accuracies: tuple[float, ...] = ()

    def accuracies(self) -> tuple[float, ...]:
        """True accuracy of each student's arms when they are all equal: spread from 0.3 to 0.75."""
        if self.student_accuracies:
            return self.student_accuracies
        return tuple(np.linspace(0.3, 0.75, len(self.students))) if len(self.students) > 1 else (0.5,)

    @property
    def trained(self) -> tuple[str, ...]:
        return tuple(arm for arm in self.arms if arm not in BASE_DATASETS)


def shape_from_experiment(experiment, n_problems: int | None = None, n_seeds: int | None = None) -> StudyShape:
    """The study shape of an experiment: its dataset partitions (untrained ones included), students, seeds,
    test size (null n_test: 1,319 for GSM8K, 500 otherwise, as the dry-run assumes), planned contrasts
    (A/A controls included) and interactions."""
    problems = experiment.problems
    return StudyShape(
        arms=tuple(experiment.dataset_keys()),
        students=tuple(experiment.students),
        n_seeds=n_seeds or len(experiment.training.seeds),
        n_problems=n_problems or problems.n_test or (1319 if problems.source == "gsm8k" else 500),
        contrasts=tuple(experiment.planned_contrasts()) + tuple(experiment.replicate_pairs()),
        interactions=tuple(experiment.interactions()),
    )


@dataclass(frozen=True)
class World:
    """One simulated world: training noise ``seed_sd`` (logit SD), per-arm factors on it, per-arm seed
    counts, true accuracy shifts, and the ``statistics.seed_sd`` the analysis is told (None: nothing)."""

    name: str
    seed_sd: float
    seed_sd_scale: dict[str, float] = field(default_factory=dict)
    seeds: dict[str, int] = field(default_factory=dict)
    all_seeds: int | None = None  # every arm's seed count (one seed everywhere)
    accuracy_shift: dict[str, float] = field(default_factory=dict)
    declared_sd: float | None = None
    problem_sd: float = PLANNING_PROBLEM_SD
    arm_problem_sd: float = PLANNING_ARM_PROBLEM_SD

    def arm_seed_sd(self, arm: str) -> float:
        return 0.0 if arm in BASE_DATASETS else self.seed_sd * self.seed_sd_scale.get(arm, 1.0)

    def arm_seeds(self, arm: str, shape: StudyShape) -> int:
        return self.seeds.get(arm, self.all_seeds or shape.n_seeds)


def worlds(shape: StudyShape, seed_sd: float) -> list[World]:
    """The null worlds ``calibrate`` runs, at the experiment's training noise ``seed_sd``."""
    first = shape.trained[0]
    return [
        World("equal noise", seed_sd),
        World("one arm at 3x SD", seed_sd, seed_sd_scale={first: 3.0}),
        World("one arm at 8x SD", seed_sd, seed_sd_scale={first: 8.0}),
        World("one seed, seed_sd declared", seed_sd, all_seeds=1, declared_sd=seed_sd),
        World("one seed, nothing declared", seed_sd, all_seeds=1),
        World("one arm with one seed", seed_sd, seeds={first: 1}),
        World("no training noise", 0.0),
    ]


def with_two_baselines(shape: StudyShape) -> StudyShape:
    """The shape with both untrained arms (zero-shot and few-shot), the stronger-baseline world."""
    if all(base in shape.arms for base in BASE_DATASETS):
        return shape
    return replace(shape, arms=(*BASE_DATASETS, *shape.trained))


def _truth(shape: StudyShape, world: World) -> tuple[np.ndarray, np.ndarray, float]:
    """(students x arms) logit means and true accuracies, and the problem-level logit SD."""
    spread = float(np.hypot(world.problem_sd, world.arm_problem_sd))
    means = np.zeros((len(shape.students), len(shape.arms)))
    truth = np.zeros_like(means)
    for s, accuracy in enumerate(shape.accuracies()):
        for a, arm in enumerate(shape.arms):
            truth[s, a] = accuracy + world.accuracy_shift.get(arm, 0.0)
            means[s, a] = logit_mean_for(truth[s, a], float(np.hypot(spread, world.arm_seed_sd(arm))))
    return means, truth, spread


def simulate(rng: np.random.Generator, shape: StudyShape, world: World, n_studies: int):
    """Outcomes of ``n_studies`` studies: per arm a (studies, students, seeds, problems) bool array and the
    (studies, students, seeds) conditional truth of each run; and the (students, arms) true accuracies."""
    means, truth, spread = _truth(shape, world)
    n, f32 = shape.n_problems, np.float32
    theta = rng.standard_normal((n_studies, 1, 1, n), dtype=f32) * f32(world.problem_sd)
    outcomes, run_truth = {}, {}
    for a, arm in enumerate(shape.arms):
        k, sd = world.arm_seeds(arm, shape), world.arm_seed_sd(arm)
        logits = theta + rng.standard_normal((n_studies, len(shape.students), 1, n), dtype=f32) * f32(world.arm_problem_sd)
        logits = logits + means[None, :, a, None, None].astype(f32)
        shift = rng.standard_normal((n_studies, len(shape.students), k), dtype=f32) * f32(sd)
        logits = logits + shift[..., None]
        draws = rng.random((n_studies, len(shape.students), 1 if arm in BASE_DATASETS else k, n), dtype=f32)
        with np.errstate(divide="ignore"):
            correct = np.log(draws) - np.log1p(-draws) < logits  # u < logistic(x)
        outcomes[arm] = np.broadcast_to(correct, (n_studies, len(shape.students), k, n))
        grid = np.linspace(-6 * sd - 1e-9, 6 * sd + 1e-9, 61)
        run_truth[arm] = np.stack(
            [
                np.interp(shift[:, s], grid, [population_accuracy(means[s, a] + g, spread) for g in grid])
                for s in range(len(shape.students))
            ],
            axis=1,
        )
    return outcomes, run_truth, truth


@dataclass
class Tally:
    """Counts over simulated studies."""

    studies: int = 0
    any_false_positive: int = 0
    intervals: int = 0
    covered: int = 0
    power_trials: int = 0
    detected: int = 0
    arm_intervals: dict[str, int] = field(default_factory=dict)
    arm_covered: dict[str, int] = field(default_factory=dict)

    @property
    def fwer(self) -> float:
        return self.any_false_positive / self.studies if self.studies else float("nan")

    @property
    def coverage(self) -> float:
        return self.covered / self.intervals if self.intervals else float("nan")

    @property
    def worst_arm_coverage(self) -> float:
        return min((self.arm_covered[a] / c for a, c in self.arm_intervals.items() if c), default=float("nan"))

    @property
    def power(self) -> float:
        return self.detected / self.power_trials if self.power_trials else float("nan")


PROBLEM_IDS: dict[int, np.ndarray] = {}


def problem_ids(n: int) -> np.ndarray:
    """Sorted problem ids p0000..., one array per size (shared by every arm: the same test problems)."""
    if n not in PROBLEM_IDS:
        PROBLEM_IDS[n] = np.char.add("p", np.char.zfill(np.arange(n).astype(str), 6))
    return PROBLEM_IDS[n]


def study_results(outcomes: dict[str, np.ndarray], shape: StudyShape, world: World, study: int):
    """The report's numbers for study ``study`` of a simulated batch: (summary rows, contrast rows, noise)."""
    problems = problem_ids(shape.n_problems)
    arms = {
        (arm, student): make_arm(outcomes[arm][study, s], problems)
        for s, student in enumerate(shape.students)
        for arm in shape.arms
    }
    noise = study_noise(arms, NoiseSettings(declared_sd=world.declared_sd))
    return summary_rows(arms, noise), contrast_rows(arms, noise, shape.contrasts, None, shape.interactions), noise


def run_world(
    rng: np.random.Generator, shape: StudyShape, world: World, n_studies: int, target: str | None = None, chunk: int = 20
) -> Tally:
    """Simulate ``n_studies`` studies of ``world``; count false positives and coverage (a null world) or,
    with ``target`` (an arm shifted in ``world.accuracy_shift``), how often its planned contrasts find it."""
    tally = Tally()
    _, truth, _ = _truth(shape, world)
    arm_index = {arm: a for a, arm in enumerate(shape.arms)}
    student_index = {student: s for s, student in enumerate(shape.students)}
    done = 0
    while done < n_studies:
        size = min(chunk, n_studies - done)
        outcomes, run_truth, _ = simulate(rng, shape, world, size)
        for i in range(size):
            summary, contrasts, noise = study_results(outcomes, shape, world, i)
            if target is not None:
                found = {r["student"] for r in contrasts if r["a"] == target and r["distinguishable"] and r["diff"] > 0}
                tally.power_trials += len(shape.students)
                tally.detected += len(found)
                continue
            for row in summary:
                if row["ci_low"] is None:
                    continue
                key = (row["dataset"], row["student"])
                s, a = student_index[row["student"]], arm_index[row["dataset"]]
                true = truth[s, a] if noise[key].known else float(run_truth[row["dataset"]][i, s].mean())
                hit = int(row["ci_low"] <= true <= row["ci_high"])
                tally.intervals += 1
                tally.covered += hit
                tally.arm_intervals[row["dataset"]] = tally.arm_intervals.get(row["dataset"], 0) + 1
                tally.arm_covered[row["dataset"]] = tally.arm_covered.get(row["dataset"], 0) + hit
            tally.any_false_positive += int(any(row["distinguishable"] for row in contrasts))
            tally.studies += 1
        done += size
    return tally


def power_target(shape: StudyShape) -> tuple[str, str] | None:
    """The contrast a power study targets: the first one between two trained arms, else the first."""
    for a, b in shape.contrasts:
        if a in shape.trained and b in shape.trained:
            return a, b
    return shape.contrasts[0] if shape.contrasts else None


def calibrate(
    shape: StudyShape,
    studies: int,
    seed_sd: float,
    declared_sd: float | None = None,
    effect: float = POWER_EFFECT,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> dict:
    """Every world of ``worlds`` plus the two-baseline world and a power world, ``studies`` studies each;
    returns the per-world figures and the summary (worst fwer, worst coverage, power)."""
    rng = np.random.default_rng(seed)
    results, fwers, coverages = [], [], []
    runs = [(w, shape) for w in worlds(shape, seed_sd)]
    runs.insert(6, (World("two untrained arms (baseline = each)", seed_sd), with_two_baselines(shape)))
    for world, world_shape in runs:
        start = time.perf_counter()
        tally = run_world(rng, world_shape, world, studies)
        fwers.append(round(tally.fwer, 4))
        coverages.append(round(tally.coverage, 4))
        results.append(
            {
                "world": world.name,
                "studies": tally.studies,
                "fwer": round(tally.fwer, 4),
                "coverage": round(tally.coverage, 4),
                "worst_arm_coverage": round(tally.worst_arm_coverage, 4),
            }
        )
        log(
            f"{world.name:<38} fwer={tally.fwer:.3f} coverage={tally.coverage:.3f} "
            f"(worst arm {tally.worst_arm_coverage:.3f}), {tally.studies} studies, {time.perf_counter() - start:.1f} s"
        )
    target = power_target(shape)
    power = float("nan")
    if target is not None:
        world = World("power", seed_sd, accuracy_shift={target[0]: effect}, declared_sd=declared_sd)
        tally = run_world(rng, shape, world, studies, target=target[0])
        power = tally.power
        planned = detectable_difference(
            "pair" if target[1] in shape.trained else "baseline",
            shape.n_problems,
            shape.n_seeds,
            family_size(shape),
            PlanningNoise(seed_sd, planning_df(len(shape.trained), shape.n_seeds), "simulated"),
        )
        log(
            f"power: {target[0]} +{effect * 100:g} points in {target[0]} - {target[1]} at training noise {seed_sd:g}: "
            f"{power:.3f} ({tally.power_trials} trials); planned detectable difference at 80%: {planned * 100:.1f} points"
        )
    worst_fwer = max(fwers)
    worst_coverage = max(coverages, key=lambda c: abs(c - 0.95))
    return {"worlds": results, "fwer": worst_fwer, "coverage": worst_coverage, "power": round(power, 4)}


def family_size(shape: StudyShape) -> int:
    untrained = sum(base in shape.arms for base in BASE_DATASETS)
    return holm_family_size(shape.contrasts, len(shape.students), len(shape.interactions), untrained)


def run_calibration(
    experiment,
    studies: int = 1000,
    seed: int = 0,
    output: str | None = None,
    command: str = "",
    log: Callable[[str], None] = print,
) -> dict:
    """``trace-assets calibrate``: ``studies`` studies per world shaped like ``experiment`` at its training
    noise (``statistics.seed_sd``, else the assumed 0.15 logit), printing one line per world and ending
    with ``fwer=<worst world> coverage=<worst world> power=<at the experiment's training noise>``;
    ``output``: also write the figures as JSON there."""
    shape = shape_from_experiment(experiment)
    statistics = experiment.statistics
    seed_sd = statistics.seed_sd if statistics.seed_sd is not None else ASSUMED_SEED_SD
    effect = statistics.target_difference or POWER_EFFECT
    log(
        f"experiment {experiment.name}: arms {list(shape.arms)}, {len(shape.students)} students, {shape.n_seeds} seeds, "
        f"{shape.n_problems} problems; {len(shape.contrasts)} contrasts per student and {len(shape.interactions)} "
        f"interactions (Holm over {family_size(shape)}); training noise logit SD {seed_sd:g}"
    )
    start = time.perf_counter()
    result = calibrate(shape, studies, seed_sd, statistics.seed_sd, effect, seed, log)
    log(f"{studies} studies per world in {time.perf_counter() - start:.0f} s")
    log(f"fwer={result['fwer']:.3f} coverage={result['coverage']:.3f} power={result['power']:.3f}")
    if output:
        payload = {
            "command": command,
            "experiment": experiment.name,
            "seed": seed,
            "studies_per_world": studies,
            "training_noise_logit_sd": seed_sd,
            "power_effect": effect,
            "shape": {
                "arms": list(shape.arms),
                "students": list(shape.students),
                "seeds": shape.n_seeds,
                "problems": shape.n_problems,
            },
            **result,
        }
        with open(output, "w") as handle:
            json.dump(payload, handle, indent=2)
            handle.write("\n")
    return result
