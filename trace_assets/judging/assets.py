"""The ``judged_traces`` asset: rule checks and an LLM judge's verdict on every teacher trace."""

import dagster as dg
import polars as pl

from trace_assets.experiment import Experiment
from trace_assets.judging.build import judge_requests, verdict_rows
from trace_assets.judging.schemas import JudgedTracesType
from trace_assets.metadata import counts_table, preview
from trace_assets.resources import GenerationResource, sampling_from
from trace_assets.styles.library import style_from_row
from trace_assets.traces.assets import generation_metadata
from trace_assets.scaling import GPU_POOL, gpu_op_tags


def build_judged_traces_asset(experiment: Experiment, partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(
        name="judged_traces",
        group_name="judging",
        kinds={"vllm", "duckdb"},
        code_version="1",
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        pool=GPU_POOL,
        op_tags=gpu_op_tags(experiment, "judged_traces"),
        dagster_type=JudgedTracesType,
        metadata={"partition_expr": "style"},
        check_specs=[dg.AssetCheckSpec("conformance_rate_above_threshold", asset="judged_traces")],
        description="Format-rule and LLM-judge verdicts on every teacher trace, per style.",
    )
    def judged_traces(
        context: dg.AssetExecutionContext,
        generation: GenerationResource,
        teacher_traces: pl.DataFrame,
        style_prompts: pl.DataFrame,
        problems: pl.DataFrame,
    ):
        """Format-rule and LLM-judge verdicts on every teacher trace, per style."""
        config = experiment.judge
        sampling = sampling_from(config, n=1)
        styles = {row["style"]: style_from_row(row) for row in style_prompts.iter_rows(named=True)}
        questions = dict(zip(problems["problem_id"], problems["question"]))
        requests = judge_requests(teacher_traces, questions, styles, config.model, sampling)
        result = generation.generate(config, sampling, list(requests.values()), context.log.info)
        frame = verdict_rows(teacher_traces, styles, requests, result.completions, config.model)
        conformance = float(frame["conforms"].mean() or 0.0) if frame.height else 0.0
        unparsable = frame.filter(~pl.col("judge_parsed")).height
        by_style = frame.group_by("style").agg(
            pl.len().alias("traces"),
            pl.col("rules_pass").mean().alias("rules_pass_rate"),
            pl.col("judge_conforms").mean().alias("judge_pass_rate"),
            pl.col("conforms").mean().alias("conformance"),
            (pl.col("conforms") & pl.col("is_correct")).sum().alias("correct_and_conforming"),
        ).sort("style")
        yield dg.Output(
            frame,
            metadata={
                **generation_metadata(result, frame.height),
                "conformance_rate": conformance,
                "judge_unparsable": unparsable,
                "by_style": preview(by_style, rows=len(by_style)),
                "verdict_sources": counts_table(frame, ["style", "verdict_source"]),
                "preview": preview(frame, ["style", "rules_failed", "judge_conforms", "judge_reason", "completion"]),
            },
        )
        threshold = experiment.thresholds.min_conformance_rate
        yield dg.AssetCheckResult(
            check_name="conformance_rate_above_threshold", passed=conformance >= threshold,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"conformance_rate": conformance, "threshold": threshold, "judge_unparsable": unparsable},
        )

    return judged_traces
