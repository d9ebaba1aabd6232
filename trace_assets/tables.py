"""A table's columns are declared once, in its pandera model; everything else derives from it.

``polars_schema`` gives the column -> polars dtype mapping that empty frames and row lists use;
``duckdb_type`` gives the DuckDB column type the IO manager creates from each, which the schema
test compares against every table after a materialization.
"""

from __future__ import annotations

import functools

import pandera.polars as pa
import polars as pl

# DuckDB's names for the polars types our models use (what a polars frame becomes on insert).
_DUCKDB_TYPES = {"String": "VARCHAR", "Int64": "BIGINT", "Float64": "DOUBLE", "Boolean": "BOOLEAN"}


@functools.cache
def polars_schema(model: type[pa.DataFrameModel]) -> dict[str, pl.DataType]:
    """Column name -> polars dtype, in the model's column order."""
    return {name: column.dtype.type for name, column in model.to_schema().columns.items()}


def empty_frame(model: type[pa.DataFrameModel]) -> pl.DataFrame:
    return pl.DataFrame(schema=polars_schema(model))


def frame_of(rows: list[dict], model: type[pa.DataFrameModel]) -> pl.DataFrame:
    """Rows (dicts) as a frame with exactly the model's columns and types."""
    return pl.DataFrame(rows, schema=polars_schema(model))


def duckdb_type(polars_type: pl.DataType | str) -> str:
    """The DuckDB column type a polars column of this type becomes."""
    return _DUCKDB_TYPES[str(polars_type)]
