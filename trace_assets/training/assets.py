"""``checkpoints`` and ``training_log``: one fine-tuned student per dataset x student x seed (x task, per task)."""

import dagster as dg
import polars as pl

from trace_assets.assetdefs import CODE_VERSION, asset_settings, table_type
from trace_assets.experiment import StudentConfig, TrainingConfig
from trace_assets.metadata import preview
from trace_assets.resources import DataResource, GPUResource
from trace_assets.tables import frame_of
from trace_assets.training.schemas import CheckpointSchema, TrainingLogSchema
from trace_assets.training.step import train_checkpoints


def loss_plot_markdown(log: pl.DataFrame) -> dg.MarkdownMetadataValue:
    from trace_assets.plots import loss_curves_png, png_markdown

    return dg.MetadataValue.md(png_markdown(loss_curves_png(log), "loss curves") if log.height else "_(no steps)_")


def build_checkpoints_asset(
    students: dict[str, StudentConfig],
    config: TrainingConfig,
    partitions: dg.MultiPartitionsDefinition,
    seed_offsets: dict[str, int] | None = None,
    per_task: frozenset[str] = frozenset(),
) -> dg.AssetsDefinition:
    """``seed_offsets``: per replicate dataset (an A/A control), what its training seeds add to each seed;
    ``per_task``: the datasets trained per task (one model per task and seed)."""
    seed_offsets = seed_offsets or {}
    table_out = {
        "kinds": {"pytorch", "duckdb"},
        "code_version": CODE_VERSION,
        "metadata": {"partition_expr": {"dataset": "dataset", "student": "student"}},
    }

    @dg.multi_asset(
        # every partition of a run in one step: its runs share one torchrun launch (~30 s on an H100
        # for the 135M student, bench/results/gpu_study/third_run), as eval_results shares one engine
        **asset_settings("checkpoints", "training", gpus=config.processes, single_run=True),
        partitions_def=partitions,
        can_subset=False,
        outs={
            "checkpoints": dg.AssetOut(
                dagster_type=table_type(CheckpointSchema),
                **table_out,
                description="Fine-tuned student checkpoints (path, content hash, config, tokens, wall time) per seed.",
            ),
            "training_log": dg.AssetOut(
                dagster_type=table_type(TrainingLogSchema),
                **table_out,
                description="Step, train loss, eval loss, learning rate and tokens seen of every training run.",
            ),
        },
        ins={
            "sft_examples": dg.AssetIn(partition_mapping=dg.MultiToSingleDimensionPartitionMapping("dataset")),
            "problems": dg.AssetIn(),
        },
    )
    def checkpoints(
        context: dg.AssetExecutionContext,
        data: DataResource,
        gpu: GPUResource,
        sft_examples: pl.DataFrame,
        problems: pl.DataFrame,
    ):
        """Fine-tune each student on each dataset with TRL SFT, once per training seed (and task, if per task).

        One step trains every run of its partitions, in one launch on GPUs."""
        keys = [key.keys_by_dimension for key in context.partition_keys]  # type: ignore[attr-defined]
        datasets = list(dict.fromkeys(key["dataset"] for key in keys))
        names = list(dict.fromkeys(key["student"] for key in keys))
        run = train_checkpoints(
            gpu,
            data,
            config,
            {name: students[name] for name in names},
            sft_examples,
            problems,
            datasets,
            data.path / "checkpoints",
            context.log.info,
            seed_offsets,
            per_task,
        )
        for dataset, student in dict.fromkeys((r["dataset"], r["student"]) for r in run.rows if r["status"] == "skipped_empty"):
            context.log.warning(f"dataset {dataset} is empty: nothing to train for {student}")
        frame = frame_of(run.rows, CheckpointSchema)
        log = frame_of(run.log, TrainingLogSchema)
        trained = frame.filter(pl.col("status") == "trained")
        wall = run.train_s
        yield dg.Output(
            frame,
            output_name="checkpoints",
            metadata={
                "dagster/row_count": frame.height,
                "status": ", ".join(frame["status"].to_list()),
                "train_tokens": int(trained["train_tokens"].sum()),
                "train_tokens_per_s": float(trained["train_tokens"].sum()) / wall if wall else 0.0,
                "train_s": round(wall, 1),  # the trainers' own seconds (metadata.WORK_SECONDS)
                "checkpoints": preview(
                    frame, ["seed", "task", "status", "content_hash", "train_examples", "train_tokens", "wall_s"]
                ),
            },
        )
        yield dg.Output(
            log,
            output_name="training_log",
            metadata={
                "dagster/row_count": log.height,
                "final_train_loss": float(log["train_loss"].drop_nulls()[-1]) if log["train_loss"].drop_nulls().len() else 0.0,
                "loss_curves": loss_plot_markdown(log),
            },
        )

    return checkpoints
