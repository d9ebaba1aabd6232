"""Digest every asset table of a trace_assets database, to show that a change kept the results.

    python scripts/table_digests.py data/trace_assets.duckdb > before.json
    ... change the code, re-materialize into the same data folder ...
    python scripts/table_digests.py data/trace_assets.duckdb --compare before.json

A table's digest is the SHA-256 of its rows sorted by every column (so row order and the order
DuckDB stores them in don't matter) and of its column names and types. ``--compare`` prints the
tables whose digest, row count or columns changed and exits 1 if any did. Paths inside the data
folder (checkpoints, base models) and the checkout (style files) are written relative to them, so
runs in two data folders or checkouts compare equal. The columns in ``PROVENANCE`` record when or
how long something ran, not what it produced, and are left out (bench/soak.py compares with it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import duckdb

# Columns that say when a row was written or how long its work took: they differ between any two
# runs, so they are not part of a table's digest. Everything else is a result.
PROVENANCE = {
    "checkpoints": {"wall_s"},  # seconds the training run took
    "round_checkpoints": {"wall_s"},  # the same, for the closed loop's rounds
    # when the completion was stored, and the folder of the checkpoint that generated it first: a
    # request's key already names the model by its weights' hash, and two arms whose checkpoints
    # trained into the same weights share their answers, under whichever path asked first
    "generation_cache": {"created_at", "model"},
    "schema_version": {"recorded_at"},  # when the file was stamped or migrated
}


def _relative(value: object, folder: str, root: str) -> object:
    return value.replace(folder, "<data>").replace(root, "<project>") if isinstance(value, str) else value


def asset_tables(connection: duckdb.DuckDBPyConnection) -> list[str]:
    return [
        row[0]
        for row in connection.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' AND table_type = 'BASE TABLE' "
            "ORDER BY table_name"
        ).fetchall()
    ]


def table_rows(connection: duckdb.DuckDBPyConnection, table: str, folder: str, root: str) -> tuple[list[tuple], list[list]]:
    """(columns as (name, type), rows) of ``table`` without its provenance columns, paths made relative,
    rows in a canonical order."""
    columns = [
        (name, data_type)
        for name, data_type in connection.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'main' AND table_name = ? ORDER BY ordinal_position",
            [table],
        ).fetchall()
        if name not in PROVENANCE.get(table, set())
    ]
    selected = ", ".join(f'"{name}"' for name, _ in columns)
    rows = [
        [_relative(value, folder, root) for value in row]
        for row in connection.execute(f'SELECT {selected} FROM "{table}" ORDER BY {selected}').fetchall()
    ]
    rows.sort(key=repr)
    return columns, rows


def table_digests(database: str, root: str = str(Path(__file__).resolve().parent.parent)) -> dict[str, dict]:
    """``root``: the checkout whose style files the run read (style_prompts records their paths)."""
    folder = str(Path(database).resolve().parent)
    with duckdb.connect(database, read_only=True) as connection:
        digests = {}
        for table in asset_tables(connection):
            columns, rows = table_rows(connection, table, folder, root)
            digest = hashlib.sha256(json.dumps([columns, rows], default=str).encode()).hexdigest()
            digests[table] = {"rows": len(rows), "columns": [name for name, _ in columns], "sha256": digest}
    return digests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("database")
    parser.add_argument("--compare", help="a JSON file this script wrote earlier")
    parser.add_argument(
        "--root",
        default=str(Path(__file__).resolve().parent.parent),
        help="the checkout that ran (default: this one); its paths are written relative to it",
    )
    args = parser.parse_args()
    current = table_digests(args.database, args.root)
    if not args.compare:
        print(json.dumps(current, indent=2))
        return
    with open(args.compare) as handle:
        before = json.load(handle)
    changed = sorted(name for name in before.keys() | current.keys() if before.get(name) != current.get(name))
    for name in changed:
        print(f"changed: {name}: {before.get(name, {}).get('rows')} -> {current.get(name, {}).get('rows')} rows")
    print(
        f"{len(before.keys() & current.keys()) - len(set(changed) & before.keys() & current.keys())} tables identical, "
        f"{len(changed)} changed"
    )
    sys.exit(1 if changed else 0)


if __name__ == "__main__":
    main()
