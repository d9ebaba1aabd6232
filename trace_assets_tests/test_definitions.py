import dagster as dg
import duckdb

from trace_assets.demo import run_stage
from trace_assets.project import build_definitions


def test_definitions_load_and_cover_the_experiment(smoke_experiment, tmp_path):
    defs = build_definitions(smoke_experiment, tmp_path)
    graph = defs.resolve_asset_graph()
    styles = graph.get(dg.AssetKey("style_prompts")).partitions_def
    assert styles.get_partition_keys() == smoke_experiment.styles
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.group_name != "default", f"{key} has no group"
        assert node.description, f"{key} has no description"
        if key.to_user_string() not in ("report", "lineage_views"):  # every table shows its pandera columns
            columns = [c.name for c in node.metadata["dagster/column_schema"].columns]
            assert columns and len(columns) == len(set(columns)), key
    # What `dagster dev` does on load: every job (including sensor and schedule targets) must resolve.
    defs.get_repository_def().load_all_definitions()


def test_problems_and_styles_materialize_into_duckdb(smoke_experiment, tmp_path, instance):
    defs = build_definitions(smoke_experiment, tmp_path)
    run_stage(defs, instance, ["problems"])
    run_stage(defs, instance, ["style_prompts"])
    with duckdb.connect(str(tmp_path / "trace_assets.duckdb"), read_only=True) as connection:
        counts = dict(connection.execute("SELECT split, count(*) FROM problems GROUP BY split").fetchall())
        styles = connection.execute("SELECT style, version FROM style_prompts ORDER BY style").fetchall()
    assert counts == {"train": smoke_experiment.problems.n_train, "test": smoke_experiment.problems.n_test}
    assert [s for s, _ in styles] == sorted(smoke_experiment.styles)
    event = instance.get_latest_materialization_event(dg.AssetKey("problems"))
    metadata = event.asset_materialization.metadata
    assert metadata["dagster/row_count"].value == counts["train"] + counts["test"]
    key = dg.AssetCheckKey(dg.AssetKey("problems"), "no_train_test_contamination")
    evaluation = instance.event_log_storage.get_latest_asset_check_execution_by_key([key])[key].evaluation
    assert evaluation.passed and evaluation.metadata["contaminated"].value == 0
    # Style data versions are the content hashes, per partition.
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("style_prompts"), asset_partitions=["gold"]), limit=1
    ).records
    assert records[0].asset_materialization.tags["dagster/data_version"] == dict(styles)["gold"]
