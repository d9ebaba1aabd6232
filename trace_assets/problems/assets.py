"""The ``problems`` asset: every train and test problem of the experiment."""

import dagster as dg
import polars as pl

from trace_assets.experiment import Experiment
from trace_assets.metadata import counts_table, preview
from trace_assets.problems.schemas import ProblemsType
from trace_assets.problems.sources import contamination, load_problems

PROBLEMS_CODE_VERSION = "1"


def problems_checks(problems: pl.DataFrame, contaminated: list[str]) -> list[dg.AssetCheckResult]:
    duplicate_ids = problems.group_by(["split", "problem_id"]).len().filter(pl.col("len") > 1).height
    return [
        dg.AssetCheckResult(check_name="non_empty", passed=problems.height > 0, metadata={"rows": problems.height}),
        dg.AssetCheckResult(
            check_name="unique_ids", passed=duplicate_ids == 0, metadata={"duplicate_ids": duplicate_ids}
        ),
        dg.AssetCheckResult(
            check_name="no_train_test_contamination",
            passed=not contaminated,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={"contaminated": len(contaminated), "problem_ids": ", ".join(contaminated[:20]) or "none"},
        ),
    ]


def build_problems_asset(experiment: Experiment) -> dg.AssetsDefinition:
    @dg.asset(
        name="problems",
        group_name="problems",
        kinds={"python", "duckdb"},
        code_version=PROBLEMS_CODE_VERSION,
        dagster_type=ProblemsType,
        check_specs=[
            dg.AssetCheckSpec("non_empty", asset="problems"),
            dg.AssetCheckSpec("unique_ids", asset="problems"),
            dg.AssetCheckSpec("no_train_test_contamination", asset="problems"),
        ],
        description="Train and test problems from the experiment's source, normalised to GSM8K's format.",
    )
    def problems(context: dg.AssetExecutionContext):
        """Train and test problems from the experiment's source, normalised to GSM8K's format."""
        frame, report = load_problems(experiment)
        contaminated = contamination(frame)
        if report.skipped_lines:
            context.log.warning(f"skipped {len(report.skipped_lines)} bad lines: " + "; ".join(report.skipped_lines[:5]))
        yield dg.Output(
            frame,
            metadata={
                "source": experiment.problems.source,
                "dagster/row_count": frame.height,
                "train": frame.filter(pl.col("split") == "train").height,
                "test": frame.filter(pl.col("split") == "test").height,
                "skipped_lines": len(report.skipped_lines),
                "skipped_examples": dg.MetadataValue.md("\n".join(f"- {m}" for m in report.skipped_lines[:20]) or "none"),
                "duplicates_dropped": report.duplicates_dropped,
                "contaminated": len(contaminated),
                "difficulty": counts_table(frame, ["split", "difficulty"]),
                "preview": preview(frame, ["problem_id", "split", "difficulty", "answer", "question"]),
            },
        )
        yield from problems_checks(frame, contaminated)

    return problems
