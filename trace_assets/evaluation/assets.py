"""``eval_results``: every checkpoint (and each untrained student) answers the test split, greedily."""

import dagster as dg
import polars as pl

from trace_assets.evaluation.build import EVAL_SCHEMA, eval_rows, few_shot_examples
from trace_assets.evaluation.schemas import EvalResultsType
from trace_assets.experiment import Experiment, ModelConfig, SamplingConfig
from trace_assets.generation.cached import prompt_request
from trace_assets.metadata import preview
from trace_assets.resources import GenerationResource, sampling_from
from trace_assets.students import load_tokenizer
from trace_assets.training.format import student_prompt
from trace_assets.scaling import GPU_POOL, gpu_op_tags


def build_eval_results_asset(experiment: Experiment, partitions: dg.MultiPartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(
        name="eval_results",
        group_name="evaluation",
        kinds={"vllm", "duckdb"},
        code_version="1",
        partitions_def=partitions,
        pool=GPU_POOL,
        op_tags=gpu_op_tags(experiment, "eval_results"),
        dagster_type=EvalResultsType,
        metadata={"partition_expr": {"dataset": "dataset", "student": "student"}},
        description="Greedy answers of each checkpoint (and each untrained base student) to every test problem.",
    )
    def eval_results(context: dg.AssetExecutionContext, generation: GenerationResource,
                     checkpoints: pl.DataFrame, problems: pl.DataFrame):
        """Greedy answers of each checkpoint (and each untrained base student) to every test problem."""
        settings = experiment.evaluation
        test = problems.filter(pl.col("split") == "test")
        shots = few_shot_examples(problems.filter(pl.col("split") == "train"), settings.few_shot_k, experiment.seed) \
            if settings.prompt_format == "few_shot" else []
        frames = []
        for checkpoint in checkpoints.filter(pl.col("status").is_in(["trained", "base"])).iter_rows(named=True):
            student = experiment.students[checkpoint["student"]]
            config = ModelConfig(model=checkpoint["path"], backend="vllm", dtype=student.dtype,
                                 sampling=SamplingConfig(temperature=0.0, max_tokens=settings.max_tokens, n=1, seed=checkpoint["seed"]))
            sampling = sampling_from(config)
            tokenizer = load_tokenizer(checkpoint["path"])
            requests = {
                row["problem_id"]: prompt_request(student_prompt(row["question"], tokenizer, shots), checkpoint["content_hash"], sampling)
                for row in test.iter_rows(named=True)
            }
            result = generation.generate(config, sampling, list(requests.values()), context.log.info)
            base = {key: checkpoint[key] for key in ("dataset", "student", "seed")} | {"checkpoint_hash": checkpoint["content_hash"]}
            frames.append(eval_rows(test, requests, result.completions, base))
        frame = pl.concat(frames) if frames else pl.DataFrame(schema=EVAL_SCHEMA)
        if not frames:
            context.log.warning("no checkpoint to evaluate (the dataset was empty)")
        yield dg.Output(frame, metadata={
            "dagster/row_count": frame.height,
            "accuracy": float(frame["is_correct"].mean()) if frame.height else 0.0,
            "accuracy_strict": float(frame["is_correct_strict"].mean()) if frame.height else 0.0,
            "degenerate_loops": int(frame["degenerate_loop"].sum()),
            "hit_length_limit": int(frame["hit_length_limit"].sum()),
            "preview": preview(frame, ["seed", "problem_id", "is_correct", "extracted_answer", "completion"]),
        })

    return eval_results
