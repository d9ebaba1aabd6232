"""The asset graph's shape is pinned: a change to keys, partitions, dependencies, checks, groups,
kinds or GPU needs shows up here as a reviewed diff of ``snapshots/asset_graph.json``.

Regenerate after an intended change: ``UPDATE_SNAPSHOTS=1 pytest trace_assets_tests/test_graph_shape.py``.
"""

import json
import os
from pathlib import Path

import dagster as dg

from trace_assets.project import build_definitions

SNAPSHOT = Path(__file__).parent / "snapshots" / "asset_graph.json"


def partitions_shape(partitions: dg.PartitionsDefinition | None):
    if partitions is None:
        return None
    if isinstance(partitions, dg.MultiPartitionsDefinition):
        return {dim.name: dim.partitions_def.get_partition_keys() for dim in partitions.partitions_defs}
    return partitions.get_partition_keys()


def graph_shape(defs: dg.Definitions) -> dict:
    graph = defs.resolve_asset_graph()
    shape = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        shape[key.to_user_string()] = {
            "group": node.group_name,
            "kinds": sorted(node.kinds),
            "partitions": partitions_shape(node.partitions_def),
            "deps": sorted(parent.to_user_string() for parent in node.parent_keys),
            "checks": sorted(check.name for check in node.check_keys),
            "gpus": node.assets_def.op.tags.get("trace_assets/gpus"),
            "single_run": node.backfill_policy == dg.BackfillPolicy.single_run(),
            "code_version": node.code_version,
        }
    return shape


def test_asset_graph_matches_snapshot(smoke_experiment, tmp_path):
    shape = graph_shape(build_definitions(smoke_experiment, tmp_path))
    if os.environ.get("UPDATE_SNAPSHOTS"):
        SNAPSHOT.parent.mkdir(exist_ok=True)
        SNAPSHOT.write_text(json.dumps(shape, indent=2) + "\n")
    assert shape == json.loads(SNAPSHOT.read_text())
