"""The generation cache's table in the project's DuckDB file: every completion ever generated,
keyed by (request hash, sample index). Errors are never stored, so a re-run retries them."""

from __future__ import annotations

from pathlib import Path

import duckdb

from trace_assets.generation.types import Completion
from trace_assets.storage import connect

CACHE_TABLE = "generation_cache"


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
        connection.execute("CREATE TEMP TABLE wanted (request_hash VARCHAR)")
        connection.executemany("INSERT INTO wanted VALUES (?)", [(h,) for h in set(request_hashes)])
        rows = connection.execute(
            f"SELECT c.request_hash, c.sample_index, c.text, c.finish_reason, c.prompt_tokens, c.output_tokens "
            f"FROM {CACHE_TABLE} c JOIN wanted USING (request_hash)"
        ).fetchall()
    return {(row[0], row[1]): Completion(row[0], row[1], row[2], row[3], row[4], row[5]) for row in rows}


def store_completions(path: Path, model: str, completions: list[Completion]) -> int:
    """Persist completions (errors are not cached, so a re-run retries them); returns rows written."""
    rows = [
        (c.key, c.sample_index, model, c.text, c.finish_reason, c.prompt_tokens, c.output_tokens)
        for c in completions
        if c.error is None
    ]
    if not rows:
        return 0
    with connect(path) as connection:
        _ensure_cache(connection)
        connection.executemany(
            f"INSERT OR REPLACE INTO {CACHE_TABLE} "
            "(request_hash, sample_index, model, text, finish_reason, prompt_tokens, output_tokens) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    return len(rows)
