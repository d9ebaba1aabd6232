"""The generation cache's table in the project's DuckDB file: every completion ever generated,
keyed by (request hash, sample index). Errors are never stored, so a re-run retries them.

``token_logprobs`` and ``token_ends`` (schema version 2) are null for rows generated before they
were recorded, or by a backend that does not return them: such rows are served without them."""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl

from trace_assets.generation.types import Completion
from trace_assets.storage import connect

CACHE_TABLE = "generation_cache"
# the columns a writer gives (the table adds created_at, filled when a row is written)
CACHE_SCHEMA = {
    "request_hash": pl.String,
    "sample_index": pl.Int32,
    "model": pl.String,
    "text": pl.String,
    "finish_reason": pl.String,
    "prompt_tokens": pl.Int32,
    "output_tokens": pl.Int32,
    "token_logprobs": pl.List(pl.Float64),
    "token_ends": pl.List(pl.Int32),
}


def _ensure_cache(connection: duckdb.DuckDBPyConnection) -> None:
    connection.execute(
        f"""
        CREATE TABLE IF NOT EXISTS {CACHE_TABLE} (
            request_hash VARCHAR NOT NULL,
            sample_index INTEGER NOT NULL,
            model VARCHAR NOT NULL,
            text VARCHAR NOT NULL,
            finish_reason VARCHAR NOT NULL,
            prompt_tokens INTEGER NOT NULL,
            output_tokens INTEGER NOT NULL,
            created_at TIMESTAMP DEFAULT current_timestamp,
            token_logprobs DOUBLE[],
            token_ends INTEGER[],
            PRIMARY KEY (request_hash, sample_index)
        )
        """
    )


def cached_completions(path: Path, request_hashes: list[str]) -> dict[tuple[str, int], Completion]:
    """Completions already generated for these request hashes, keyed by (hash, sample index)."""
    if not request_hashes or not Path(path).exists():
        return {}
    with connect(path) as connection:
        _ensure_cache(connection)
        rows = cached_rows(
            connection,
            request_hashes,
            "c.text, c.finish_reason, c.prompt_tokens, c.output_tokens, c.token_logprobs, c.token_ends",
        )
    return {
        (row[0], row[1]): Completion(*row[:6], token_logprobs=_recorded(row[6], row[7]), token_ends=_recorded(row[7], row[6]))
        for row in rows
    }


def cached_rows(
    connection: duckdb.DuckDBPyConnection, request_hashes: list[str], columns: str, samples: int | None = None
) -> list:
    """(request_hash, sample_index, *``columns``) of the cache's rows for these request hashes (the cache
    table aliased ``c``), only the first ``samples`` of each where given: one bulk scan (executemany costs
    milliseconds a row)."""
    wanted = pl.DataFrame({"request_hash": sorted(set(request_hashes))}, schema={"request_hash": pl.String})
    connection.register("wanted", wanted)
    try:
        below = f" WHERE c.sample_index < {int(samples)}" if samples is not None else ""
        return connection.execute(
            f"SELECT c.request_hash, c.sample_index, {columns} FROM {CACHE_TABLE} c JOIN wanted USING (request_hash){below}"
        ).fetchall()
    finally:
        connection.unregister("wanted")


def _recorded(values: list | None, partner: list | None) -> list | None:
    """A per-token list, only when it and its partner were both recorded for every token."""
    return list(values) if values is not None and partner is not None and len(values) == len(partner) else None


def store_completions(path: Path, model: str, completions: list[Completion]) -> int:
    """Persist completions (errors are not cached, so a re-run retries them); returns rows written."""
    kept = [c for c in completions if c.error is None]
    if not kept:
        return 0
    batch = pl.DataFrame(
        {
            "request_hash": [c.key for c in kept],
            "sample_index": [c.sample_index for c in kept],
            "model": [model] * len(kept),
            "text": [c.text for c in kept],
            "finish_reason": [c.finish_reason for c in kept],
            "prompt_tokens": [c.prompt_tokens for c in kept],
            "output_tokens": [c.output_tokens for c in kept],
            "token_logprobs": [c.token_logprobs for c in kept],
            "token_ends": [c.token_ends for c in kept],
        },
        schema=CACHE_SCHEMA,
    )
    with connect(path) as connection:
        _ensure_cache(connection)
        # one bulk insert from the frame: executemany took 34 s for 5,276 rows (a teacher chunk)
        connection.register("batch", batch)
        connection.execute(f"INSERT OR REPLACE INTO {CACHE_TABLE} BY NAME SELECT * FROM batch")
    return len(kept)


def add_missing_rows(path: Path, rows: pl.DataFrame) -> int:
    """Add the cache ``rows`` (its columns, ``created_at`` optional) whose (request hash, sample index)
    the cache lacks, creating the table in a new file; a row already there is kept as it is. Returns
    how many were added. A later device session starts from an earlier one's exported cache this way
    (bench/gpu_study.py run --cache-from). Rows that don't fit the table raise DuckDB's error."""
    with connect(path) as connection:
        _ensure_cache(connection)
        count = f"SELECT count(*) FROM {CACHE_TABLE}"
        before = connection.execute(count).fetchone()[0]
        connection.register("incoming", rows)
        connection.execute(f"INSERT OR IGNORE INTO {CACHE_TABLE} BY NAME SELECT * FROM incoming")
        return connection.execute(count).fetchone()[0] - before
