"""Assemble the asset graph of one experiment into Dagster definitions.

The experiment is read once, here; each asset factory gets only its own section, the partitions
it lives on and the derived facts it needs (``Experiment`` methods), never the whole experiment.
"""

from __future__ import annotations

import functools
from pathlib import Path

import dagster as dg

from trace_assets.automation.sensors import build_evaluation_schedule, build_style_change_sensor
from trace_assets.datasets.assets import build_sft_examples_asset, build_trace_stats_asset
from trace_assets.datasets.recipes import datasets_affected_by_style
from trace_assets.evaluation.assets import build_eval_results_asset
from trace_assets.experiment import Experiment
from trace_assets.judging.assets import build_judged_traces_asset
from trace_assets.lineage.assets import lineage_views
from trace_assets.problems.assets import build_problems_asset
from trace_assets.reporting.assets import build_accuracy_asset, build_failure_modes_asset, build_report_asset
from trace_assets.reporting.report import statistics_plan
from trace_assets.resources import DataResource, GenerationResource, GPUResource
from trace_assets.storage import TransactionalDuckDBPolarsIOManager
from trace_assets.styles.assets import build_style_asset
from trace_assets.traces.assets import build_teacher_traces_asset
from trace_assets.training.assets import build_checkpoints_asset


def style_partitions(experiment: Experiment) -> dg.StaticPartitionsDefinition:
    return dg.StaticPartitionsDefinition(experiment.styles)


def dataset_partitions(experiment: Experiment) -> dg.StaticPartitionsDefinition:
    """Every dataset recipe, plus ``base``: the empty dataset, i.e. the untrained student."""
    return dg.StaticPartitionsDefinition(experiment.dataset_keys())


def model_partitions(experiment: Experiment) -> dg.MultiPartitionsDefinition:
    return dg.MultiPartitionsDefinition(
        {
            "dataset": dataset_partitions(experiment),
            "student": dg.StaticPartitionsDefinition(list(experiment.students)),
        }
    )


def build_resources(experiment: Experiment, folder: Path) -> dict:
    folder.mkdir(parents=True, exist_ok=True)  # DuckDB creates the file, not its folder
    data = DataResource(data_dir=str(folder))
    gpu = GPUResource(
        devices=",".join(str(d) for d in experiment.gpu.devices),
        memory_fraction=experiment.gpu.memory_fraction,
        cpu_memory_fraction=experiment.gpu.cpu_memory_fraction,
        compile_cache=str(folder / "compile_cache"),
    )
    return {
        "io_manager": TransactionalDuckDBPolarsIOManager(database=str(data.database), schema="main"),
        "data": data,
        "gpu": gpu,
        "generation": GenerationResource(gpu=gpu, data=data, sleep_engines=experiment.gpu.sleep_engines),
    }


def with_column_schemas(assets: list[dg.AssetsDefinition]) -> list[dg.AssetsDefinition]:
    """Show each table's pandera schema as the asset's columns in the UI, before any run."""

    def add_schema(spec: dg.AssetSpec, asset: dg.AssetsDefinition) -> dg.AssetSpec:
        output = asset.op.output_def_named(asset.get_output_name_for_asset_key(spec.key))
        schema = (output.dagster_type.metadata or {}).get("schema")
        return spec.merge_attributes(metadata={"dagster/column_schema": schema.schema}) if schema else spec

    return [dg.map_asset_specs(lambda spec, a=asset: add_schema(spec, a), [asset])[0] for asset in assets]


def build_assets(experiment: Experiment) -> list:
    styles = style_partitions(experiment)
    datasets = dataset_partitions(experiment)
    models = model_partitions(experiment)
    thresholds = experiment.thresholds
    return with_column_schemas(
        [
            build_problems_asset(experiment.problems, experiment.seed, experiment.validation_fraction()),
            build_style_asset(experiment.resolve(experiment.styles_dir), styles),
            build_teacher_traces_asset(
                experiment.teacher, experiment.paraphrase_styles(), thresholds.min_correct_rate, styles, experiment.confidence
            ),
            build_judged_traces_asset(experiment.judge, experiment.judge_note(), thresholds.min_conformance_rate, styles),
            build_sft_examples_asset(
                experiment.datasets, experiment.dataset_rules(), experiment.seed, experiment.students, datasets
            ),
            build_trace_stats_asset(experiment.students, datasets),
            build_checkpoints_asset(
                experiment.students,
                experiment.training,
                models,
                experiment.training_seed_offsets(),
                experiment.per_task_datasets(),
            ),
            build_eval_results_asset(experiment.students, experiment.evaluation, experiment.seed, models),
            build_failure_modes_asset(experiment.judge),
            build_accuracy_asset(experiment.seed, experiment.dataset_keys(), experiment.statistics.seed_sd),
            build_report_asset(
                experiment.name,
                experiment.training.seeds,
                experiment.judge_note(),
                experiment.planned_contrasts(),
                experiment.confidence_pairs(),
                statistics_plan(experiment),
                experiment.dataset_keys(),
            ),
            lineage_views,
        ]
    )


def build_definitions(experiment: Experiment, folder: Path, executor: dg.ExecutorDefinition | None = None) -> dg.Definitions:
    """The whole graph; ``executor`` defaults to Dagster's multiprocess executor (deploy/ passes others)."""
    schedule = build_evaluation_schedule(experiment.evaluation.schedule, model_partitions(experiment))
    style_sensor = build_style_change_sensor(
        experiment.resolve(experiment.styles_dir),
        {
            style: datasets_affected_by_style(experiment.datasets, experiment.comparisons, experiment.token_matching, style)
            for style in experiment.styles
        },
        style_partitions(experiment),
        dataset_partitions(experiment),
    )
    assets, sensors = build_assets(experiment), [style_sensor]
    if experiment.revision is not None:
        from trace_assets.loop.assets import build_loop_assets, loop_settings
        from trace_assets.loop.rounds import round_gpu_hours
        from trace_assets.loop.sensors import build_next_round_sensor

        assets += with_column_schemas(build_loop_assets(loop_settings(experiment), experiment.name))
        # estimated on the sensor's first tick, not on every definitions load (it makes the synthetic problems)
        styles = experiment.revision.styles
        hours = functools.cache(lambda: {style: round_gpu_hours(experiment, style) for style in styles})
        sensors.append(build_next_round_sensor(experiment.revision, folder / "trace_assets.duckdb", hours))
    return dg.Definitions(
        assets=assets,
        resources=build_resources(experiment, folder),
        sensors=sensors,
        schedules=[schedule] if schedule else [],
        executor=executor,
    )
