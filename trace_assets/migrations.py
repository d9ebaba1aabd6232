"""The DuckDB file's schema version, and the migrations that bring older files forward.

The file (assets' tables and the generation cache) records its version in the ``schema_version``
table, one row per version it has been at. Every connection the project opens
(:func:`trace_assets.storage.connect`) reads it, which costs a fraction of a millisecond next to
opening the file, and:

- a file written before versions were recorded (tables, but no ``schema_version``) is version 1,
  the baseline;
- an older file is migrated forward by ``MIGRATIONS`` (version N -> N+1, applied in order) in one
  transaction: a failing step rolls every step back and leaves the file as it was;
- a file from a newer version of the code is an error naming the file and both versions, and is
  never changed;
- a new file is stamped with the current version.

To change the schema: write ``def _v1_to_v2(connection)`` (DDL and data moves that keep every
row), register it as ``MIGRATIONS[1]``, raise ``SCHEMA_VERSION`` to 2 and commit a fixture file of
version 1 for the test (trace_assets_tests/test_migrations.py shows how).

``python -m trace_assets.storage [FILE]`` prints a file's version and this code's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import duckdb

SCHEMA_VERSION = 5
BASELINE_VERSION = 1  # files written before the version was recorded
VERSION_TABLE = "schema_version"

Migration = Callable[[duckdb.DuckDBPyConnection], None]


def _v1_to_v2(connection: duckdb.DuckDBPyConnection) -> None:
    """Tasks: every problem and evaluation so far was GSM8K's; problems gain their task-specific fields."""
    tables = _main_tables(connection)
    if "problems" in tables:
        connection.execute("ALTER TABLE problems ADD COLUMN task VARCHAR DEFAULT 'gsm8k'")
        connection.execute("ALTER TABLE problems ADD COLUMN task_metadata VARCHAR DEFAULT '{}'")
    if "eval_results" in tables:
        connection.execute("ALTER TABLE eval_results ADD COLUMN task VARCHAR DEFAULT 'gsm8k'")


def _v2_to_v3(connection: duckdb.DuckDBPyConnection) -> None:
    """The generation cache records each output token's log-probability and where its text ends
    (step-level confidence); rows generated before stay, with both null."""
    tables = _main_tables(connection)
    if "generation_cache" in tables:
        connection.execute("ALTER TABLE generation_cache ADD COLUMN token_logprobs DOUBLE[]")
        connection.execute("ALTER TABLE generation_cache ADD COLUMN token_ends INTEGER[]")


def _v3_to_v4(connection: duckdb.DuckDBPyConnection) -> None:
    """The loop's ``round_styles`` holds a style as ``style_prompts`` does, one column per field of the
    style file, instead of the file's YAML text: each row's text is read back into those columns (its
    version, path and lineage kept), in the table's new column order, which the IO manager writes by."""
    if "round_styles" not in _main_tables(connection):
        return
    import yaml

    from trace_assets.loop.schemas import RoundStyleSchema
    from trace_assets.styles.library import Style, StyleFile, style_row
    from trace_assets.tables import frame_of

    rows = []
    for row in connection.execute("SELECT * FROM round_styles").pl().iter_rows(named=True):
        spec = StyleFile.model_validate(yaml.safe_load(row.pop("style_yaml")))
        rows.append({**row, **style_row(Style(row["style"], Path(row["path"]), row["version"], spec))})
    migrated = frame_of(rows, RoundStyleSchema)  # noqa: F841  # read by the query below
    connection.execute("DROP TABLE round_styles")
    connection.execute("CREATE TABLE round_styles AS SELECT * FROM migrated")


def _v4_to_v5(connection: duckdb.DuckDBPyConnection) -> None:
    """Per-task training: checkpoints and training-log rows name the task a run learnt alone (null: every
    run so far was pooled); evaluations and accuracies say how the answering model was trained (``none`` for
    the untrained students, ``pooled`` for every other). The loop's round tables, which keep ``round_key``
    (and ``split``) last, are rebuilt in the order the IO manager writes."""
    tables = _main_tables(connection)
    kind = "CASE WHEN dataset IN ('base', 'base_few_shot') THEN 'none' ELSE 'pooled' END"
    for table in {"checkpoints", "training_log", "round_checkpoints"} & tables:
        connection.execute(f"ALTER TABLE {table} ADD COLUMN task VARCHAR")
    for table in {"eval_results", "accuracy", "round_evals"} & tables:
        connection.execute(f"ALTER TABLE {table} ADD COLUMN training VARCHAR")
        connection.execute(f"UPDATE {table} SET training = {kind}")
    for table, last in (("round_checkpoints", "round_key"), ("round_evals", "round_key, split")):
        if table in tables:
            connection.execute(f"CREATE TABLE {table}_v5 AS SELECT * EXCLUDE ({last}), {last} FROM {table}")
            connection.execute(f"DROP TABLE {table}")
            connection.execute(f"ALTER TABLE {table}_v5 RENAME TO {table}")


# MIGRATIONS[n] turns a version-n file into a version-(n + 1) file.
MIGRATIONS: dict[int, Migration] = {1: _v1_to_v2, 2: _v2_to_v3, 3: _v3_to_v4, 4: _v4_to_v5}


class SchemaVersionError(RuntimeError):
    """The DuckDB file's schema version is newer than the code's, or it could not be migrated."""


def _main_tables(connection: duckdb.DuckDBPyConnection) -> set[str]:
    return {
        row[0]
        for row in connection.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() AND schema_name = 'main'"
        ).fetchall()
    }


def stored_version(connection: duckdb.DuckDBPyConnection) -> int | None:
    """The file's version: its ``schema_version``, else the baseline if it has tables, else None (a new file)."""
    tables = _main_tables(connection)
    if VERSION_TABLE in tables:
        version = connection.execute(f"SELECT max(version) FROM {VERSION_TABLE}").fetchone()[0]
        if version is not None:
            return int(version)
    return BASELINE_VERSION if tables - {VERSION_TABLE} else None


def _record(connection: duckdb.DuckDBPyConnection, version: int) -> None:
    connection.execute(
        f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} "
        "(version INTEGER NOT NULL, recorded_at TIMESTAMP NOT NULL DEFAULT current_timestamp)"
    )
    connection.execute(f"INSERT INTO {VERSION_TABLE} (version) VALUES (?)", [version])


def ensure_schema(
    connection: duckdb.DuckDBPyConnection,
    path: Path | str,
    read_only: bool = False,
    target: int | None = None,
    migrations: Mapping[int, Migration] | None = None,
) -> int:
    """Bring the file behind ``connection`` to ``target`` (default: ``SCHEMA_VERSION``); returns the
    version it was at. Raises :class:`SchemaVersionError` for a newer file, a read-only connection to
    an older one, a missing migration, or a migration that fails (then nothing is changed)."""
    target = SCHEMA_VERSION if target is None else target
    migrations = MIGRATIONS if migrations is None else migrations
    for attempt in range(3):
        try:
            return _ensure(connection, path, read_only, target, migrations)
        except duckdb.TransactionException:  # another connection of this process stamped or migrated it first
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _ensure(connection, path, read_only: bool, target: int, migrations: Mapping[int, Migration]) -> int:
    version = stored_version(connection)
    if version == target:
        if not read_only and VERSION_TABLE not in _main_tables(connection):  # a baseline file: make its version explicit
            connection.begin()
            _record(connection, version)
            connection.commit()
        return version
    if version is not None and version > target:
        raise SchemaVersionError(
            f"{path}: the database's schema version is {version}, newer than this code's ({target}); it was "
            "written by a newer version of trace_assets. Upgrade the code, or point TRACE_ASSETS_DATA_DIR at "
            "another folder. The file was not changed."
        )
    if read_only:
        if version is None:  # a new, empty file: nothing to read, nothing to migrate
            return target
        raise SchemaVersionError(
            f"{path}: the database's schema version is {version}, older than this code's ({target}), and it "
            "is open read-only; open it read-write once (any run does) to migrate it."
        )
    connection.begin()
    try:
        if version is None:
            _record(connection, target)
        else:
            for step in range(version, target):
                if step not in migrations:
                    raise SchemaVersionError(f"{path}: no migration from schema version {step} to {step + 1}")
                try:
                    migrations[step](connection)
                except duckdb.Error as error:
                    raise SchemaVersionError(
                        f"{path}: migrating from schema version {step} to {step + 1} failed ({error}); "
                        f"the file was left at version {version}"
                    ) from error
                _record(connection, step + 1)
    except BaseException:
        connection.rollback()
        raise
    connection.commit()
    return version if version is not None else target
