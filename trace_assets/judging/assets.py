"""The ``judged_traces`` asset: rule checks and an LLM judge's verdict on every teacher trace."""

import dagster as dg
import polars as pl

from trace_assets.assetdefs import asset_settings
from trace_assets.experiment import ModelConfig
from trace_assets.judging.schemas import JudgedTraceSchema
from trace_assets.judging.step import judge_traces
from trace_assets.metadata import counts_table, preview
from trace_assets.resources import GenerationResource
from trace_assets.styles.library import style_from_row


def build_judged_traces_asset(
    judge: ModelConfig, judge_note: str, min_conformance_rate: float, partitions: dg.PartitionsDefinition
) -> dg.AssetsDefinition:
    """``judge_note``: who grades (it says SELF-GRADED when the judge is the teacher), shown first in the metadata."""

    @dg.asset(
        **asset_settings(
            "judged_traces",
            "judging",
            {"vllm", "duckdb"},
            table=JudgedTraceSchema,
            partitions=partitions,
            partition_expr="style",
            single_run=True,
            gpus=judge.gpus,
            checks=("conformance_rate_above_threshold",),
        )
    )
    def judged_traces(
        context: dg.AssetExecutionContext,
        generation: GenerationResource,
        teacher_traces: pl.DataFrame,
        style_prompts: pl.DataFrame,
        problems: pl.DataFrame,
    ):
        """Format-rule and LLM-judge verdicts on every teacher trace, per style."""
        styles = {row["style"]: style_from_row(row) for row in style_prompts.iter_rows(named=True)}
        judged = judge_traces(generation, judge, teacher_traces, styles, problems, context.log.info)
        frame, result, max_chars = judged.frame, judged.result, judged.max_chars
        truncated = int(frame["judge_truncated"].sum())
        if truncated:
            context.log.warning(f"{truncated} traces were longer than the judge's context ({max_chars} chars): cut, never passed")
        conformance = float(frame["conforms"].mean() or 0.0) if frame.height else 0.0
        unparsable = frame.filter(~pl.col("judge_parsed")).height
        by_style = (
            frame.group_by("style")
            .agg(
                pl.len().alias("traces"),
                pl.col("rules_pass").mean().alias("rules_pass_rate"),
                pl.col("judge_conforms").mean().alias("judge_pass_rate"),
                pl.col("conforms").mean().alias("conformance"),
                (pl.col("conforms") & pl.col("is_correct")).sum().alias("correct_and_conforming"),
            )
            .sort("style")
        )
        yield dg.Output(
            frame,
            metadata={
                "grading": judge_note,
                **result.metadata(frame.height),
                "judge_truncated": truncated,
                "paraphrases_judged_faithful": int(frame["judge_faithful"].sum() or 0),
                "paraphrases_judged_unfaithful": int((frame["judge_faithful"] == False).sum()),  # noqa: E712
                "conformance_rate": conformance,
                "judge_unparsable": unparsable,
                "by_style": preview(by_style, rows=len(by_style)),
                "verdict_sources": counts_table(frame, ["style", "verdict_source"]),
                "preview": preview(frame, ["style", "rules_failed", "judge_conforms", "judge_reason", "completion"]),
            },
        )
        yield dg.AssetCheckResult(
            check_name="conformance_rate_above_threshold",
            passed=conformance >= min_conformance_rate,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"conformance_rate": conformance, "threshold": min_conformance_rate, "judge_unparsable": unparsable},
        )

    return judged_traces
