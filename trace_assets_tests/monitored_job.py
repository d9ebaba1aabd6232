"""A two-asset job for trace_assets_tests/test_run_monitoring.py: ``persisted`` is stored by the
project's DuckDB IO manager; ``interrupted`` (in the ``gpu`` pool) waits for a release file, so the
test can kill its run while it holds the pool's slot. Folders come from TRACE_ASSETS_TEST_WORK."""

import os
import time
from pathlib import Path

import dagster as dg
import polars as pl

from trace_assets.storage import TransactionalDuckDBPolarsIOManager


def work_dir() -> Path:
    return Path(os.environ["TRACE_ASSETS_TEST_WORK"])


@dg.asset
def persisted() -> pl.DataFrame:
    with (work_dir() / "persisted.runs").open("a") as handle:
        handle.write(f"{os.getpid()}\n")
    return pl.DataFrame({"x": [1, 2, 3]})


@dg.asset(pool="gpu")
def interrupted(persisted: pl.DataFrame) -> pl.DataFrame:
    (work_dir() / "interrupted.pid").write_text(str(os.getpid()))
    while not (work_dir() / "release").exists():
        time.sleep(0.1)
    return persisted.with_columns(y=pl.col("x") * 2)


def definitions() -> dg.Definitions:
    return dg.Definitions(
        assets=[persisted, interrupted],
        jobs=[dg.define_asset_job("work", executor_def=dg.in_process_executor)],
        resources={"io_manager": TransactionalDuckDBPolarsIOManager(database=str(work_dir() / "db.duckdb"), schema="main")},
    )


defs = definitions() if "TRACE_ASSETS_TEST_WORK" in os.environ else None


def work_job() -> dg.JobDefinition:
    return definitions().resolve_job_def("work")
