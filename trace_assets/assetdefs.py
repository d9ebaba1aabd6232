"""The decorator settings that stages share: table type and columns, partitions, GPU pool and tags.

Every table asset is declared through :func:`asset_settings`, so what an asset is (its pandera
model, partitioning, GPUs) is written once and the conventions (code version, the partition
column the IO manager filters on, single-run backfills for engine-heavy steps) live here.
"""

from __future__ import annotations

import functools

import dagster as dg
import pandera.polars as pa
from dagster_pandera import pandera_schema_to_dagster_type

from trace_assets.scaling import GPU_POOL, gpu_op_tags

CODE_VERSION = "1"

# Materialise as soon as the inputs are new (the report assets, under dagster dev's automation).
EAGER = dg.AutomationCondition.eager()


# each table asset's pandera model by table name: what an input of no partitions loads as (storage.py)
TABLE_MODELS: dict[str, type[pa.DataFrameModel]] = {}


@functools.cache
def table_type(model: type[pa.DataFrameModel]) -> dg.DagsterType:
    """The Dagster type that validates an output against its pandera model."""
    return pandera_schema_to_dagster_type(model)


def asset_settings(
    name: str,
    group: str,
    kinds: set[str] | None = None,
    *,
    table: type[pa.DataFrameModel] | None = None,
    partitions: dg.PartitionsDefinition | None = None,
    partition_expr: str | dict[str, str] | None = None,
    single_run: bool = False,
    gpus: int | None = None,
    checks: tuple[str, ...] = (),
    **extra,
) -> dict:
    """Keyword arguments for ``@dg.asset``; the docstring of the decorated function is the description.

    ``single_run``: every selected partition in one run, so one model engine start serves them all.
    ``gpus``: the step holds that many cards of the machine's ``gpu`` pool.
    ``kinds`` None: a multi-asset, whose outputs carry their own kinds and code versions.
    """
    settings: dict = {"name": name, "group_name": group, **extra}
    if kinds is not None:
        settings.update(kinds=kinds, code_version=CODE_VERSION)
    if table is not None:
        settings["dagster_type"] = table_type(table)
        TABLE_MODELS[name] = table
    if partitions is not None:
        settings["partitions_def"] = partitions
        settings["metadata"] = {**settings.get("metadata", {}), "partition_expr": partition_expr}
    if single_run:
        settings["backfill_policy"] = dg.BackfillPolicy.single_run()
    if gpus is not None:
        settings["pool"] = GPU_POOL
        settings["op_tags"] = gpu_op_tags(gpus)
    if checks:
        settings["check_specs"] = [dg.AssetCheckSpec(check, asset=name) for check in checks]
    return settings
