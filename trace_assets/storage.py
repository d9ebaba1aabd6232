"""DuckDB access: short, lock-patient connections, and the transactional IO manager.

DuckDB allows one read-write process per file, so every connection here is short-lived and
retried with backoff while another step (or the IO manager) holds the file. Every connection
checks the file's schema version first (trace_assets/migrations.py).
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
from dagster._core.storage.db_io_manager import DbIOManager, TablePartitionDimension, TableSlice
from dagster_duckdb.io_manager import DuckDbClient
from dagster_duckdb_polars import DuckDBPolarsIOManager, DuckDBPolarsTypeHandler

from trace_assets.migrations import ensure_schema


@contextlib.contextmanager
def connect(path: Path | str, read_only: bool = False, attempts: int = 60) -> Iterator[duckdb.DuckDBPyConnection]:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(attempts):
        try:
            connection = duckdb.connect(str(path), read_only=read_only)
            break
        except duckdb.IOException as error:
            if "lock" not in str(error).lower() or attempt == attempts - 1:
                raise
            time.sleep(min(2.0, 0.05 * 2**attempt) * (0.5 + random.random()))
    try:
        ensure_schema(connection, path, read_only)  # migrates an older file; refuses a newer one
        yield connection
    finally:
        connection.close()


class TransactionalDuckDbClient(DuckDbClient):
    """dagster-duckdb's client, with two changes that make concurrent runs safe.

    - A step's write (delete the partition's old rows, insert the new ones) is one transaction: a
      failed insert (a crash, or columns that no longer match the table) rolls back and the rows
      already there stay, where the stock client had already deleted them.
    - Waiting for the file lock uses :func:`connect`: jittered backoff, about two minutes of patience,
      so two runs (or a run and a reader) that want the file at once take turns instead of failing.
    """

    @staticmethod
    @contextlib.contextmanager
    def connect(context, table_slice):
        with connect(context.resource_config["database"]) as connection:
            connection.begin()
            try:
                yield connection
            except duckdb.Error as error:
                connection.rollback()
                raise _explain(error, table_slice) from error
            except BaseException:
                connection.rollback()
                raise
            connection.commit()


def _explain(error: duckdb.Error, table_slice) -> Exception:
    if isinstance(error, (duckdb.BinderException, duckdb.ConversionException)):
        table = f"{table_slice.schema}.{table_slice.table}"
        return RuntimeError(
            f"DuckDB table {table} does not match this output ({error}). Its existing rows were kept. "
            f"A code change altered the table's columns: drop the table (DROP TABLE {table}) or delete the "
            "database file, then re-run; the generation cache lives in the same file."
        )
    return error


def table_names(connection: duckdb.DuckDBPyConnection) -> set[str]:
    """The names of the tables and views in the connected database."""
    return {row[0] for row in connection.execute("SELECT table_name FROM information_schema.tables").fetchall()}


def create_empty_table(connection: duckdb.DuckDBPyConnection, name: str, frame: pl.DataFrame) -> None:
    """Table ``name`` with ``frame``'s columns and types and none of its rows, unless it exists."""
    empty = frame.clear().to_arrow()  # noqa: F841  # read by the query below
    connection.execute(f"CREATE TABLE IF NOT EXISTS {name} AS SELECT * FROM empty")


class EmptyTablePolarsTypeHandler(DuckDBPolarsTypeHandler):
    """dagster-duckdb-polars' handler, except that an empty frame still creates its table (with the
    frame's columns): the stock handler skips the write, and every reader of a table that was empty
    the first time (a training log of runs shorter than the logging interval, no failures to
    classify) failed with "Table ... does not exist"."""

    def handle_output(self, context, table_slice, obj, connection):
        if not obj.is_empty():
            return super().handle_output(context, table_slice, obj, connection)
        connection.execute(f"create schema if not exists {table_slice.schema};")
        create_empty_table(connection, f"{table_slice.schema}.{table_slice.table}", obj)
        context.add_output_metadata({"row_count": 0})

    def load_input(self, context, table_slice, connection):
        """An input of no partitions (a study with no styles has no teacher traces) is the table's
        empty frame with its columns, not the stock handler's frame of no columns."""
        if table_slice.partition_dimensions and len(context.asset_partition_keys) == 0:
            from trace_assets.assetdefs import TABLE_MODELS
            from trace_assets.tables import empty_frame

            model = TABLE_MODELS.get(table_slice.table)
            return empty_frame(model) if model is not None else pl.DataFrame()
        return super().load_input(context, table_slice, connection)


class ProductPartitionsDbIOManager(DbIOManager):
    """Dagster's DB IO manager, except that a step of many dataset x student partitions reads and writes.

    The stock manager describes a multi-partitioned input or output by one key range, and fails ("there
    are (2) key ranges associated with this output") once a run's partitions span several students:
    every experiment with more than one student failed at eval_results. Here the partitions are given
    dimension by dimension (datasets in, students in); that is exact when they are every combination
    of those keys, as a stage's or a backfill's partitions are, and refused otherwise."""

    def _get_table_slice(self, context, output_context) -> TableSlice:
        if not (
            context.has_asset_key
            and context.has_asset_partitions
            and isinstance(context.asset_partitions_def, dg.MultiPartitionsDefinition)
        ):
            return super()._get_table_slice(context, output_context)
        keys = [dg.MultiPartitionKey(key.keys_by_dimension) for key in context.asset_partition_keys]  # type: ignore[attr-defined]
        expressions = (output_context.definition_metadata or {})["partition_expr"]
        by_dimension = {name: sorted({key.keys_by_dimension[name] for key in keys}) for name in expressions}
        if len(keys) != _product(len(values) for values in by_dimension.values()):
            raise ValueError(
                f"{context.asset_key.to_user_string()}: the {len(keys)} partitions of this step are not every "
                f"combination of {', '.join(f'{len(v)} {n}s' for n, v in by_dimension.items())}; run them in separate runs"
            )
        return TableSlice(
            table=context.asset_key.path[-1],
            schema=self._schema or "public",
            database=self._database,
            partition_dimensions=[
                TablePartitionDimension(partition_expr=expressions[name], partitions=values)
                for name, values in by_dimension.items()
            ],
            columns=(context.definition_metadata or {}).get("columns"),
        )


def _product(numbers) -> int:
    total = 1
    for number in numbers:
        total *= number
    return total


class TransactionalDuckDBPolarsIOManager(DuckDBPolarsIOManager):
    """The polars DuckDB IO manager over :class:`TransactionalDuckDbClient`, creating empty tables too,
    loading inputs of many dataset x student partitions (:class:`ProductPartitionsDbIOManager`)."""

    @staticmethod
    def type_handlers():
        return [EmptyTablePolarsTypeHandler()]

    def create_io_manager(self, context) -> DbIOManager:
        return ProductPartitionsDbIOManager(
            db_client=TransactionalDuckDbClient(),
            database=self.database,
            schema=self.schema_,
            type_handlers=self.type_handlers(),
            default_load_type=self.default_load_type(),
            io_manager_name="DuckDBIOManager",
        )


if __name__ == "__main__":
    import sys

    from trace_assets.experiment import database_path
    from trace_assets.migrations import SCHEMA_VERSION, stored_version

    file = Path(sys.argv[1]) if len(sys.argv) > 1 else database_path()
    with connect(file) as db:
        print(f"{file}: schema version {stored_version(db)} (this code: {SCHEMA_VERSION})")
