"""``sft_examples`` (one partition per dataset recipe) and ``trace_stats`` (per dataset x student)."""

import math

import dagster as dg
import polars as pl

from trace_assets.assetdefs import asset_settings
from trace_assets.datasets.recipes import build_dataset
from trace_assets.datasets.schemas import SftExampleSchema, TraceStatsSchema
from trace_assets.datasets.stats import gzip_ratio, mean_completion_nll, template_line_share
from trace_assets.experiment import BASE_DATASET, DatasetRecipe, StudentConfig
from trace_assets.metadata import preview
from trace_assets.resources import DataResource, GPUResource
from trace_assets.students import load_model, load_tokenizer, student_path, token_counter
from trace_assets.tables import empty_frame, frame_of
from trace_assets.training.format import student_completion, student_prompt


def build_sft_examples_asset(
    recipes: dict[str, DatasetRecipe], seed: int, token_student: StudentConfig, partitions: dg.PartitionsDefinition
) -> dg.AssetsDefinition:
    @dg.asset(**asset_settings("sft_examples", "datasets", {"polars", "duckdb"}, table=SftExampleSchema,
                               partitions=partitions, partition_expr="dataset", single_run=True,
                               ins={"judged_traces": dg.AssetIn(partition_mapping=dg.AllPartitionMapping())}))
    def sft_examples(context: dg.AssetExecutionContext, data: DataResource, judged_traces: pl.DataFrame, problems: pl.DataFrame):
        """Prompt/completion training pairs of each dataset recipe, with the trace ids they came from."""
        train = problems.filter(pl.col("split") == "train")
        count_tokens = token_counter(student_path(token_student, data))
        frames, summary = [], []
        for name in context.partition_keys:
            if name == BASE_DATASET:  # the untrained student: no examples by definition
                frames.append(empty_frame(SftExampleSchema))
                continue
            frame, report = build_dataset(name, recipes, judged_traces, train, seed, count_tokens)
            if frame.is_empty():
                context.log.warning(f"dataset {name}: no examples ({report.candidates} candidates); later steps skip it")
            frames.append(frame)
            summary.append({
                "dataset": name, "recipe": recipes[name].recipe, "examples": frame.height,
                "candidates": report.candidates, "tokens": int(frame["n_tokens"].sum()),
                "flawed": f"{report.flawed_made}/{report.flawed_requested}",
                "token_target": report.token_target if report.token_target is not None else "",
            })
        combined = pl.concat(frames)
        summary_frame = pl.DataFrame(summary)
        yield dg.Output(
            combined,
            metadata={
                "dagster/row_count": combined.height,
                "empty_datasets": int((summary_frame["examples"] == 0).sum()),
                "datasets": preview(summary_frame, rows=len(summary_frame)),
                "preview": preview(combined, ["dataset", "problem_id", "source", "flaw", "n_tokens", "completion"]),
            },
        )

    return sft_examples


def dataset_stats(frame: pl.DataFrame) -> dict:
    """Text statistics of one dataset that do not depend on the student."""
    texts = frame["completion"].to_list()
    conforms = frame["conforms"].drop_nulls()
    return {
        "n_examples": frame.height,
        "correct_rate": float(frame["is_correct"].mean()) if frame.height else None,
        "conformance_rate": float(conforms.mean()) if len(conforms) else None,
        "flawed_rate": float((frame["flaw"] != "none").mean()) if frame.height else None,
        "gzip_ratio": gzip_ratio(texts) if texts else None,
        "template_line_share": template_line_share(texts) if texts else None,
    }


def build_trace_stats_asset(students: dict[str, StudentConfig], partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(**asset_settings("trace_stats", "datasets", {"pytorch", "duckdb"}, table=TraceStatsSchema,
                               partitions=partitions, partition_expr="dataset", single_run=True, gpus=1))
    def trace_stats(context: dg.AssetExecutionContext, data: DataResource, gpu: GPUResource, sft_examples: pl.DataFrame):
        """Size, tokens, correctness, conformance, compressibility and each student's NLL per dataset."""
        rows = []
        with gpu.claim(1, log=context.log.info) as cards:  # the NLL pass runs in this process, on one card
            device = gpu.torch_device(cards)
            for student_name, student in students.items():
                path = student_path(student, data)
                tokenizer = load_tokenizer(path)
                model = load_model(path, gpu, student.dtype, device)
                for name in context.partition_keys:
                    frame = sft_examples.filter(pl.col("dataset") == name)
                    prompts = [student_prompt(q, tokenizer) for q in frame["prompt"]]
                    completions = [student_completion(c, tokenizer) for c in frame["completion"]]
                    tokens = [len(tokenizer(c, add_special_tokens=False)["input_ids"]) for c in frame["completion"]]
                    nll = mean_completion_nll(model, tokenizer, prompts, completions) if prompts else math.nan
                    rows.append({
                        "dataset": name, "student": student_name, "total_tokens": sum(tokens),
                        "mean_tokens": sum(tokens) / len(tokens) if tokens else None,
                        "nll_before": None if math.isnan(nll) else nll, **dataset_stats(frame),
                    })
                    context.log.info(f"{name} x {student_name}: {frame.height} examples, NLL {nll:.3f}")
                del model
        stats = frame_of(rows, TraceStatsSchema)
        yield dg.Output(stats, metadata={"dagster/row_count": stats.height, "stats": preview(stats, rows=stats.height)})

    return trace_stats
