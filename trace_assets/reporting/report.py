"""The report's Markdown and plots from the study's tables: pure, no Dagster.

It reads like a paper's results section: accuracy per student x dataset (mean +- SD over seeds and
a 95% interval), the baselines, the planned contrasts (difference, interval, Holm-adjusted p,
direction), accuracy by difficulty with intervals, failure modes against the stronger baseline,
what each arm excluded and trimmed, token budgets and accessibility, and the judge's agreement
with the format rules. Every statistic comes from ``reporting.stats`` / ``reporting.failures``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import polars as pl

from trace_assets.answers import ACCEPTED_FORMATS
from trace_assets.datasets.recipes import exclusion_counts
from trace_assets.metadata import markdown_table
from trace_assets.plots import accessibility_png, accuracy_png, loss_curves_png, png_markdown
from trace_assets.reporting.failures import failure_summary
from trace_assets.reporting.stats import (
    METHOD,
    Interaction,
    NoiseSettings,
    accuracy_summary,
    contrast_table,
    difficulty_bucket,
    difficulty_level,
    noise_floor_note,
    noise_table,
    power_lines,
    stronger_baselines,
)
from trace_assets.tasks import TASKS, get_task


@dataclass
class Report:
    text: str  # Markdown; plots referenced by file name
    plots: dict[str, bytes]  # file name -> PNG
    distinguishable: int  # planned contrasts whose adjusted p < 0.05
    # every row the report tested (contrast_table's columns): planned contrasts, interactions and the A/A
    # controls, the last marked by aa_control
    contrasts: pl.DataFrame = field(default_factory=pl.DataFrame)

    def inline(self) -> str:
        """The Markdown with every plot embedded, for the Dagster UI."""
        text = self.text
        for name, png in self.plots.items():
            text = text.replace(f"![{name}]({name})", png_markdown(png, name))
        return text


@dataclass
class StudyTables:
    """What the report reads (the report asset's inputs)."""

    accuracy: pl.DataFrame
    eval_results: pl.DataFrame
    failure_modes: pl.DataFrame
    training_log: pl.DataFrame
    trace_stats: pl.DataFrame
    checkpoints: pl.DataFrame
    sft_examples: pl.DataFrame
    dataset_exclusions: pl.DataFrame
    judged_traces: pl.DataFrame
    problems: pl.DataFrame | None = None  # for per-task breakdowns (MATH level and type)


TRAINING_NOTE = (
    "`training` says which model answered: `pooled`, one model per seed fine-tuned on every task's examples; "
    "`per_task`, one model per task and seed, fine-tuned on that task's examples alone and answering only that "
    "task's problems (a per-task arm's pooled accuracy is its task models' together); `none`, the untrained student."
)


def table(frame: pl.DataFrame) -> str:
    return markdown_table(frame, digits=3) if frame.height else "_(none)_"


def _pm(mean: float | None, sd: float | None) -> str:
    if mean is None:
        return "–"
    return f"{mean:.3f} ± {sd:.3f}" if sd is not None else f"{mean:.3f}"


def _interval(low: float | None, high: float | None) -> str:
    return "–" if low is None or high is None else f"[{low:.3f}, {high:.3f}]"


def _interval_column(prefix: str = "", name: str = "95% interval") -> pl.Expr:
    """The "95% interval" column shown for every accuracy and contrast, from ci_low and ci_high
    (``prefix="family_"``: a contrast's simultaneous interval over its Holm family)."""
    low, high = f"{prefix}ci_low", f"{prefix}ci_high"
    return pl.struct(low, high).map_elements(lambda r: _interval(r[low], r[high]), return_dtype=pl.Utf8).alias(name)


FAMILY_INTERVAL = "family interval"
FAMILY_NOTE = (
    f"`{FAMILY_INTERVAL}`: Bonferroni's simultaneous 95% interval over the Holm family. It covers 0 wherever "
    "Holm does not call a contrast distinguishable (and may cover 0 for some it does: Holm steps down); the "
    "95% interval is each contrast's own and may exclude 0 in a contrast the family does not call distinguishable."
)


def results_table(accuracy: pl.DataFrame) -> pl.DataFrame:
    return accuracy.select(
        "student",
        "dataset",
        "training",
        "n",
        "n_seeds",
        pl.struct("accuracy", "sd_seeds")
        .map_elements(lambda r: _pm(r["accuracy"], r["sd_seeds"]), return_dtype=pl.Utf8)
        .alias("accuracy (mean ± SD over seeds)"),
        _interval_column(),
        "accuracy_strict",
    )


def contrasts_section(contrasts: pl.DataFrame) -> list[str]:
    shown = contrasts.select(
        "student",
        "a",
        "b",
        "n_problems",
        "accuracy_a",
        "accuracy_b",
        "diff",
        _interval_column(),
        _interval_column("family_", FAMILY_INTERVAL),
        "p_value",
        "p_adjusted",
        "direction",
        "distinguishable",
    )
    verdicts = []
    for r in contrasts.iter_rows(named=True):
        if r["p_adjusted"] is None:
            verdicts.append(f"- **{r['a']}** vs **{r['b']}** ({r['student']}): too few shared problems to test")
        elif r["conditional"]:
            verdicts.append(
                f"- **{r['a']}** vs **{r['b']}** ({r['student']}): needs at least two seeds (or a declared "
                f"`statistics.seed_sd`): training noise unknown. Per-run test, conditional on these runs only: difference "
                f"{r['diff']:+.3f}, adjusted p = {r['p_adjusted']:.2g}"
            )
        elif r["distinguishable"]:
            verdicts.append(
                f"- **{r['a']}** {r['direction'][1]} **{r['b']}** ({r['student']}): difference {r['diff']:+.3f} "
                f"{_interval(r['ci_low'], r['ci_high'])}, Holm-adjusted p = {r['p_adjusted']:.3g}"
            )
        else:
            verdicts.append(
                f"- **{r['a']}** vs **{r['b']}** ({r['student']}): not distinguishable "
                f"(difference {r['diff']:+.3f}, adjusted p = {r['p_adjusted']:.2f}, n = {r['n_problems']})"
            )
    return [table(shown), FAMILY_NOTE, "\n".join(verdicts) or "_(no planned contrast has both arms)_"]


def by_difficulty(eval_results: pl.DataFrame, bucket_of: Callable[[int], str] = difficulty_bucket) -> pl.DataFrame:
    """Accuracy with intervals per difficulty bucket (``bucket_of`` a problem's difficulty): the same estimator,
    within each bucket."""
    bucketed = eval_results.with_columns(pl.col("difficulty").map_elements(bucket_of, return_dtype=pl.Utf8).alias("bucket"))
    frames = [
        accuracy_summary(group.drop("bucket")).with_columns(pl.lit(bucket).alias("bucket"))
        for (bucket,), group in bucketed.group_by(["bucket"])
    ]
    if not frames:
        return pl.DataFrame()
    return (
        pl.concat(frames)
        .select(
            "student",
            "dataset",
            "bucket",
            "n",
            "accuracy",
            _interval_column(),
        )
        .sort(["student", "dataset", "bucket"])
    )


def _grouped_accuracy(evals: pl.DataFrame, column: str) -> pl.DataFrame:
    """The accuracy table's estimator within each value of ``column``."""
    frames = [
        accuracy_summary(group.drop(column)).with_columns(pl.lit(value).cast(pl.Utf8).alias(column))
        for (value,), group in evals.group_by([column])
    ]
    if not frames:
        return pl.DataFrame()
    return (
        pl.concat(frames)
        .select(
            column,
            "student",
            "dataset",
            "training",
            "n",
            "accuracy",
            _interval_column(),
            "accuracy_strict",
        )
        .sort([column, "student", "dataset"])
    )


def reference_notes(tasks: list[str]) -> str:
    """What an H arm (the reference solutions) trained on, for each task whose references are not a human's worked
    solution: H against the teacher's traces then compares explanations with bare steps or code."""
    notes = [(task, get_task(task).reference_note) for task in tasks if task in TASKS]
    return "\n".join(f"- **H on {task}** is {note}." for task, note in notes if note)


def task_sections(
    evals: pl.DataFrame, contrasts: list[tuple[str, str]], problems: pl.DataFrame | None, settings: NoiseSettings | None = None
) -> list[str]:
    """Per task: accuracy, the planned contrasts (each task its own Holm family, as separate studies would
    be), and for MATH accuracy per level and per subject type. Empty for a study of GSM8K alone."""
    tasks = sorted(evals["task"].unique().to_list()) if "task" in evals.columns and evals.height else []
    if tasks in ([], ["gsm8k"]):
        return []
    sections = [
        "## Results per task",
        "Every statistic above pools the tasks' test problems; here each task is its own study: the same "
        "estimator per task, and the planned contrasts Holm-adjusted within each task.",
        TRAINING_NOTE,
        table(_grouped_accuracy(evals, "task")),
        *[note for note in [reference_notes(tasks)] if note],
    ]
    for task in tasks:
        subset = evals.filter(pl.col("task") == task)
        sections += [
            f"### {task}: planned contrasts",
            *contrasts_section(contrast_table(subset, contrasts, settings=settings)),
        ]
    if "math" in tasks and problems is not None and "task_metadata" in problems.columns:
        math = problems.filter(pl.col("task") == "math").select(
            "problem_id",
            pl.col("task_metadata").str.json_path_match("$.level").alias("level"),
            pl.col("task_metadata").str.json_path_match("$.type").alias("type"),
        )
        subset = evals.filter(pl.col("task") == "math").join(math, on="problem_id", how="inner")
        sections += [
            "### math: accuracy per level",
            table(_grouped_accuracy(subset.drop("type"), "level")),
            "### math: accuracy per type",
            table(_grouped_accuracy(subset.drop("level"), "type")),
        ]
    return sections


def loss_table(log: pl.DataFrame) -> pl.DataFrame:
    """Per dataset x student, the numbers behind the loss plot: each run's first and last logged train loss and
    its last and lowest eval loss, averaged over its seeds (the last eval loss also as an SD over seeds)."""
    if log.is_empty():
        return pl.DataFrame()
    per_run = (
        log.sort("step")
        .group_by(["dataset", "student", "seed"])
        .agg(
            pl.col("step").max().alias("steps"),
            pl.col("train_loss").drop_nulls().first().alias("train_loss_first"),
            pl.col("train_loss").drop_nulls().last().alias("train_loss_last"),
            pl.col("eval_loss").drop_nulls().last().alias("eval_loss_last"),
            pl.col("eval_loss").min().alias("eval_loss_lowest"),
        )
    )
    return (
        per_run.group_by(["dataset", "student"])
        .agg(
            pl.len().alias("seeds"),
            pl.col("steps").max(),
            pl.col("train_loss_first", "train_loss_last", "eval_loss_last", "eval_loss_lowest").mean(),
            pl.col("eval_loss_last").std().alias("eval_loss_last_sd"),
        )
        .sort(["student", "dataset"])
    )


def judge_agreement(judged: pl.DataFrame) -> pl.DataFrame:
    """Per style, how often the format rules and the judge agree on traces both ruled on."""
    both = judged.filter(pl.col("judge_parsed") & pl.col("judge_conforms").is_not_null())
    return (
        both.group_by("style")
        .agg(
            pl.len().alias("traces"),
            (pl.col("rules_pass") == pl.col("judge_conforms")).mean().alias("agreement"),
            (pl.col("rules_pass") & ~pl.col("judge_conforms")).sum().alias("rules_pass_judge_fails"),
            (~pl.col("rules_pass") & pl.col("judge_conforms")).sum().alias("rules_fail_judge_passes"),
        )
        .sort("style")
    )


def confidence_section(
    pairs: list[tuple[str, str]], evals: pl.DataFrame, examples: pl.DataFrame, settings: NoiseSettings | None = None
) -> list[str]:
    """Each confidence-filtered arm against its control (same fraction by the global mean): their
    sizes and the paired contrast, Holm-adjusted over these pairs as their own family."""
    if not pairs:
        return []
    sizes = examples.group_by("dataset").len().rename({"len": "examples"})
    shown = pl.DataFrame({"step_confidence": [a for a, _ in pairs], "mean_logprob": [b for _, b in pairs]})
    shown = shown.join(
        sizes.rename({"dataset": "step_confidence", "examples": "examples_step"}), on="step_confidence", how="left"
    )
    shown = shown.join(sizes.rename({"dataset": "mean_logprob", "examples": "examples_mean"}), on="mean_logprob", how="left")
    return [
        "## Confidence filtering: step-level confidence vs the global mean (its control)",
        "Each arm keeps the same fraction of its problems, ranked by the least confident step of their trace or by the "
        "trace's mean token log-probability; the datasets are the same size.",
        table(shown),
        *contrasts_section(contrast_table(evals, pairs, settings=settings)),
    ]


def aa_section(aa: pl.DataFrame) -> list[str]:
    """The A/A controls: a replicate (the same examples, other training seeds) against its original."""
    if aa.is_empty():
        return []
    verdicts = []
    for r in aa.iter_rows(named=True):
        pair = f"**{r['a']}** vs **{r['b']}** ({r['student']})"
        if r["p_adjusted"] is None:
            verdicts.append(f"- {pair}: too few shared problems to test")
        elif r["conditional"]:
            verdicts.append(
                f"- {pair}: not checkable yet: one seed and no training-noise estimate (run two seeds or declare "
                f"`statistics.seed_sd`); per-run difference {r['diff']:+.3f}"
            )
        elif r["distinguishable"]:
            verdicts.append(
                f"- {pair}: **DISTINGUISHABLE** (difference {r['diff']:+.3f}, adjusted p = {r['p_adjusted']:.2g}). Two trainings "
                "of the same examples should not differ: the runs (nondeterminism, a failed run) or the statistics are off; "
                "distrust the other contrasts until this is explained"
            )
        else:
            verdicts.append(
                f"- {pair}: not distinguishable, as it should be (difference {r['diff']:+.3f} "
                f"{_interval(r['ci_low'], r['ci_high'])}, family interval {_interval(r['family_ci_low'], r['family_ci_high'])}, "
                f"adjusted p = {r['p_adjusted']:.2f})"
            )
    return [
        "## A/A control: the same examples trained again with other seeds",
        "Each replicate has its original's examples and other training seeds; tested like every contrast (in the same "
        "Holm family), it should never be distinguishable.",
        table(
            aa.select(
                "student",
                "a",
                "b",
                "n_problems",
                "diff",
                _interval_column(),
                _interval_column("family_", FAMILY_INTERVAL),
                "p_adjusted",
                "distinguishable",
            )
        ),
        "\n".join(verdicts),
    ]


@dataclass(frozen=True)
class StatisticsPlan:
    """What the experiment tells the statistics beyond its contrasts: interactions, A/A controls
    (replicate, original), where training noise comes from, and the difference to detect."""

    interactions: tuple[Interaction, ...] = ()
    replicates: tuple[tuple[str, str], ...] = ()
    settings: NoiseSettings = field(default_factory=NoiseSettings)
    target_difference: float | None = None


def statistics_plan(experiment) -> StatisticsPlan:
    """The experiment's ``StatisticsPlan`` (its interactions, A/A controls and ``statistics`` section)."""
    return StatisticsPlan(
        tuple(experiment.interactions()),
        tuple(experiment.replicate_pairs()),
        NoiseSettings(declared_sd=experiment.statistics.seed_sd),
        experiment.statistics.target_difference,
    )


def build_report(
    name: str,
    seeds: list[int],
    judge_note: str,
    contrasts: list[tuple[str, str]],
    tables: StudyTables,
    confidence_pairs: list[tuple[str, str]] = (),  # type: ignore[assignment]
    plan: StatisticsPlan | None = None,
) -> Report:
    plan = plan or StatisticsPlan()
    settings = plan.settings
    accuracy, evals = tables.accuracy, tables.eval_results
    baselines = stronger_baselines(evals)
    tested = contrast_table(evals, [*contrasts, *plan.replicates], interactions=plan.interactions, settings=settings)
    replicate_pairs = set(plan.replicates)
    is_aa = pl.Series("aa_control", [(a, b) in replicate_pairs for a, b in zip(tested["a"], tested["b"])], dtype=pl.Boolean)
    planned, aa = tested.filter(~is_aa), tested.filter(is_aa)
    pairs, interactions = (
        planned.filter(~pl.col("student").str.contains(" vs ")),
        planned.filter(pl.col("student").str.contains(" vs ")),
    )
    noise = noise_table(evals, settings)
    students = evals["student"].unique(maintain_order=True).to_list()
    untrained = evals.filter(pl.col("dataset").str.starts_with("base"))["dataset"].n_unique()
    trained_arms = evals.filter(~pl.col("dataset").str.starts_with("base"))["dataset"].n_unique()
    power = power_lines(
        [*contrasts, *plan.replicates],
        plan.interactions,
        students,
        evals["problem_id"].n_unique(),
        len(seeds),
        settings,
        plan.target_difference,
        untrained,
        trained_arms,
    )
    failures = failure_summary(tables.failure_modes, evals, baselines=baselines)
    failures = failures.filter(pl.col("count_mean") > 0) if failures.height else failures
    base_rows = accuracy.filter(pl.col("dataset").str.starts_with("base")).select(
        "student", "dataset", "accuracy", "ci_low", "ci_high"
    )
    removed = (
        tables.sft_examples.group_by("dataset")
        .agg(
            pl.len().alias("examples"),
            pl.col("n_tokens").sum().alias("tokens"),
            pl.col("removed_tokens").sum().alias("removed_tokens"),
        )
        .sort("dataset")
    )
    budgets = tables.trace_stats.select("dataset", "student", "n_examples", "total_tokens", "mean_tokens", "nll_before")
    trained = tables.checkpoints.filter(pl.col("status") == "trained").select(
        "dataset", "student", "seed", "task", "train_examples", "train_tokens", "wall_s"
    )
    points = accuracy.join(tables.trace_stats.select("dataset", "student", "nll_before"), on=["dataset", "student"]).drop_nulls(
        "nll_before"
    )
    candidates = {
        "accuracy.png": accuracy_png(accuracy) if accuracy.height else None,
        "loss_curves.png": loss_curves_png(tables.training_log) if tables.training_log.height else None,
        "accessibility.png": accessibility_png(points) if points.height else None,
    }
    plots = {file: png for file, png in candidates.items() if png}
    formats = "\n".join(f"- `{column}`: {text}" for column, text in ACCEPTED_FORMATS.items())
    sections = [
        f"# trace_assets report: {name}",
        f"Test problems: {evals['problem_id'].n_unique()}; training seeds: {seeds}.",
        f"**Judge:** {judge_note}",
        f"**Noise floor:** {noise_floor_note(noise)}",
        "## Accuracy by student and dataset",
        f"Method: {METHOD}.",
        table(results_table(accuracy)),
        TRAINING_NOTE,
        "`accuracy` counts the declared answer, else the flexible reading; `accuracy_strict` only the `#### N` "
        f"line the prompt asks for. Formats each reading accepts:\n{formats}",
        "## Baselines: the untrained students",
        "Zero-shot (`base`) and few-shot (`base_few_shot`, fixed train exemplars). A `baseline` contrast is tested "
        "against each of them (a row each, all in the Holm family): picking the stronger after looking would bias the "
        "gain. The stronger one, which failure modes compare against: "
        + ", ".join(f"{student}: `{dataset}`" for student, dataset in sorted(baselines.items()))
        + ".",
        table(base_rows),
        "## Training noise per arm",
        table(noise),
        "## Planned contrasts (paired by problem, Holm-adjusted across the family)",
        *contrasts_section(pairs),
        *(
            ["### Interactions: (a - b) at one student vs at another", *contrasts_section(interactions)]
            if interactions.height
            else []
        ),
        *aa_section(aa),
        "## Power: the smallest differences this design detects",
        "```\n" + "\n".join(power) + "\n```",
        *confidence_section(list(confidence_pairs), evals, tables.sft_examples, settings),
        "## Accuracy by difficulty",
        "Difficulty is the reference solution's step count (MATH: its level; Countdown: its count of numbers; MBPP: "
        "its lines of code). First as Easy (1-2), Medium (3-4) and Hard (5+), as seed 000 reports it, then finer.",
        table(by_difficulty(evals, difficulty_level)),
        table(by_difficulty(evals)),
        *task_sections(evals, contrasts, tables.problems, settings),
        "## Failure modes: per-seed rates and change against the stronger baseline",
        table(failures),
        "## Exclusions per arm, by reason",
        table(exclusion_counts(tables.dataset_exclusions)),
        "## Training tokens per arm (and tokens removed by trimming or its control)",
        table(removed),
        "## Token budgets and distributional accessibility (student NLL before training)",
        table(budgets),
        "## Judge: agreement with the format rules",
        table(judge_agreement(tables.judged_traces)),
        "## Training runs",
        table(trained),
        "## Training and eval loss (mean over seeds; the curves are in loss_curves.png)",
        table(loss_table(tables.training_log)),
        "## Plots",
        *[f"![{file}]({file})" for file in plots],
    ]
    distinguishable = int(planned["distinguishable"].sum()) if planned.height else 0
    return Report("\n\n".join(sections) + "\n", plots, distinguishable, tested.with_columns(is_aa))
