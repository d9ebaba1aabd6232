"""``eval_results``: every checkpoint (and each untrained student) answers the test split, greedily."""

import dagster as dg
import polars as pl

from trace_assets.assetdefs import asset_settings
from trace_assets.evaluation.build import eval_rows, few_shot_examples
from trace_assets.evaluation.schemas import EvalResultSchema
from trace_assets.experiment import BASE_DATASET, BASE_FEW_SHOT, EvaluationConfig, StudentConfig
from trace_assets.generation.cached import prompt_request
from trace_assets.generation.types import ModelSpec, Sampling
from trace_assets.metadata import preview
from trace_assets.resources import GenerationResource
from trace_assets.students import load_tokenizer
from trace_assets.tables import empty_frame
from trace_assets.training.format import student_prompt


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
        test = problems.filter(pl.col("split") == "test")
        train = problems.filter(pl.col("split") == "train")
        # Few-shot exemplars come from the test problem's own task.
        exemplars = {
            task: few_shot_examples(train.filter(pl.col("task") == task), settings.few_shot_k, seed)
            for task in test["task"].unique().to_list()
        }
        evaluated, jobs = [], []
        for checkpoint in checkpoints.filter(pl.col("status").is_in(["trained", "base"])).iter_rows(named=True):
            # The few-shot baseline always gets the exemplars; trained students get the experiment's format.
            few_shot = checkpoint["dataset"] == BASE_FEW_SHOT or (
                checkpoint["dataset"] != BASE_DATASET and settings.prompt_format == "few_shot"
            )
            shots = exemplars if few_shot else {}
            dtype = generation.gpu.resolve_dtype(students[checkpoint["student"]].dtype)
            spec = ModelSpec(name=checkpoint["path"], path=checkpoint["path"], dtype=dtype)
            sampling = Sampling(temperature=0.0, max_tokens=settings.max_tokens, n=1, seed=checkpoint["seed"])
            tokenizer = load_tokenizer(checkpoint["path"])
            requests = {
                row["problem_id"]: prompt_request(
                    student_prompt(row["question"], tokenizer, shots.get(row["task"], [])), checkpoint["content_hash"], sampling
                )
                for row in test.iter_rows(named=True)
            }
            evaluated.append((checkpoint, requests))
            jobs.append((spec, sampling, list(requests.values())))
        results = generation.generate_many(jobs, context.log.info)
        frames = []
        for (checkpoint, requests), result in zip(evaluated, results):
            base = {key: checkpoint[key] for key in ("dataset", "student", "seed")} | {
                "checkpoint_hash": checkpoint["content_hash"]
            }
            frames.append(eval_rows(test, requests, result.completions, base))
        frame = pl.concat(frames) if frames else empty_frame(EvalResultSchema)
        if not frames:
            context.log.warning("no checkpoint to evaluate (the dataset was empty)")
        yield dg.Output(
            frame,
            metadata={
                "dagster/row_count": frame.height,
                "accuracy": float(frame["is_correct"].mean()) if frame.height else 0.0,
                "accuracy_strict": float(frame["is_correct_strict"].mean()) if frame.height else 0.0,
                "degenerate_loops": int(frame["degenerate_loop"].sum()),
                "hit_length_limit": int(frame["hit_length_limit"].sum()),
                "checkpoints_evaluated": len(jobs),
                "engine_starts": sum(result.stats.extra.get("engine_starts", 0) for result in results),
                "generated": sum(result.generated for result in results),
                "reused_from_cache": sum(result.reused for result in results),
                "preview": preview(frame, ["seed", "problem_id", "is_correct", "extracted_answer", "completion"]),
            },
        )

    return eval_results
