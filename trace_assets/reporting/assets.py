"""``failure_modes``, ``accuracy`` and ``report``: what the study found."""

import dataclasses

import dagster as dg
import polars as pl

from trace_assets.assetdefs import EAGER, asset_settings
from trace_assets.experiment import ModelConfig
from trace_assets.metadata import preview
from trace_assets.plots import accuracy_png, png_markdown
from trace_assets.reporting.failures import SOURCES
from trace_assets.reporting.report import StatisticsPlan, StudyTables, build_report
from trace_assets.reporting.schemas import AccuracySchema, FailureModeSchema
from trace_assets.reporting.stats import METHOD, NoiseSettings, accuracy_summary, earlier_runs, noise_floor_note, noise_table
from trace_assets.reporting.step import classify_failures
from trace_assets.resources import DataResource, GenerationResource
from trace_assets.tables import frame_of


def build_failure_modes_asset(judge: ModelConfig) -> dg.AssetsDefinition:
    @dg.asset(
        **asset_settings(
            "failure_modes", "reporting", {"vllm", "duckdb"}, table=FailureModeSchema, gpus=judge.gpus, automation_condition=EAGER
        )
    )
    def failure_modes(
        context: dg.AssetExecutionContext, generation: GenerationResource, eval_results: pl.DataFrame, problems: pl.DataFrame
    ):
        """Each wrong answer classified into the failure taxonomy: rules propose, the judge decides."""
        rows, engines = classify_failures(
            generation, judge, eval_results, problems, ("dataset", "student", "seed", "problem_id"), context.log.info
        )
        frame = frame_of(rows, FailureModeSchema)
        counts = frame.group_by(["dataset", "student", "category"]).len().sort(["student", "dataset", "category"])
        yield dg.Output(
            frame,
            metadata={
                "dagster/row_count": frame.height,
                **{f"source_{source}": int((frame["source"] == source).sum()) for source in SOURCES},
                "judge_agreed_with_rules": int((frame["source"] == "rules+judge").sum()),
                **engines,
                "counts": preview(counts, rows=counts.height),
            },
        )

    return failure_modes


def noise_settings(
    data: DataResource, eval_results: pl.DataFrame, datasets: list[str], declared_sd: float | None
) -> NoiseSettings:
    """Training noise beyond the study's own seeds: the declared value, and earlier multi-seed runs of the same
    students in this database (eval_results rows of datasets this experiment does not have), named."""
    students = eval_results["student"].unique().to_list()
    reference, names = earlier_runs(data.database, students, datasets)
    return NoiseSettings(declared_sd=declared_sd, reference=reference, reference_name=names)


def build_accuracy_asset(seed: int, datasets: list[str] | None = None, declared_sd: float | None = None) -> dg.AssetsDefinition:
    """``datasets``: the experiment's dataset partitions (the others in the database are earlier runs);
    ``declared_sd``: ``statistics.seed_sd``."""

    @dg.asset(**asset_settings("accuracy", "reporting", {"polars", "duckdb"}, table=AccuracySchema, automation_condition=EAGER))
    def accuracy(data: DataResource, eval_results: pl.DataFrame):
        """Accuracy per student x dataset: mean over seeds, the seed-to-seed SD and a 95% interval."""
        settings = noise_settings(data, eval_results, datasets or [], declared_sd)
        table = accuracy_summary(eval_results, seed, settings)
        return dg.Output(
            table,
            metadata={
                "dagster/row_count": table.height,
                "method": METHOD,
                "noise_floor": noise_floor_note(noise_table(eval_results, settings)),
                "table": preview(table, rows=table.height),
                "plot": dg.MetadataValue.md(png_markdown(accuracy_png(table), "accuracy")) if table.height else "",
            },
        )

    return accuracy


def build_report_asset(
    name: str,
    seeds: list[int],
    judge_note: str,
    contrasts: list[tuple[str, str]],
    confidence_pairs: list[tuple[str, str]] = (),  # type: ignore[assignment]
    plan: StatisticsPlan | None = None,
    datasets: list[str] | None = None,
) -> dg.AssetsDefinition:
    """``judge_note``: who graded the traces (says SELF-GRADED when the judge is the teacher);
    ``contrasts``: the experiment's planned comparisons, tested as one Holm family with ``plan``'s
    interactions and A/A controls; ``datasets``: the experiment's dataset partitions (any other in the
    database is an earlier run, whose training noise the statistics may use, named)."""
    plan = plan or StatisticsPlan()
    all_partitions = dg.AssetIn(partition_mapping=dg.AllPartitionMapping())

    @dg.asset(
        **asset_settings(
            "report",
            "reporting",
            {"markdown"},
            automation_condition=EAGER,
            ins={"sft_examples": all_partitions, "dataset_exclusions": all_partitions, "judged_traces": all_partitions},
        )
    )
    def report(
        context: dg.AssetExecutionContext,
        data: DataResource,
        accuracy: pl.DataFrame,
        eval_results: pl.DataFrame,
        failure_modes: pl.DataFrame,
        training_log: pl.DataFrame,
        trace_stats: pl.DataFrame,
        checkpoints: pl.DataFrame,
        sft_examples: pl.DataFrame,
        dataset_exclusions: pl.DataFrame,
        judged_traces: pl.DataFrame,
        problems: pl.DataFrame,
    ) -> dg.MaterializeResult:
        """The study's answers as Markdown with PNG plots under <data dir>/report/."""
        folder = data.path / "report"
        folder.mkdir(parents=True, exist_ok=True)
        tables = StudyTables(
            accuracy,
            eval_results,
            failure_modes,
            training_log,
            trace_stats,
            checkpoints,
            sft_examples,
            dataset_exclusions,
            judged_traces,
            problems,
        )
        settings = noise_settings(data, eval_results, datasets or [], plan.settings.declared_sd)
        result = build_report(
            name, seeds, judge_note, contrasts, tables, list(confidence_pairs), dataclasses.replace(plan, settings=settings)
        )
        for file, png in result.plots.items():
            (folder / file).write_bytes(png)
        (folder / "report.md").write_text(result.text)
        context.log.info(f"report written to {folder / 'report.md'}")
        return dg.MaterializeResult(
            metadata={
                "path": dg.MetadataValue.path(str(folder / "report.md")),
                "report": dg.MetadataValue.md(result.inline()),
                "planned_contrasts": len(contrasts),
                "distinguishable_contrasts": result.distinguishable,
            }
        )

    return report
