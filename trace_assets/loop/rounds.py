"""Rounds of the closed loop: their keys, what a round rebuilds, and when a chain of rounds stops. Pure.

A chain is one revised style: round 0 is its file as written, round N the reviser's rewrite of
round N-1 after the students' validation failures. Each round is a dynamic partition
``<style>_r<N>`` of the loop's assets.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import polars as pl

from trace_assets.estimates import (
    completion_tokens,
    eval_gpu_hours,
    generation_gpu_hours,
    model_billions,
    sft_gpu_hours,
)
from trace_assets.experiment import DatasetRecipe, DatasetRules, Experiment, RevisionConfig
from trace_assets.rates import Rates, load_rates
from trace_assets.reporting.stats import ALPHA, contrast_table, holm

ROUND_PARTITIONS = "style_rounds"
_KEY = re.compile(r"^(?P<style>[A-Za-z][A-Za-z0-9_]*)_r(?P<round>\d+)$")


def round_key(style: str, number: int) -> str:
    return f"{style}_r{number}"


def parse_round_key(key: str) -> tuple[str, int]:
    """(style, round) of ``<style>_r<N>``; a ValueError naming the key otherwise."""
    match = _KEY.match(key)
    if match is None:
        raise ValueError(f"'{key}' is not a round key (<style>_r<round>, e.g. normal_r2)")
    return match["style"], int(match["round"])


def parent_key(key: str) -> str | None:
    style, number = parse_round_key(key)
    return round_key(style, number - 1) if number > 0 else None


def round_recipes(recipes: Mapping[str, DatasetRecipe], style: str) -> dict[str, DatasetRecipe]:
    """The round-0 recipes built from ``style``: what every round of its chain rebuilds, under the same names."""
    return {name: recipe for name, recipe in recipes.items() if recipe.style == style}


def round_rules(rules: DatasetRules, recipes: Mapping[str, DatasetRecipe]) -> DatasetRules:
    """Round 0's rules restricted to a round's arms: the same eligibility; the comparison groups among
    them (so arms that shared problems in round 0 share them again); token-matching groups made only of them."""
    names = set(recipes)
    groups = rules.comparisons.groups
    restricted = None if groups is None else [kept for group in groups if (kept := [n for n in group if n in names])]
    comparisons = rules.comparisons.model_copy(update={"groups": restricted})
    matching = [group for group in rules.token_matching if set(group.datasets) <= names]
    return DatasetRules(eligibility=rules.eligibility, comparisons=comparisons, token_matching=matching)


@dataclass(frozen=True)
class RoundOutcome:
    """A finished round of a chain, as the stop rule sees it."""

    round: int
    improved: bool | None  # a distinguishable gain over its parent on validation; None for round 0


def round_change(validation: pl.DataFrame, key: str, parent: str) -> pl.DataFrame:
    """Round ``key`` against ``parent`` on validation, per dataset x student, paired by problem with
    both rounds' seed noise and Holm over the rows (``stats.contrast_table``). ``validation``: round_evals
    rows (validation split) of both rounds. Columns of ``CONTRAST_SCHEMA`` plus ``dataset``."""
    frames = []
    for dataset in sorted(set(validation.filter(pl.col("round_key") == key)["dataset"])):
        arms = validation.filter(pl.col("dataset") == dataset).with_columns(pl.col("round_key").alias("dataset"))
        frames.append(contrast_table(arms, [(key, parent)]).with_columns(pl.lit(dataset).alias("dataset")))
    if not frames:
        return pl.DataFrame()
    table = pl.concat(frames)
    # one Holm family for the round (every dataset x student), not one per dataset
    adjusted = holm(table["p_value"].fill_null(float("nan")).to_numpy())
    return table.with_columns(
        pl.Series("p_adjusted", adjusted).fill_nan(None),
        (pl.Series(adjusted).fill_nan(None) < ALPHA).fill_null(False).alias("distinguishable"),
    )


def improved(change: pl.DataFrame) -> bool:
    """A round improved when some dataset x student gained distinguishably on validation."""
    return bool(change.height and change.filter(pl.col("distinguishable") & (pl.col("diff") > 0)).height)


def round_gpu_hours(experiment: Experiment, style: str, rates: Rates | None = None) -> float:
    """Dry-run's estimate (trace_assets/estimates.py, with the measured rates of trace_assets/rates.py) of one
    round of ``style``'s chain: its teacher samples and judge calls, its datasets' training runs and
    their validation + test evaluations, engine start-ups included."""
    rates = rates or load_rates()
    problems = experiment.problems
    n_train = problems.n_train or 1000
    n_test = problems.n_test or 500
    fraction = experiment.validation_fraction()
    n_validation = n_train * fraction
    samples = (n_train - n_validation) * experiment.teacher.sampling.n
    teacher, judge = experiment.teacher, experiment.judge
    trace_tokens, judge_tokens = completion_tokens(experiment)
    hours = generation_gpu_hours(samples * trace_tokens, model_billions(teacher.model), "sampled", rates, teacher.gpus)
    hours += generation_gpu_hours(samples * judge_tokens, model_billions(judge.model), "greedy", rates, judge.gpus)
    launches = len(round_recipes(experiment.datasets, style))  # one a dataset x student, its seeds in it
    runs = launches * len(experiment.training.seeds)
    for student in experiment.students.values():
        billions = model_billions(student.model)
        tokens = (n_train - n_validation) * trace_tokens * experiment.training.epochs * runs
        training = experiment.training
        hours += sft_gpu_hours(tokens, runs, billions, rates, training.processes, launches, training.compile)
        hours += eval_gpu_hours(runs * (n_validation + n_test) * experiment.evaluation.max_tokens * 0.5, billions, runs, rates)
    return hours


def stop_reason(outcomes: Sequence[RoundOutcome], config: RevisionConfig, hours_per_round: float) -> str | None:
    """Why a chain stops after its last finished round, or None to start the next one.

    - ``rounds``: the experiment's number of revision rounds is done;
    - ``stop_after``: that many rounds in a row without a distinguishable gain on validation;
    - ``gpu_hours``: the next round would take the chain's estimated GPU hours past the budget."""
    done = max((o.round for o in outcomes), default=-1)
    if done >= config.rounds:
        return f"all {config.rounds} revision rounds done"
    revised = [o for o in sorted(outcomes, key=lambda o: o.round) if o.round > 0]
    recent = revised[-config.stop_after :]
    if len(recent) == config.stop_after and not any(o.improved for o in recent):
        return f"{config.stop_after} round(s) in a row without a distinguishable gain on validation"
    if config.gpu_hours is not None and (done + 2) * hours_per_round > config.gpu_hours:
        return (
            f"round {done + 1} would take the chain to ~{(done + 2) * hours_per_round:.2f} estimated GPU h, "
            f"past the budget of {config.gpu_hours}"
        )
    return None
