"""The ``teacher_traces`` asset: k teacher samples per train problem under each style."""

import dagster as dg
import polars as pl

from trace_assets.assetdefs import asset_settings
from trace_assets.experiment import ConfidenceConfig, ModelConfig
from trace_assets.metadata import counts_table, preview
from trace_assets.resources import GenerationResource
from trace_assets.styles.library import style_from_row
from trace_assets.traces.schemas import TeacherTraceSchema
from trace_assets.traces.step import generate_traces


def build_teacher_traces_asset(
    teacher: ModelConfig,
    paraphrase_styles: frozenset[str],
    min_correct_rate: float,
    partitions: dg.PartitionsDefinition,
    confidence: ConfidenceConfig | None = None,
) -> dg.AssetsDefinition:
    confidence = confidence or ConfidenceConfig()

    @dg.asset(
        **asset_settings(
            "teacher_traces",
            "traces",
            {"vllm", "duckdb"},
            table=TeacherTraceSchema,
            partitions=partitions,
            partition_expr="style",
            single_run=True,
            gpus=teacher.gpus,
            checks=("no_empty_completions", "correct_rate_above_threshold"),
        )
    )
    def teacher_traces(
        context: dg.AssetExecutionContext,
        generation: GenerationResource,
        problems: pl.DataFrame,
        style_prompts: pl.DataFrame,
    ):
        """Teacher completions for every train problem under each style, generated once and cached."""
        styles = [style_from_row(row) for row in style_prompts.iter_rows(named=True)]
        sampled, planned = generate_traces(generation, teacher, styles, problems, paraphrase_styles, confidence, context.log.info)
        frame = sampled.frame
        expected = planned - sampled.saved
        if frame.height < expected:
            context.log.warning(f"{expected - frame.height} of {expected} samples failed; a re-run retries only those")
        empty = frame.filter(pl.col("completion").str.strip_chars() == "").height
        correct_rate = float(frame["is_correct"].mean() or 0.0)
        yield dg.Output(
            frame,
            metadata={
                **sampled.metadata(),
                "with_logprobs": int(frame["mean_logprob"].is_not_null().sum()),
                "correct_rate": correct_rate,
                "empty_completions": empty,
                "mean_output_tokens": float(frame["n_tokens"].mean() or 0.0),
                "finish_reasons": counts_table(frame, ["style", "kind", "finish_reason"]),
                "extraction": counts_table(frame, ["style", "extraction_method"]),
                "preview": preview(frame, ["style", "problem_id", "is_correct", "extracted_answer", "completion"]),
            },
        )
        yield dg.AssetCheckResult(
            check_name="no_empty_completions",
            passed=empty == 0,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={"empty": empty, "rows": frame.height},
        )
        yield dg.AssetCheckResult(
            check_name="correct_rate_above_threshold",
            passed=correct_rate >= min_correct_rate,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"correct_rate": correct_rate, "threshold": min_correct_rate},
        )

    return teacher_traces
