"""Upgrades keep the cache: the DuckDB file carries a schema version and is migrated forward on open.

fixtures/schema_v1.duckdb.gz is a database written in today's schema before versions were recorded
(fixtures/make_schema_v1_database.py): problems, style_prompts and generation_cache rows.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import duckdb
import pytest

from trace_assets import migrations
from trace_assets.generation.cache_store import cached_completions
from trace_assets.migrations import SCHEMA_VERSION, VERSION_TABLE, SchemaVersionError, ensure_schema, stored_version
from trace_assets.storage import connect

FIXTURE = Path(__file__).parent / "fixtures" / "schema_v1.duckdb.gz"
DATA_TABLES = ("generation_cache", "problems", "style_prompts")


@pytest.fixture
def v1_database(tmp_path) -> Path:
    path = tmp_path / "trace_assets.duckdb"
    with gzip.open(FIXTURE) as source, path.open("wb") as target:
        shutil.copyfileobj(source, target)
    return path


def contents(path: Path) -> dict[str, list[tuple]]:
    """Every row of every data table, read without the project's code (no migration on this open)."""
    with duckdb.connect(str(path), read_only=True) as db:
        return {table: sorted(db.execute(f"SELECT * FROM {table}").fetchall(), key=repr) for table in DATA_TABLES}


def versions(path: Path) -> list[int]:
    with duckdb.connect(str(path), read_only=True) as db:
        tables = {row[0] for row in db.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        return (
            [row[0] for row in db.execute(f"SELECT version FROM {VERSION_TABLE} ORDER BY recorded_at").fetchall()]
            if VERSION_TABLE in tables
            else []
        )


def test_the_fixture_is_todays_schema_without_a_recorded_version(v1_database):
    rows = contents(v1_database)
    assert {table: len(r) for table, r in rows.items()} == {"generation_cache": 10, "problems": 7, "style_prompts": 2}
    assert versions(v1_database) == []
    with duckdb.connect(str(v1_database), read_only=True) as db:
        assert stored_version(db) == 1


def test_opening_a_v1_database_migrates_it_to_the_current_schema_keeping_every_row(v1_database):
    """v2: problems and evaluations carry their task (all v1 rows were GSM8K's); v3: the generation
    cache records per-token log-probabilities, null for rows generated before."""
    before = contents(v1_database)
    with connect(v1_database) as db:
        assert stored_version(db) == SCHEMA_VERSION == 5
        cache = db.execute("SELECT * EXCLUDE (token_logprobs, token_ends) FROM generation_cache").fetchall()
        recorded = db.execute("SELECT count(*) FROM generation_cache WHERE token_logprobs IS NOT NULL").fetchone()[0]
    assert sorted(cache, key=repr) == before["generation_cache"] and recorded == 0
    after = contents(v1_database)
    assert after["style_prompts"] == before["style_prompts"]
    # every v1 problem was a GSM8K-format problem: the task columns are added and filled, nothing else changes
    assert sorted(row[:-2] for row in after["problems"]) == sorted(before["problems"])
    assert {row[-2:] for row in after["problems"]} == {("gsm8k", "{}")}
    with duckdb.connect(str(v1_database), read_only=True) as db:
        columns = [
            row[0]
            for row in db.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'problems' ORDER BY ordinal_position"
            ).fetchall()
        ]
    from trace_assets.problems.schemas import ProblemSchema
    from trace_assets.tables import polars_schema

    assert columns == list(polars_schema(ProblemSchema))  # the IO manager can write the migrated table again
    assert versions(v1_database) == [2, 3, 4, 5]
    # the generation cache in it is still served as such, without log-probabilities
    cached = cached_completions(v1_database, ["hash00", "hash04"])
    assert sorted(cached) == [("hash00", 0), ("hash00", 1), ("hash04", 0), ("hash04", 1)]
    assert cached[("hash04", 1)].text.endswith("#### 5") and cached[("hash04", 1)].token_logprobs is None
    with connect(v1_database, read_only=True):  # a current file opens read-only too
        pass


def _v1_to_v2(db: duckdb.DuckDBPyConnection) -> None:
    """An example migration: the cache gets a total-tokens column, filled for every existing row."""
    db.execute("ALTER TABLE generation_cache ADD COLUMN total_tokens INTEGER")
    db.execute("UPDATE generation_cache SET total_tokens = prompt_tokens + output_tokens")


def _v2_to_v3_broken(db: duckdb.DuckDBPyConnection) -> None:
    db.execute("ALTER TABLE problems RENAME COLUMN question TO prompt")
    db.execute("SELECT no_such_column FROM problems")


def test_an_older_database_is_migrated_forward_without_loss(v1_database, monkeypatch):
    before = contents(v1_database)
    monkeypatch.setattr(migrations, "SCHEMA_VERSION", 2)
    monkeypatch.setattr(migrations, "MIGRATIONS", {1: _v1_to_v2})
    with connect(v1_database) as db:  # the project's every open migrates
        assert stored_version(db) == 2
        migrated = sorted(db.execute("SELECT * EXCLUDE (total_tokens) FROM generation_cache").fetchall(), key=repr)
        totals = db.execute(
            "SELECT count(*) FROM generation_cache WHERE total_tokens = prompt_tokens + output_tokens"
        ).fetchone()[0]
    assert migrated == before["generation_cache"] and totals == 10
    with duckdb.connect(str(v1_database), read_only=True) as db:
        assert sorted(db.execute("SELECT * FROM problems").fetchall(), key=repr) == before["problems"]
        assert sorted(db.execute("SELECT * FROM style_prompts").fetchall(), key=repr) == before["style_prompts"]
    assert versions(v1_database) == [2]
    with connect(v1_database):  # already current: nothing more
        pass
    assert versions(v1_database) == [2]


def test_a_failing_migration_changes_nothing(v1_database):
    before = contents(v1_database)
    with (
        duckdb.connect(str(v1_database)) as db,
        pytest.raises(SchemaVersionError, match=r"(?s)from schema version 2 to 3 failed.*left at version 1"),
    ):
        ensure_schema(db, v1_database, target=3, migrations={1: _v1_to_v2, 2: _v2_to_v3_broken})
    assert contents(v1_database) == before  # step 1's column and step 2's rename were rolled back too
    assert versions(v1_database) == []
    with (
        duckdb.connect(str(v1_database)) as db,
        pytest.raises(SchemaVersionError, match="no migration from schema version 1 to 2"),
    ):
        ensure_schema(db, v1_database, target=2, migrations={})


def test_a_database_from_newer_code_is_refused_and_left_alone(v1_database):
    with duckdb.connect(str(v1_database)) as db:
        db.execute(
            f"CREATE TABLE {VERSION_TABLE} (version INTEGER NOT NULL, recorded_at TIMESTAMP NOT NULL DEFAULT current_timestamp)"
        )
        db.execute(f"INSERT INTO {VERSION_TABLE} (version) VALUES (7)")
    before = contents(v1_database)
    for read_only in (False, True):
        with pytest.raises(SchemaVersionError) as info, connect(v1_database, read_only=read_only):
            pass
        message = str(info.value)
        assert str(v1_database) in message and "schema version is 7" in message and f"this code's ({SCHEMA_VERSION})" in message
    assert contents(v1_database) == before and versions(v1_database) == [7]
    with pytest.raises(SchemaVersionError, match="schema version is 7"):  # the generation cache refuses it too
        cached_completions(v1_database, ["hash00"])


def test_an_older_database_opened_read_only_asks_for_a_read_write_open(v1_database, monkeypatch):
    monkeypatch.setattr(migrations, "SCHEMA_VERSION", 2)
    with (
        pytest.raises(SchemaVersionError, match=r"version is 1, older than this code's \(2\).*read-only"),
        connect(v1_database, read_only=True),
    ):
        pass
    assert versions(v1_database) == []


def test_a_new_database_is_stamped_with_the_current_version(tmp_path):
    path = tmp_path / "new.duckdb"
    with connect(path) as db:
        assert stored_version(db) == SCHEMA_VERSION
    assert versions(path) == [SCHEMA_VERSION]


def test_a_v3_round_styles_table_keeps_its_styles_as_style_prompts_columns(tmp_path):
    """v4: the loop's round_styles held each style as its YAML text; it now holds the style_prompts
    columns, read from that text, with the same version, path and lineage, in the order the IO manager writes."""
    from trace_assets.experiment import PROJECT_ROOT
    from trace_assets.loop.schemas import RoundStyleSchema
    from trace_assets.styles.library import load_style, style_from_row
    from trace_assets.tables import polars_schema

    original = load_style(PROJECT_ROOT / "styles", "normal")
    path = tmp_path / "trace_assets.duckdb"
    lineage = ["normal_r0", "normal", 0, original.version, None, None, str(original.path), "original", "as written", 0]
    with duckdb.connect(str(path)) as db:
        db.execute(
            "CREATE TABLE round_styles (round_key VARCHAR, style VARCHAR, round BIGINT, version VARCHAR, "
            "parent_key VARCHAR, parent_version VARCHAR, path VARCHAR, status VARCHAR, note VARCHAR, attempts BIGINT, "
            "reviser_model VARCHAR, reviser_prompt_hash VARCHAR, motivating_failures VARCHAR, failure_counts VARCHAR, "
            "style_yaml VARCHAR)"
        )
        db.execute(
            "INSERT INTO round_styles VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL, '[]', '{}', ?)",
            [*lineage, original.path.read_text()],
        )
        db.execute(f"CREATE TABLE {VERSION_TABLE} (version INTEGER, recorded_at TIMESTAMP DEFAULT current_timestamp)")
        db.execute(f"INSERT INTO {VERSION_TABLE} (version) VALUES (3)")
    with connect(path) as db:
        table = db.execute("SELECT * FROM round_styles").pl()
    assert table.columns == list(polars_schema(RoundStyleSchema))
    row = table.row(0, named=True)
    assert [row[k] for k in ("round_key", "version", "path", "status", "parent_key")] == [
        "normal_r0",
        original.version,
        str(original.path),
        "original",
        None,
    ]
    assert style_from_row(row).spec == original.spec
    assert versions(path) == [3, 4, 5]


def test_a_v4_database_marks_every_run_pooled_and_every_evaluation_pooled_or_untrained(tmp_path):
    """v5: checkpoints and training logs name a per-task run's task (null: every run so far was pooled);
    evaluations and accuracies say how the answering model was trained; every table, the loop's round
    tables included, ends up in the column order the IO manager writes."""
    import polars as pl

    from trace_assets.evaluation.schemas import EvalResultSchema
    from trace_assets.loop.schemas import RoundCheckpointSchema, RoundEvalSchema
    from trace_assets.reporting.schemas import AccuracySchema
    from trace_assets.tables import polars_schema
    from trace_assets.training.schemas import CheckpointSchema, TrainingLogSchema

    models = {
        "checkpoints": (CheckpointSchema, "task"),
        "training_log": (TrainingLogSchema, "task"),
        "eval_results": (EvalResultSchema, "training"),
        "accuracy": (AccuracySchema, "training"),
        "round_checkpoints": (RoundCheckpointSchema, "task"),
        "round_evals": (RoundEvalSchema, "training"),
    }
    path = tmp_path / "trace_assets.duckdb"
    with duckdb.connect(str(path)) as db:
        for table, (model, added) in models.items():
            old = {name: dtype for name, dtype in polars_schema(model).items() if name != added}  # the v4 columns
            frame = pl.DataFrame([{"dataset": "base"}, {"dataset": "mix0"}], schema=old)  # noqa: F841
            db.execute(f"CREATE TABLE {table} AS SELECT * FROM frame")
        db.execute(f"CREATE TABLE {VERSION_TABLE} (version INTEGER, recorded_at TIMESTAMP DEFAULT current_timestamp)")
        db.execute(f"INSERT INTO {VERSION_TABLE} (version) VALUES (4)")
    with connect(path) as db:
        tables = {table: db.execute(f"SELECT * FROM {table} ORDER BY dataset").pl() for table in models}
    for table, (model, _) in models.items():
        assert tables[table].columns == list(polars_schema(model)), table
        assert tables[table].height == 2
    for table in ("checkpoints", "training_log", "round_checkpoints"):
        assert tables[table]["task"].to_list() == [None, None]
    for table in ("eval_results", "accuracy", "round_evals"):
        assert tables[table]["training"].to_list() == ["none", "pooled"]
    assert versions(path) == [4, 5]
