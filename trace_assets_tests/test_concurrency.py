"""Concurrent runs share one DuckDB file, which admits one writer process at a time."""

import subprocess
import threading
import time
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest

from trace_assets.experiment import PROJECT_ROOT, load_experiment
from trace_assets.storage import TransactionalDuckDBPolarsIOManager, connect
from trace_assets_tests.conftest import DAGSTER_CLI, project_env, write_experiment

PARTS = dg.StaticPartitionsDefinition(["a", "b"])


def _table_asset(frame: pl.DataFrame) -> dg.AssetsDefinition:
    @dg.asset(name="things", partitions_def=PARTS, metadata={"partition_expr": "part"})
    def things(context: dg.AssetExecutionContext) -> pl.DataFrame:
        return frame.with_columns(part=pl.lit(context.partition_key))

    return things


def _materialize(asset, database: Path, partition: str, instance) -> dg.ExecuteInProcessResult:
    io_manager = TransactionalDuckDBPolarsIOManager(database=str(database), schema="main")
    return dg.materialize(
        [asset], partition_key=partition, instance=instance, resources={"io_manager": io_manager}, raise_on_error=False
    )


def test_a_failed_write_keeps_the_rows_already_there(tmp_path, instance):
    database = tmp_path / "db.duckdb"
    assert _materialize(_table_asset(pl.DataFrame({"x": [1, 2, 3]})), database, "a", instance).success
    assert _materialize(_table_asset(pl.DataFrame({"x": [7]})), database, "b", instance).success

    # A code change adds a column: the insert fails after the partition's rows were deleted.
    changed = _table_asset(pl.DataFrame({"x": [4], "extra": ["new"]}))
    result = _materialize(changed, database, "a", instance)
    assert not result.success
    error = result.get_step_failure_events()[0].event_specific_data.error
    assert "main.things does not match this output" in str(error.cause.message if error.cause else error.message)
    with duckdb.connect(str(database), read_only=True) as db:
        rows = sorted(db.execute("SELECT part, x FROM things").fetchall())
    assert rows == [("a", 1), ("a", 2), ("a", 3), ("b", 7)]  # the delete was rolled back


def _hold_the_file(database: Path, seconds: float, held: threading.Event) -> None:
    with connect(database) as db:
        db.execute("CREATE TABLE IF NOT EXISTS held (since TIMESTAMP)")
        held.set()
        time.sleep(seconds)


@pytest.mark.slow
def test_three_runs_at_once_while_the_file_is_locked(tmp_path):
    experiment_path = write_experiment(tmp_path, "unused-model")
    experiment = load_experiment(experiment_path)
    data, home = tmp_path / "data", tmp_path / "dagster_home"
    data.mkdir()
    home.mkdir()
    database = data / "trace_assets.duckdb"
    env = project_env(experiment_path, data, home)
    runs = [
        ["--select", "problems"],
        ["--select", "style_prompts", "--partition", "normal"],
        ["--select", "style_prompts", "--partition", "titanium"],
    ]

    # The instance exists before runs share it, as under `dagster dev` (three first-time inits of one
    # SQLite home at once race on its schema migrations).
    dg.DagsterInstance.from_config(str(home)).dispose()
    # Another process holds the only write lock while the three runs start: each must wait its turn.
    held = threading.Event()
    holder = threading.Thread(target=_hold_the_file, args=(database, 8.0, held))
    holder.start()
    assert held.wait(30)
    processes = [
        subprocess.Popen(
            [DAGSTER_CLI, "asset", "materialize", "-m", "trace_assets.definitions", *args],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for args in runs
    ]
    outputs = [process.communicate(timeout=300)[0] for process in processes]
    holder.join()
    for args, process, output in zip(runs, processes, outputs):
        assert process.returncode == 0, f"{args} failed:\n{output[-3000:]}"

    with duckdb.connect(str(database), read_only=True) as db:
        problems = db.execute("SELECT count(*), count(DISTINCT problem_id) FROM problems").fetchone()
        styles = db.execute("SELECT style, count(*) FROM style_prompts GROUP BY style ORDER BY style").fetchall()
    total = experiment.problems.n_train + experiment.problems.n_test
    assert problems == (total, total)
    assert styles == [("normal", 1), ("titanium", 1)]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        statuses = [run.status for run in instance.get_runs()]
    assert statuses == [dg.DagsterRunStatus.SUCCESS] * 3


def test_an_empty_output_creates_its_table_and_clears_its_partition(tmp_path):
    """dagster-duckdb-polars skips empty frames, so a table empty the first time never existed and
    every reader failed; here it exists with the frame's columns, and an empty re-run of a partition
    still removes that partition's old rows."""
    rows = {"a": [], "b": [1]}

    @dg.asset(partitions_def=dg.StaticPartitionsDefinition(["a", "b"]), metadata={"partition_expr": "p"})
    def table(context: dg.AssetExecutionContext) -> pl.DataFrame:
        values = rows[context.partition_key]
        return pl.DataFrame({"p": [context.partition_key] * len(values), "x": values}, schema={"p": pl.Utf8, "x": pl.Int64})

    database = tmp_path / "db.duckdb"
    resources = {"io_manager": TransactionalDuckDBPolarsIOManager(database=str(database), schema="main")}
    assert dg.materialize([table], resources=resources, partition_key="a").success
    with duckdb.connect(str(database)) as db:
        assert db.execute("DESCRIBE main.table").fetchall()[1][:2] == ("x", "BIGINT")
        assert db.execute("SELECT count(*) FROM main.table").fetchone() == (0,)
    assert dg.materialize([table], resources=resources, partition_key="b").success
    rows["b"] = []
    assert dg.materialize([table], resources=resources, partition_key="b").success
    with duckdb.connect(str(database)) as db:
        assert db.execute("SELECT count(*) FROM main.table").fetchone() == (0,)
