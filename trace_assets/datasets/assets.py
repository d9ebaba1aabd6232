"""``sft_examples`` (one partition per dataset recipe) and ``trace_stats`` (per dataset x student)."""

import math

import dagster as dg
import polars as pl

from trace_assets.assetdefs import CODE_VERSION, asset_settings, table_type
from trace_assets.datasets.recipes import exclusion_counts, student_rows
from trace_assets.datasets.schemas import DatasetExclusionSchema, SftExampleSchema, TraceStatsSchema
from trace_assets.datasets.stats import gzip_ratio, mean_completion_nll, template_line_share
from trace_assets.datasets.step import build_sft_datasets
from trace_assets.experiment import BASE_DATASETS, DatasetRecipe, DatasetRules, StudentConfig
from trace_assets.metadata import preview
from trace_assets.resources import DataResource, GPUResource
from trace_assets.students import load_model, load_tokenizer, student_path
from trace_assets.tables import frame_of
from trace_assets.training.format import student_completion, student_prompt


def build_sft_examples_asset(
    recipes: dict[str, DatasetRecipe],
    rules: DatasetRules,
    seed: int,
    students: dict[str, StudentConfig],
    partitions: dg.PartitionsDefinition,
) -> dg.AssetsDefinition:
    table_out = {"kinds": {"polars", "duckdb"}, "code_version": CODE_VERSION, "metadata": {"partition_expr": "dataset"}}

    @dg.multi_asset(
        **asset_settings("sft_examples", "datasets", partitions_def=partitions, backfill_policy=dg.BackfillPolicy.single_run()),
        can_subset=False,
        outs={
            "sft_examples": dg.AssetOut(
                dagster_type=table_type(SftExampleSchema),
                **table_out,
                description="Prompt/completion training pairs of each dataset recipe, with the trace ids they came from.",
            ),
            "dataset_exclusions": dg.AssetOut(
                dagster_type=table_type(DatasetExclusionSchema),
                **table_out,
                description="Every trace or problem a dataset did not use, with the reason.",
            ),
        },
        ins={
            "judged_traces": dg.AssetIn(partition_mapping=dg.AllPartitionMapping()),
            "style_prompts": dg.AssetIn(partition_mapping=dg.AllPartitionMapping()),
            "problems": dg.AssetIn(),
        },
    )
    def sft_examples(
        context: dg.AssetExecutionContext,
        data: DataResource,
        judged_traces: pl.DataFrame,
        style_prompts: pl.DataFrame,
        problems: pl.DataFrame,
    ):
        """Every dataset recipe built at once under one eligibility policy, on shared problems, with exclusions."""
        build = build_sft_datasets(data, recipes, rules, judged_traces, problems, style_prompts, students, seed)
        wanted = [key for key in context.partition_keys if key not in BASE_DATASETS]  # the untrained students: no rows
        examples = build.examples.filter(pl.col("dataset").is_in(wanted))
        exclusions = build.exclusions.filter(pl.col("dataset").is_in(wanted))
        summary = build.summary.filter(pl.col("dataset").is_in(wanted))
        for row in summary.filter(pl.col("examples") == 0).iter_rows(named=True):
            context.log.warning(f"dataset {row['dataset']}: no examples ({row['candidates']} candidates); later steps skip it")
        reasons = exclusion_counts(exclusions)
        yield dg.Output(
            examples,
            output_name="sft_examples",
            metadata={
                "dagster/row_count": examples.height,
                "empty_datasets": int((summary["examples"] == 0).sum()),
                "datasets": preview(summary, rows=summary.height),
                "preview": preview(examples, ["dataset", "problem_id", "source", "flaw", "n_tokens", "completion"]),
            },
        )
        yield dg.Output(
            exclusions,
            output_name="dataset_exclusions",
            metadata={
                "dagster/row_count": exclusions.height,
                "by_reason": preview(reasons, rows=reasons.height),
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
    @dg.asset(
        **asset_settings(
            "trace_stats",
            "datasets",
            {"pytorch", "duckdb"},
            table=TraceStatsSchema,
            partitions=partitions,
            partition_expr="dataset",
            single_run=True,
            gpus=1,
        )
    )
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
                    frame = student_rows(sft_examples, name, student_name)
                    prompts = [student_prompt(q, tokenizer) for q in frame["prompt"]]
                    completions = [student_completion(c, tokenizer) for c in frame["completion"]]
                    tokens = [len(tokenizer(c, add_special_tokens=False)["input_ids"]) for c in frame["completion"]]
                    nll = mean_completion_nll(model, tokenizer, prompts, completions) if prompts else math.nan
                    rows.append(
                        {
                            "dataset": name,
                            "student": student_name,
                            "total_tokens": sum(tokens),
                            "mean_tokens": sum(tokens) / len(tokens) if tokens else None,
                            "nll_before": None if math.isnan(nll) else nll,
                            **dataset_stats(frame),
                        }
                    )
                    context.log.info(f"{name} x {student_name}: {frame.height} examples, NLL {nll:.3f}")
                del model
        stats = frame_of(rows, TraceStatsSchema)
        yield dg.Output(stats, metadata={"dagster/row_count": stats.height, "stats": preview(stats, rows=stats.height)})

    return trace_stats
