"""The ``next_round`` sensor: starts each chain's round 0, then the next round whenever one finishes,
until the stop rule says otherwise; and ``run_loop``, which plays the sensor's part in one process
(the demo and the tests)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import dagster as dg
import polars as pl

from trace_assets.experiment import RevisionConfig
from trace_assets.loop.assets import ROUND_CHAIN, round_partitions, round_rows
from trace_assets.loop.rounds import (
    ROUND_PARTITIONS,
    RoundOutcome,
    improved,
    parse_round_key,
    round_change,
    round_key,
    stop_reason,
)
from trace_assets.metadata import add_step_figures, step_durations, step_figures

ROUND_JOB = "style_round"


def round_job() -> dg.UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        ROUND_JOB, selection=ROUND_CHAIN, partitions_def=round_partitions(), description="One round of a revised style."
    )


def _finished(instance: dg.DagsterInstance, key: str) -> bool:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("round_failures"), asset_partitions=[key]), limit=1
    ).records
    return bool(records)


def chain_outcomes(database: Path, style: str, last: int) -> list[RoundOutcome]:
    """Round 0..last of a chain: whether each revised round gained distinguishably on validation."""
    outcomes = [RoundOutcome(0, None)]
    for number in range(1, last + 1):
        key, parent = round_key(style, number), round_key(style, number - 1)
        evals = (
            pl.concat(
                [frame for frame in (round_rows(database, "round_evals", k) for k in (key, parent)) if frame.height],
                how="vertical",
            )
            if any(round_rows(database, "round_evals", k).height for k in (key, parent))
            else pl.DataFrame()
        )
        change = round_change(evals.filter(pl.col("split") == "validation"), key, parent) if evals.height else pl.DataFrame()
        outcomes.append(RoundOutcome(number, improved(change)))
    return outcomes


def plan_next_rounds(
    instance: dg.DagsterInstance, database: Path, revision: RevisionConfig, hours_per_round: dict[str, float]
) -> tuple[list[str], list[str]]:
    """Round keys to start now, and one line per chain on why it waits or stopped."""
    existing = set(instance.get_dynamic_partitions(ROUND_PARTITIONS))
    start, notes = [], []
    for style in revision.styles:
        rounds = sorted(parse_round_key(k)[1] for k in existing if parse_round_key(k)[0] == style)
        if not rounds:
            start.append(round_key(style, 0))
            continue
        last = rounds[-1]
        if not _finished(instance, round_key(style, last)):
            notes.append(f"{style}: round {last} is running or failed")
            continue
        reason = stop_reason(chain_outcomes(database, style, last), revision, hours_per_round[style])
        if reason is not None:
            notes.append(f"{style}: stopped after round {last}: {reason}")
            continue
        start.append(round_key(style, last + 1))
    return start, notes


def build_next_round_sensor(
    revision: RevisionConfig, database: Path, hours_per_round: Callable[[], dict[str, float]]
) -> dg.SensorDefinition:
    """``hours_per_round``: each chain's estimated GPU hours a round, asked for on a tick (the stop rule's budget)."""
    job = round_job()

    @dg.sensor(
        name="next_round",
        job=job,
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Starts round 0 of each revised style once problems exist, then round N+1 when round N's failures "
        "are in, until the experiment's rounds, its stop rule or its GPU-hour budget say stop.",
    )
    def next_round(context: dg.SensorEvaluationContext):
        if context.instance.get_latest_materialization_event(dg.AssetKey("problems")) is None:
            return dg.SkipReason("problems not materialized yet")
        start, notes = plan_next_rounds(context.instance, database, revision, hours_per_round())
        for note in notes:
            context.log.info(note)
        if not start:
            return dg.SkipReason("; ".join(notes) or "nothing to start")
        return dg.SensorResult(
            run_requests=[dg.RunRequest(run_key=key, partition_key=key, tags={"trace_assets/round": key}) for key in start],
            dynamic_partitions_requests=[round_partitions().build_add_request(start)],
        )

    return next_round


def unfinished_rounds(instance: dg.DagsterInstance) -> list[str]:
    """Rounds started (added as partitions) whose ``round_failures`` never materialized, in order."""
    keys = instance.get_dynamic_partitions(ROUND_PARTITIONS)
    return sorted((key for key in keys if not _finished(instance, key)), key=parse_round_key)


def run_loop(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    log=print,
    max_ticks: int = 100,
    step_seconds: dict[str, float] | None = None,
    on_round: Callable[[str, dict[str, float], bool], None] | None = None,
    step_engines: dict[str, dict[str, float]] | None = None,
) -> list[str]:
    """Tick ``next_round`` and run what it asks for, in this process, until it has nothing to start;
    returns the round keys run, in order. Nothing else runs rounds here, so a round started but not
    finished was cut off in an earlier call (a device time limit, a kill) and is run again first; the
    sensor itself would wait on it as "running or failed" and the chain would end there.
    ``step_seconds``, when given, gets each round step's own seconds added under its asset's name;
    ``on_round``, when given, is called with each round's key, its steps' seconds and whether it was run
    again (its earlier attempt's finished steps reused) once it succeeds (bench/study_run.py keeps them,
    so a call cut off in a later round loses only that round's); ``step_engines`` gets each round step's
    vLLM engine starts, reuses and wakes and its work seconds (metadata.step_figures)."""
    sensor = defs.resolve_sensor_def("next_round")
    job = defs.resolve_job_def(ROUND_JOB)
    ran = []
    for key in unfinished_rounds(instance):
        log(f"loop: running round {key} again (started in an earlier call, not finished)")
        _run_round(job, instance, key, step_seconds, on_round, again=True, step_engines=step_engines)
        ran.append(key)
    for _ in range(max_ticks):
        result = sensor(dg.build_sensor_context(instance=instance, definitions=defs))
        if not isinstance(result, dg.SensorResult) or not result.run_requests:
            log(f"loop: {getattr(result, 'skip_message', None) or 'done'}")
            return ran
        for request in result.dynamic_partitions_requests or []:
            instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        for request in result.run_requests:
            log(f"loop: running round {request.partition_key}")
            _run_round(job, instance, request.partition_key, step_seconds, on_round, step_engines=step_engines)
            ran.append(request.partition_key)
    raise RuntimeError(f"the loop did not settle in {max_ticks} sensor ticks")


def _run_round(
    job,
    instance: dg.DagsterInstance,
    key: str,
    step_seconds: dict[str, float] | None,
    on_round: Callable[[str, dict[str, float], bool], None] | None = None,
    again: bool = False,
    step_engines: dict[str, dict[str, float]] | None = None,
) -> None:
    """One round's chain of assets in this process; a RuntimeError with the failed steps' errors."""

    outcome = job.execute_in_process(instance=instance, partition_key=key, raise_on_error=False)
    durations = step_durations(outcome.all_events)
    if step_engines is not None:
        add_step_figures(step_engines, step_figures(outcome.all_events))
    if step_seconds is not None:
        for step, seconds in durations.items():
            step_seconds[step] = step_seconds.get(step, 0.0) + seconds
    if not outcome.success:
        failures = [e.event_specific_data.error.to_string() for e in outcome.all_events if e.is_step_failure]
        raise RuntimeError(f"round {key} failed:\n" + "\n".join(failures))
    if on_round is not None:
        on_round(key, durations, again)
