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
    ENGINE_WAKE_S,
    EngineStarts,
    completion_tokens,
    eval_gpu_hours,
    evaluation_engine,
    failure_judge_gpu_hours,
    failure_judge_on_evaluation_engine,
    few_sequences_gpu_hours,
    generation_gpu_hours,
    judge_gpu_hours,
    local_model,
    model_billions,
    problem_splits,
    sft_gpu_hours,
    shares_engine,
    teacher_generations,
    training_tokens_per_seed,
    wakes_for_evaluation,
)
from trace_assets.experiment import DatasetRecipe, DatasetRules, Experiment, ModelConfig, RevisionConfig
from trace_assets.loop.revision import REVISION_MAX_TOKENS
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


def round_steps(
    experiment: Experiment, style: str, rates: Rates | None = None, number: int = 1, engines: EngineStarts | None = None
) -> dict[str, float]:
    """Dry-run's GPU seconds of each GPU step of round ``number`` of ``style``'s chain (trace_assets/estimates.py,
    with the measured rates of trace_assets/rates.py), as the loop runs it: a round is one Dagster run in one
    process (``run_loop``'s ``execute_in_process``, what bench/study_run.py and the demo call), whose
    GenerationResource keeps its vLLM engine for the next call of the same engine key until the round's
    training takes its card back, and stops it when the round ends.

    - ``round_styles``: round 0 reads the style file (no GPU); a revised round samples ``max_attempts`` reviser
      replies in one call: an engine start and a few sequences of up to REVISION_MAX_TOKENS.
    - ``round_traces``: the teacher's samples of the train problems (validation carved out) at the measured rate,
      on the reviser's engine where the reviser is the teacher's model and settings (the default), and the
      judge's verdicts, on the teacher's engine where it shares it (:func:`estimates.shares_engine`). Round 0's
      traces and verdicts are the study's teacher_traces and judged_traces (the same style file, teacher,
      problems and sampling: ``revision.styles`` are among ``styles``), read from the generation cache: none.
    - ``round_checkpoints``: one launch for every dataset x student x seed of the round (train_or_reuse), the
      expected kept share of the train problems (estimates.training_tokens_per_seed), no first-run warm-up (the
      study's checkpoints paid it).
    - ``round_evals``: the trained checkpoints on validation and test, one engine a student.
    - ``round_failures``: the failure judge over the validation answers, on the evaluation engine where the judge
      is the (last) student's model under its evaluation engine settings, else an engine start.

    Engine starts are warm (the study's stages started every model before), except, with ``engines`` (dry-run's
    record of the models started so far), a reviser whose model has not run yet. An upper bound for a round that
    keeps its parent's text (every reviser reply rejected): its traces, checkpoints and answers are its parent's,
    from the cache and the saved checkpoints, and only the reviser runs. Under the multiprocess executor
    (a round the ``next_round`` sensor launches under the Dagster daemon) every step is a process of its own and
    each generating step starts its engine: up to four starts where this counts two.

    With ``gpu.sleep_engines`` the engine a run leaves asleep is woken by the next call of its key rather than
    started (ENGINE_WAKE_S): the reviser wakes the one the run before the round left (the failure judge's:
    the evaluation engine where it shares it), and the evaluation wakes the one the round's generation left
    before its training."""
    rates = rates or load_rates()

    def cold(model: str, work: float) -> bool:
        return engines is not None and engines.cold(model, work)

    splits = problem_splits(experiment)
    teacher, judge, reviser, training = experiment.teacher, experiment.judge, experiment.reviser(), experiment.training
    steps = dict.fromkeys(("round_styles", "round_traces", "round_checkpoints", "round_evals", "round_failures"), 0.0)
    running: ModelConfig | None = None  # the model whose engine the round's GenerationResource holds
    on_evaluation = failure_judge_on_evaluation_engine(experiment)
    last_student = list(experiment.students.values())[-1]
    # gpu.sleep_engines: the engine the process holds asleep as the round begins (the run before ended with the
    # failure judge), and later the one the round's generation leaves asleep through its training
    held = (evaluation_engine(last_student) if on_evaluation else judge) if experiment.gpu.sleep_engines else None
    if number > 0:
        replies = experiment.revision.max_attempts if experiment.revision else 1
        reply_tokens = max(reviser.sampling.max_tokens, REVISION_MAX_TOKENS)  # revision.revision_request's
        billions = model_billions(reviser.model)
        woken = held is not None and shares_engine(held, reviser)
        steps["round_styles"] = few_sequences_gpu_hours(
            replies,
            reply_tokens,
            billions,
            "sampled",
            rates,
            reviser.gpus,
            not woken and cold(reviser.model, replies),
            engine=not woken,
        ) + (ENGINE_WAKE_S / 3600 if woken else 0.0)
        running = reviser
    samples = teacher_generations(experiment, [style], splits.train) if number > 0 else 0
    trace_tokens, verdict_tokens = completion_tokens(experiment, generated=splits.generated)
    on_reviser = running is not None and shares_engine(running, teacher)
    traces = generation_gpu_hours(
        samples * trace_tokens,
        model_billions(teacher.model),
        "sampled",
        rates,
        teacher.gpus,
        not on_reviser and cold(teacher.model, samples),
        engine=not on_reviser,
    )
    on_teacher = samples > 0 and shares_engine(teacher, judge)
    verdicts = judge_gpu_hours(
        samples,
        verdict_tokens,
        model_billions(judge.model),
        rates,
        judge.gpus,
        not on_teacher and cold(judge.model, samples),
        engine=not on_teacher,
    )
    steps["round_traces"] = traces + verdicts
    if held is not None:
        held = running or held
        if samples > 0:
            held = teacher if on_teacher else judge
    recipes = round_recipes(experiment.datasets, style)
    runs = len(recipes) * len(training.seeds)  # a student's: every dataset of the style, once per seed
    tokens = training_tokens_per_seed(experiment, recipes, splits, rates) * len(training.seeds)
    answers = runs * (splits.validation + splits.test)
    for place, student in enumerate(experiment.students.values()):
        billions = model_billions(student.model)
        launches = 1 if place == 0 else 0  # one launch trains every student's runs
        steps["round_checkpoints"] += sft_gpu_hours(
            tokens, runs, billions, rates, training.processes, launches, training.compile, fused=training.fused_lm_head
        )
        tokens_out = answers * experiment.evaluation.max_tokens * 0.5
        woken = answers > 0 and wakes_for_evaluation(held, student)
        held = None  # woken, or stopped for another engine key
        steps["round_evals"] += eval_gpu_hours(
            tokens_out,
            billions,
            runs,
            rates,
            cold=cold(student.model, answers),
            local_base=local_model(student.model),
            woken=woken,
        )
    validation_answers = runs * splits.validation * len(experiment.students)
    steps["round_failures"] = failure_judge_gpu_hours(
        experiment,
        validation_answers,
        rates,
        cold=not on_evaluation and cold(judge.model, validation_answers),
        engine=not on_evaluation,
        untrained=0,
        trained=len(recipes) * splits.validation * len(experiment.students),
    )
    return {step: hours * 3600 for step, hours in steps.items()}


def round_gpu_hours(
    experiment: Experiment, style: str, rates: Rates | None = None, number: int = 1, engines: EngineStarts | None = None
) -> float:
    """Dry-run's estimate of round ``number`` of ``style``'s chain (:func:`round_steps`); by default a revised
    round, what the stop rule's GPU-hour budget charges each next round."""
    return sum(round_steps(experiment, style, rates, number, engines).values()) / 3600


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
