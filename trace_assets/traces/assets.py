"""The ``teacher_traces`` asset: k teacher samples per train problem under each style."""

import dagster as dg
import polars as pl

from trace_assets.experiment import Experiment
from trace_assets.metadata import counts_table, preview
from trace_assets.resources import GenerationResource, sampling_from
from trace_assets.styles.library import style_from_row
from trace_assets.traces.build import teacher_requests, trace_rows
from trace_assets.traces.schemas import TeacherTracesType
from trace_assets.scaling import GPU_POOL, gpu_op_tags


def generation_metadata(result, rows: int) -> dict:
    stats = result.stats
    return {
        "dagster/row_count": rows,
        "generated": result.generated,
        "reused_from_cache": result.reused,
        "failed_requests": result.failed,
        "engine_startup_s": round(stats.startup_s, 1),
        "generate_s": round(stats.generate_s, 1),
        "output_tokens_per_s": round(stats.output_tokens_per_s, 1),
    }


def build_teacher_traces_asset(experiment: Experiment, partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(
        name="teacher_traces",
        group_name="traces",
        kinds={"vllm", "duckdb"},
        code_version="1",
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        pool=GPU_POOL,
        op_tags=gpu_op_tags(experiment, "teacher_traces"),
        dagster_type=TeacherTracesType,
        metadata={"partition_expr": "style"},
        check_specs=[dg.AssetCheckSpec("no_empty_completions", asset="teacher_traces"),
                     dg.AssetCheckSpec("correct_rate_above_threshold", asset="teacher_traces")],
        description="Teacher completions for every train problem under each style, generated once and cached.",
    )
    def teacher_traces(
        context: dg.AssetExecutionContext,
        generation: GenerationResource,
        problems: pl.DataFrame,
        style_prompts: pl.DataFrame,
    ):
        """Teacher completions for every train problem under each style, generated once and cached."""
        config = experiment.teacher
        sampling = sampling_from(config)
        styles = [style_from_row(row) for row in style_prompts.iter_rows(named=True)]
        train = problems.filter(pl.col("split") == "train")
        paraphrase_styles = frozenset(r.style for r in experiment.datasets.values() if r.recipe == "H_style")
        planned = teacher_requests(styles, train, config.model, sampling, paraphrase_styles)
        result = generation.generate(config, sampling, [r for *_, r in planned], context.log.info)
        frame = trace_rows(planned, result.completions, config.model, sampling)
        expected = len(planned) * sampling.n
        if frame.height < expected:
            context.log.warning(f"{expected - frame.height} of {expected} samples failed; a re-run retries only those")
        empty = frame.filter(pl.col("completion").str.strip_chars() == "").height
        correct_rate = float(frame["is_correct"].mean() or 0.0)
        yield dg.Output(
            frame,
            metadata={
                **generation_metadata(result, frame.height),
                "correct_rate": correct_rate,
                "empty_completions": empty,
                "mean_output_tokens": float(frame["n_tokens"].mean() or 0.0),
                "finish_reasons": counts_table(frame, ["style", "kind", "finish_reason"]),
                "extraction": counts_table(frame, ["style", "extraction_method"]),
                "preview": preview(frame, ["style", "problem_id", "is_correct", "extracted_answer", "completion"]),
            },
        )
        yield dg.AssetCheckResult(
            check_name="no_empty_completions", passed=empty == 0, severity=dg.AssetCheckSeverity.ERROR,
            metadata={"empty": empty, "rows": frame.height},
        )
        threshold = experiment.thresholds.min_correct_rate
        yield dg.AssetCheckResult(
            check_name="correct_rate_above_threshold", passed=correct_rate >= threshold,
            severity=dg.AssetCheckSeverity.WARN, metadata={"correct_rate": correct_rate, "threshold": threshold},
        )

    return teacher_traces
