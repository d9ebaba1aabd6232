"""``eval_results``: every checkpoint (and each untrained student) answers the test split, greedily."""

import dagster as dg
import polars as pl

from trace_assets.assetdefs import asset_settings
from trace_assets.evaluation.schemas import EvalResultSchema
from trace_assets.evaluation.step import evaluate
from trace_assets.experiment import EvaluationConfig, StudentConfig
from trace_assets.generation.cached import engine_metadata
from trace_assets.metadata import preview
from trace_assets.resources import GenerationResource


def build_eval_results_asset(
    students: dict[str, StudentConfig], settings: EvaluationConfig, seed: int, partitions: dg.MultiPartitionsDefinition
) -> dg.AssetsDefinition:
    @dg.asset(
        **asset_settings(
            "eval_results",
            "evaluation",
            {"vllm", "duckdb"},
            table=EvalResultSchema,
            partitions=partitions,
            partition_expr={"dataset": "dataset", "student": "student"},
            single_run=True,
            gpus=1,
        )
    )
    def eval_results(
        context: dg.AssetExecutionContext, generation: GenerationResource, checkpoints: pl.DataFrame, problems: pl.DataFrame
    ):
        """Greedy answers of each checkpoint (and each untrained base student) to every test problem.

        One step evaluates every checkpoint of its partitions: one engine start per model
        architecture, each further checkpoint's weights loaded into it."""
        evaluation = evaluate(generation, students, settings, seed, checkpoints, problems, ["test"], context.log.info)
        frame, results = evaluation.answers["test"], evaluation.results
        if not results:
            context.log.warning("no checkpoint to evaluate (the dataset was empty)")
        yield dg.Output(
            frame,
            metadata={
                "dagster/row_count": frame.height,
                "accuracy": float(frame["is_correct"].mean()) if frame.height else 0.0,
                "accuracy_strict": float(frame["is_correct_strict"].mean()) if frame.height else 0.0,
                "degenerate_loops": int(frame["degenerate_loop"].sum()),
                "hit_length_limit": int(frame["hit_length_limit"].sum()),
                "checkpoints_evaluated": len(results),
                **engine_metadata(results),
                "generated": sum(result.generated for result in results),
                "reused_from_cache": sum(result.reused for result in results),
                "preview": preview(frame, ["seed", "problem_id", "is_correct", "extracted_answer", "completion"]),
            },
        )

    return eval_results
