"""Re-run what a style file feeds when the file changes, and re-evaluate on a schedule."""

from pathlib import Path

import dagster as dg

from trace_assets.styles.library import StyleError, load_style

STYLE_CHAIN = ["style_prompts", "teacher_traces", "judged_traces"]
DATASET_CHAIN = ["sft_examples", "dataset_exclusions", "trace_stats"]


def materialized_style_version(instance: dg.DagsterInstance, style: str) -> str | None:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("style_prompts"), asset_partitions=[style]), limit=1
    ).records
    if not records:
        return None
    return records[0].asset_materialization.tags.get("dagster/data_version")


def build_style_change_sensor(
    styles_dir: Path,
    datasets_by_style: dict[str, list[str]],
    styles: dg.PartitionsDefinition,
    datasets: dg.PartitionsDefinition,
) -> dg.SensorDefinition:
    """One job per partitioning: a Dagster job's assets must share one partitions definition.

    ``datasets_by_style``: every style of the experiment, with the datasets built from it.
    """
    style_job = dg.define_asset_job(
        "restyle", selection=STYLE_CHAIN, partitions_def=styles, description="A style's prompts, traces and verdicts."
    )
    dataset_job = dg.define_asset_job(
        "rebuild_datasets", selection=DATASET_CHAIN, partitions_def=datasets, description="A dataset's examples and statistics."
    )

    @dg.sensor(
        name="style_file_changes",
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        jobs=[style_job, dataset_job],
        description="When a style file's content hash differs from its materialised version, re-runs that style's "
        "partitions and the datasets built from it; other styles are left alone.",
    )
    def style_file_changes(context: dg.SensorEvaluationContext):
        requests = []
        for style, style_datasets in datasets_by_style.items():
            try:
                current = load_style(styles_dir, style).version
            except StyleError as error:
                context.log.warning(str(error))
                continue
            materialized = materialized_style_version(context.instance, style)
            if materialized is None or materialized == current:
                continue  # never materialised: the first run is a person's call, not a change
            context.log.info(f"style {style}: {materialized} -> {current}")
            requests.append(
                dg.RunRequest(
                    run_key=f"style:{style}:{current}",
                    partition_key=style,
                    job_name=style_job.name,
                    tags={"trace_assets/style": style, "trace_assets/style_version": current},
                )
            )
            for dataset in style_datasets:
                requests.append(
                    dg.RunRequest(
                        run_key=f"dataset:{dataset}:{style}:{current}",
                        partition_key=dataset,
                        job_name=dataset_job.name,
                        tags={"trace_assets/style": style, "trace_assets/style_version": current},
                    )
                )
        return requests or dg.SkipReason("no style file changed")

    return style_file_changes


def build_evaluation_schedule(cron: str | None, models: dg.MultiPartitionsDefinition) -> dg.ScheduleDefinition | None:
    """Re-evaluate every checkpoint and rebuild the report on the experiment's cron; None when it has none."""
    if not cron:
        return None
    job = dg.define_asset_job("reevaluate", selection=["eval_results"], partitions_def=models)

    @dg.schedule(
        job=job,
        cron_schedule=cron,
        name="reevaluation",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Re-runs eval_results for every dataset x student on the experiment's cadence.",
    )
    def reevaluation(context: dg.ScheduleEvaluationContext):
        for key in models.get_partition_keys():
            yield dg.RunRequest(run_key=f"{context.scheduled_execution_time}:{key}", partition_key=key)

    return reevaluation
