"""The ``problems`` asset: every train and test problem of the experiment."""

import dagster as dg
import polars as pl

from trace_assets.assetdefs import asset_settings
from trace_assets.experiment import ProblemsConfig
from trace_assets.metadata import counts_table, preview
from trace_assets.problems.schemas import ProblemSchema
from trace_assets.problems.sources import contamination, load_problems
from trace_assets.problems.validation import VALIDATION, carve_validation


def problems_checks(problems: pl.DataFrame, contaminated: list[str]) -> list[dg.AssetCheckResult]:
    duplicate_ids = problems.group_by(["split", "problem_id"]).len().filter(pl.col("len") > 1).height
    return [
        dg.AssetCheckResult(check_name="non_empty", passed=problems.height > 0, metadata={"rows": problems.height}),
        dg.AssetCheckResult(check_name="unique_ids", passed=duplicate_ids == 0, metadata={"duplicate_ids": duplicate_ids}),
        dg.AssetCheckResult(
            check_name="no_train_test_contamination",
            passed=not contaminated,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={"contaminated": len(contaminated), "problem_ids": ", ".join(contaminated[:20]) or "none"},
        ),
    ]


def build_problems_asset(settings: ProblemsConfig, seed: int, validation_fraction: float = 0.0) -> dg.AssetsDefinition:
    """``validation_fraction``: the share of train problems the closed loop holds out (0: none)."""

    @dg.asset(
        **asset_settings(
            "problems",
            "problems",
            {"python", "duckdb"},
            table=ProblemSchema,
            checks=("non_empty", "unique_ids", "no_train_test_contamination"),
        )
    )
    def problems(context: dg.AssetExecutionContext):
        """Train and test problems of the experiment's tasks (GSM8K from its source, Countdown, MATH, MBPP) in one table."""
        frame, report = load_problems(settings, seed)
        frame = carve_validation(frame, validation_fraction, seed)
        contaminated = contamination(frame)
        if report.skipped_lines:
            context.log.warning(f"skipped {len(report.skipped_lines)} bad lines: " + "; ".join(report.skipped_lines[:5]))
        yield dg.Output(
            frame,
            metadata={
                "source": settings.source,
                "tasks": ", ".join(settings.tasks),
                "per_task": counts_table(frame, ["task", "split"]),
                "dagster/row_count": frame.height,
                "train": frame.filter(pl.col("split") == "train").height,
                "test": frame.filter(pl.col("split") == "test").height,
                "validation": frame.filter(pl.col("split") == VALIDATION).height,
                "skipped_lines": len(report.skipped_lines),
                "skipped_examples": dg.MetadataValue.md("\n".join(f"- {m}" for m in report.skipped_lines[:20]) or "none"),
                "duplicates_dropped": report.duplicates_dropped,
                "contaminated": len(contaminated),
                "near_duplicates_removed": len(report.contaminated),
                "near_duplicate_pairs": dg.MetadataValue.md(
                    "\n".join(
                        f"- train {hit.train_id} ~ test {hit.test_id} (similarity {hit.similarity:.2f})"
                        for hit in report.contaminated[:20]
                    )
                    or "none"
                ),
                "difficulty": counts_table(frame, ["split", "difficulty"]),
                "preview": preview(frame, ["problem_id", "task", "split", "difficulty", "answer", "question"]),
            },
        )
        yield from problems_checks(frame, contaminated)

    return problems
