"""The report's Markdown and plots from the study's tables: pure, no Dagster."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from trace_assets.metadata import markdown_table
from trace_assets.plots import accessibility_png, accuracy_png, loss_curves_png, png_markdown
from trace_assets.reporting.failures import failure_summary
from trace_assets.reporting.stats import difficulty_bucket, paired_tests


@dataclass
class Report:
    text: str  # Markdown; plots referenced by file name
    plots: dict[str, bytes]  # file name -> PNG
    indistinguishable_pairs: int

    def inline(self) -> str:
        """The Markdown with every plot embedded, for the Dagster UI."""
        text = self.text
        for name, png in self.plots.items():
            text = text.replace(f"![{name}]({name})", png_markdown(png, name))
        return text


def table(frame: pl.DataFrame) -> str:
    return markdown_table(frame, digits=3) if frame.height else "_(none)_"


def build_report(name: str, seeds: list[int], accuracy: pl.DataFrame, eval_results: pl.DataFrame,
                 failure_modes: pl.DataFrame, training_log: pl.DataFrame, trace_stats: pl.DataFrame,
                 checkpoints: pl.DataFrame) -> Report:
    tests = paired_tests(eval_results, accuracy)
    by_difficulty = (
        eval_results.with_columns(pl.col("difficulty").map_elements(difficulty_bucket, return_dtype=pl.Utf8).alias("bucket"))
        .group_by(["student", "dataset", "bucket"]).agg(pl.len().alias("n"), pl.col("is_correct").mean().alias("accuracy"))
        .sort(["student", "dataset", "bucket"])
    )
    changes = failure_summary(failure_modes, eval_results)
    budgets = trace_stats.select("dataset", "student", "n_examples", "total_tokens", "mean_tokens", "nll_before")
    trained = checkpoints.filter(pl.col("status") == "trained").select(
        "dataset", "student", "seed", "train_examples", "train_tokens", "wall_s")
    points = accuracy.join(trace_stats.select("dataset", "student", "nll_before"), on=["dataset", "student"]).drop_nulls("nll_before")
    candidates = {"accuracy.png": accuracy_png(accuracy) if accuracy.height else None,
                  "loss_curves.png": loss_curves_png(training_log) if training_log.height else None,
                  "accessibility.png": accessibility_png(points) if points.height else None}
    plots = {file: png for file, png in candidates.items() if png}

    indistinct = tests.filter(~pl.col("distinguishable"))
    verdicts = [
        f"- **{r['dataset']}** vs best **{r['best']}** ({r['student']}): not distinguishable at n={r['n']} "
        f"(McNemar p={r['p_value']:.2f})" for r in indistinct.iter_rows(named=True)
    ] + [
        f"- **{r['dataset']}** is worse than **{r['best']}** ({r['student']}, McNemar p={r['p_value']:.3g})"
        for r in tests.filter(pl.col("distinguishable")).iter_rows(named=True)
    ]
    sections = [
        f"# trace_assets report: {name}",
        f"Test problems: {eval_results['problem_id'].n_unique()}; seeds: {seeds}.",
        "## Accuracy (95% bootstrap CI over problems)", table(accuracy),
        "## Paired significance against the best dataset (exact McNemar)", table(tests),
        "\n".join(verdicts) or "_(one dataset per student: nothing to compare)_",
        "## Accuracy by difficulty", table(by_difficulty),
        "## Failure modes: counts and change against the untrained base model", table(changes),
        "## Token budgets and distributional accessibility (student NLL before training)", table(budgets),
        "## Training runs", table(trained),
        "## Plots", *[f"![{file}]({file})" for file in plots],
    ]
    return Report("\n\n".join(sections) + "\n", plots, indistinct.height)
