"""``failure_modes``, ``accuracy`` and ``report``: what the study found."""

import dagster as dg
import polars as pl

from trace_assets.experiment import Experiment, ModelConfig
from trace_assets.generation.cached import request_key
from trace_assets.generation.types import Request
from trace_assets.metadata import preview
from trace_assets.reporting.failures import (
    FAILURE_SCHEMA, classify_by_rules, failure_judge_messages, parse_failure_category,
)
from trace_assets.reporting.plots import accessibility_png, accuracy_png, loss_curves_png, png_markdown
from trace_assets.reporting.schemas import AccuracyType, FailureModesType
from trace_assets.reporting.stats import bootstrap_ci, difficulty_bucket, mcnemar_exact
from trace_assets.resources import DataResource, GenerationResource, sampling_from
from trace_assets.scaling import GPU_POOL, gpu_op_tags

FAILURE_COLUMNS = {
    "dataset": pl.Utf8, "student": pl.Utf8, "seed": pl.Int64, "problem_id": pl.Utf8, "category": pl.Utf8,
    "source": pl.Utf8, "evidence": pl.Utf8,
}
ALPHA = 0.05


def build_failure_modes_asset(experiment: Experiment) -> dg.AssetsDefinition:
    @dg.asset(
        name="failure_modes",
        group_name="reporting",
        automation_condition=dg.AutomationCondition.eager(),
        kinds={"vllm", "duckdb"},
        code_version="1",
        pool=GPU_POOL,
        op_tags=gpu_op_tags(experiment, "failure_modes"),
        dagster_type=FailureModesType,
        description="Each wrong answer classified into the failure taxonomy, by rules where reliable, else by the judge.",
    )
    def failure_modes(context: dg.AssetExecutionContext, generation: GenerationResource,
                      eval_results: pl.DataFrame, problems: pl.DataFrame):
        """Each wrong answer classified into the failure taxonomy, by rules where reliable, else by the judge."""
        wrong = eval_results.filter(~pl.col("is_correct"))
        problem_rows = {row["problem_id"]: row for row in problems.iter_rows(named=True)}
        rows, needs_judge = [], []
        for row in wrong.iter_rows(named=True):
            verdict = classify_by_rules(row["completion"], row["extracted_answer"], row["reference_answer"],
                                        row["degenerate_loop"], row["hit_length_limit"])
            base = {k: row[k] for k in ("dataset", "student", "seed", "problem_id")}
            if verdict.category:
                rows.append({**base, "category": verdict.category, "source": "rules", "evidence": verdict.evidence})
            else:
                needs_judge.append((base, row["completion"]))
        config: ModelConfig = experiment.judge
        sampling = sampling_from(config, n=1)
        requests = []
        for base, completion in needs_judge:
            problem = problem_rows[base["problem_id"]]
            messages = failure_judge_messages(problem["question"], problem["reference_solution"], completion)
            requests.append(Request(request_key(messages, config.model, sampling, FAILURE_SCHEMA), messages, FAILURE_SCHEMA))
        result = generation.generate(config, sampling, requests, context.log.info) if requests else None
        for (base, _), request in zip(needs_judge, requests):
            completion = result.completions.get((request.key, 0))
            category, reason = parse_failure_category(completion.text if completion else "")
            rows.append({**base, "category": category, "source": "judge" if category != "unclassified" else "unparsable",
                         "evidence": reason})
        frame = pl.DataFrame(rows, schema=FAILURE_COLUMNS)
        counts = frame.group_by(["dataset", "student", "category"]).len().sort(["student", "dataset", "category"])
        yield dg.Output(frame, metadata={
            "dagster/row_count": frame.height,
            "by_rules": int((frame["source"] == "rules").sum()),
            "by_judge": int((frame["source"] == "judge").sum()),
            "unparsable": int((frame["source"] == "unparsable").sum()),
            "counts": preview(counts, rows=counts.height),
        })

    return failure_modes


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
    schema = {"dataset": pl.Utf8, "student": pl.Utf8, "n": pl.Int64, "n_seeds": pl.Int64, "accuracy": pl.Float64,
              "ci_low": pl.Float64, "ci_high": pl.Float64, "accuracy_strict": pl.Float64}
    return pl.DataFrame(rows, schema=schema).sort(["student", "accuracy"], descending=[False, True])


def build_accuracy_asset(experiment: Experiment) -> dg.AssetsDefinition:
    @dg.asset(
        name="accuracy",
        group_name="reporting",
        automation_condition=dg.AutomationCondition.eager(),
        kinds={"polars", "duckdb"},
        code_version="1",
        dagster_type=AccuracyType,
        description="Accuracy per student x dataset with bootstrap 95% confidence intervals.",
    )
    def accuracy(eval_results: pl.DataFrame):
        """Accuracy per student x dataset with bootstrap 95% confidence intervals."""
        table = accuracy_table(eval_results, experiment.seed)
        return dg.Output(table, metadata={
            "dagster/row_count": table.height,
            "table": preview(table, rows=table.height),
            "plot": dg.MetadataValue.md(png_markdown(accuracy_png(table), "accuracy")) if table.height else "",
        })

    return accuracy


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


def failure_changes(failure_modes: pl.DataFrame) -> pl.DataFrame:
    """Failure counts per dataset x student x category and their change against the untrained base student.

    Every category seen anywhere appears for every trained dataset, so a failure that disappears
    after training shows as a negative change rather than vanishing from the table.
    """
    counts = failure_modes.group_by(["student", "dataset", "category"]).agg(pl.len().cast(pl.Int64).alias("count"))
    trained = counts.filter(pl.col("dataset") != "base").select("student", "dataset").unique()
    grid = trained.join(counts.select("category").unique(), how="cross")
    base = counts.filter(pl.col("dataset") == "base").select("student", "category", pl.col("count").alias("base_count"))
    return (
        grid.join(counts, on=["student", "dataset", "category"], how="left")
        .join(base, on=["student", "category"], how="left")
        .with_columns(pl.col("count").fill_null(0), pl.col("base_count").fill_null(0))
        .with_columns((pl.col("count") - pl.col("base_count")).alias("change_vs_base"))
        .sort(["student", "dataset", "category"])
    )


def markdown_table(frame: pl.DataFrame, digits: int = 3) -> str:
    if frame.is_empty():
        return "_(none)_"

    def cell(value):
        return f"{value:.{digits}f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.iter_rows()]
    return "\n".join(lines)


def build_report_asset(experiment: Experiment) -> dg.AssetsDefinition:
    @dg.asset(
        name="report",
        group_name="reporting",
        automation_condition=dg.AutomationCondition.eager(),
        kinds={"markdown"},
        code_version="1",
        description="The study's answers as Markdown with PNG plots under <data dir>/report/.",
    )
    def report(context: dg.AssetExecutionContext, data: DataResource, accuracy: pl.DataFrame,
               eval_results: pl.DataFrame, failure_modes: pl.DataFrame, training_log: pl.DataFrame,
               trace_stats: pl.DataFrame, checkpoints: pl.DataFrame) -> dg.MaterializeResult:
        """The study's answers as Markdown with PNG plots under <data dir>/report/."""
        folder = data.path / "report"
        folder.mkdir(parents=True, exist_ok=True)
        tests = paired_tests(eval_results, accuracy)
        by_difficulty = (
            eval_results.with_columns(pl.col("difficulty").map_elements(difficulty_bucket, return_dtype=pl.Utf8).alias("bucket"))
            .group_by(["student", "dataset", "bucket"]).agg(pl.len().alias("n"), pl.col("is_correct").mean().alias("accuracy"))
            .sort(["student", "dataset", "bucket"])
        )
        changes = failure_changes(failure_modes)
        budgets = trace_stats.select("dataset", "student", "n_examples", "total_tokens", "mean_tokens", "nll_before")
        trained = checkpoints.filter(pl.col("status") == "trained").select(
            "dataset", "student", "seed", "train_examples", "train_tokens", "wall_s")
        points = accuracy.join(trace_stats.select("dataset", "student", "nll_before"), on=["dataset", "student"]).drop_nulls("nll_before")
        plots = {"accuracy.png": accuracy_png(accuracy) if accuracy.height else None,
                 "loss_curves.png": loss_curves_png(training_log) if training_log.height else None,
                 "accessibility.png": accessibility_png(points) if points.height else None}
        for name, png in plots.items():
            if png:
                (folder / name).write_bytes(png)

        indistinct = tests.filter(~pl.col("distinguishable"))
        verdicts = [
            f"- **{r['dataset']}** vs best **{r['best']}** ({r['student']}): not distinguishable at n={r['n']} "
            f"(McNemar p={r['p_value']:.2f})" for r in indistinct.iter_rows(named=True)
        ] + [
            f"- **{r['dataset']}** is worse than **{r['best']}** ({r['student']}, McNemar p={r['p_value']:.3g})"
            for r in tests.filter(pl.col("distinguishable")).iter_rows(named=True)
        ]
        sections = [
            f"# trace_assets report: {experiment.name}",
            f"Test problems: {eval_results['problem_id'].n_unique()}; seeds: {experiment.training.seeds}.",
            "## Accuracy (95% bootstrap CI over problems)", markdown_table(accuracy),
            "## Paired significance against the best dataset (exact McNemar)", markdown_table(tests),
            "\n".join(verdicts) or "_(one dataset per student: nothing to compare)_",
            "## Accuracy by difficulty", markdown_table(by_difficulty),
            "## Failure modes: counts and change against the untrained base model", markdown_table(changes),
            "## Token budgets and distributional accessibility (student NLL before training)", markdown_table(budgets),
            "## Training runs", markdown_table(trained),
            "## Plots", *[f"![{name}]({name})" for name, png in plots.items() if png],
        ]
        text = "\n\n".join(sections) + "\n"
        (folder / "report.md").write_text(text)
        context.log.info(f"report written to {folder / 'report.md'}")
        inline = text
        for name, png in plots.items():
            if png:
                inline = inline.replace(f"![{name}]({name})", png_markdown(png, name))
        return dg.MaterializeResult(metadata={
            "path": dg.MetadataValue.path(str(folder / "report.md")),
            "report": dg.MetadataValue.md(inline),
            "indistinguishable_pairs": indistinct.height,
        })

    return report
