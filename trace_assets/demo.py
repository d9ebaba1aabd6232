"""Materialise the whole graph of the current experiment, stage by stage, and print the report.

``python -m trace_assets.demo`` (what ``make demo`` runs). Each stage is one Dagster run on the
persistent instance under DAGSTER_HOME, so the runs show up in ``dagster dev`` afterwards. A
partitioned stage runs all its partitions in one run (a partition range), so one model engine
start serves every style or dataset.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import dagster as dg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from trace_assets.experiment import data_dir, load_experiment
from trace_assets.inputs import check_inputs
from trace_assets.instance import write_instance
from trace_assets.metadata import add_step_figures, step_durations, step_figures
from trace_assets.project import build_definitions


def run_stage(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    names: list[str],
    step_seconds: dict[str, float] | None = None,
    step_engines: dict[str, dict[str, float]] | None = None,
) -> float:
    """Materialise ``names`` (assets sharing one partitioning) in one run; returns wall seconds.
    ``step_seconds``, when given, gets each successful step's own seconds added under its step key;
    ``step_engines`` its vLLM engine starts, reuses and wakes and its work seconds (metadata.step_figures)."""
    graph = defs.resolve_asset_graph()
    keys = [dg.AssetKey(name) for name in names]
    present = [key for key in keys if graph.has(key)]
    if not present:
        return 0.0
    node = graph.get(present[0])
    partitions = node.partitions_def
    runs: list[dict] = [{}]
    if partitions is not None:
        partition_keys = partitions.get_partition_keys(dynamic_partitions_store=instance)
        if not partition_keys:  # e.g. no styles: a study of human solutions alone has no teacher traces
            return 0.0
        if node.backfill_policy == dg.BackfillPolicy.single_run():
            runs = [
                {"tags": {ASSET_PARTITION_RANGE_START_TAG: partition_keys[0], ASSET_PARTITION_RANGE_END_TAG: partition_keys[-1]}}
            ]
        else:
            runs = [{"partition_key": key} for key in partition_keys]
    started = time.perf_counter()
    job = defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection=set(present))
    for run in runs:
        result = job.execute_in_process(instance=instance, raise_on_error=False, **run)
        if step_seconds is not None:
            for step, seconds in step_durations(result.all_events).items():
                step_seconds[step] = step_seconds.get(step, 0.0) + seconds
        if step_engines is not None:
            add_step_figures(step_engines, step_figures(result.all_events))
        if not result.success:
            for failure in (event for event in result.all_events if event.is_step_failure):
                print(failure.event_specific_data.error.to_string(), file=sys.stderr)
            raise SystemExit(f"stage {[k.to_user_string() for k in present]} {run} failed")
    return time.perf_counter() - started


STAGES = [
    ["problems"],
    ["style_prompts"],
    ["teacher_traces", "judged_traces"],
    ["sft_examples", "dataset_exclusions", "trace_stats"],
    ["checkpoints", "training_log"],
    ["eval_results", "failure_modes", "accuracy", "report", "lineage_views"],
]


def main() -> None:
    experiment = check_inputs(load_experiment())
    folder = data_dir()
    folder.mkdir(parents=True, exist_ok=True)
    write_instance(Path(os.environ.setdefault("DAGSTER_HOME", str(folder / "dagster_home"))), overwrite=False)
    defs = build_definitions(experiment, folder)
    started = time.perf_counter()
    with dg.DagsterInstance.get() as instance:
        for number, stage in enumerate(STAGES, 1):
            print(f"[{number}/{len(STAGES)}] {', '.join(stage)} ...", flush=True)
            seconds = run_stage(defs, instance, stage)
            print(
                f"[{number}/{len(STAGES)}] materialized {', '.join(stage)} in {seconds:.0f}s "
                f"({time.perf_counter() - started:.0f}s so far)",
                flush=True,
            )
        if experiment.revision is not None:  # the closed loop: what the next_round sensor does under dagster dev
            from trace_assets.loop.sensors import run_loop

            rounds = run_loop(defs, instance, log=lambda line: print(line, flush=True))
            run_stage(defs, instance, ["rounds_report"])
            print(f"loop: ran rounds {', '.join(rounds)}; report in {folder / 'report' / 'rounds.md'}", flush=True)
    from trace_assets.summary import print_summary

    print_summary(folder)


if __name__ == "__main__":
    main()
