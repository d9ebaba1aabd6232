"""The study on one GPU, end to end, against dry-run's estimate (issue 12, item 6).

    python bench/gpu_smoke.py [--experiment experiments/gpu_smoke.yaml] [--data DIR] [--output bench/results/gpu.json]

Materializes every asset of the experiment through Dagster, stage by stage as ``make demo`` does
(trace_assets/demo.py: one run per stage, a partitioned stage as one partition range, so one engine
serves all its partitions), with vLLM and TRL on the GPU. Records each step's seconds as Dagster
timed it, the whole wall time, and the GPU-hours (the seconds of the steps that hold a GPU), and
compares them with ``trace-assets dry-run``'s estimate for the same experiment.

Stage times are kept in DIR/gpu_smoke_times.json as each stage ends: a command cut off by a time
limit is run again with the same DIR and goes on from the first unfinished stage (the cache and the
checkpoints already saved are reused), and the figures add up over the calls.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# the steps that hold a GPU: dry-run estimates each (its rows are named after them)
GPU_STEPS = ("teacher_traces", "judged_traces", "checkpoints", "eval_results", "failure_modes")


def estimate(experiment) -> dict[str, float]:
    """dry-run's seconds per GPU asset (its GPU-hours, one GPU each here)."""
    from trace_assets.cli import plan

    seconds: dict[str, float] = {}
    for row in plan(experiment):
        asset = row["asset"].split("[")[0]
        seconds[asset] = seconds.get(asset, 0.0) + row["gpu_hours"] * 3600
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--experiment", default=str(ROOT / "experiments" / "gpu_smoke.yaml"))
    parser.add_argument("--data", default="/tmp/gpu_smoke")
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "gpu.json"))
    parser.add_argument(
        "--stop-after-s",
        type=float,
        default=None,
        help="start no further stage after this many seconds (a command limit); run again to go on",
    )
    args = parser.parse_args()
    began = time.perf_counter()
    data = Path(args.data)
    data.mkdir(parents=True, exist_ok=True)
    os.environ["TRACE_ASSETS_EXPERIMENT"] = args.experiment
    os.environ["TRACE_ASSETS_DATA_DIR"] = str(data)
    os.environ.setdefault("DAGSTER_HOME", str(data / "dagster_home"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import dagster as dg

    from trace_assets.demo import STAGES, run_stage
    from trace_assets.experiment import load_experiment
    from trace_assets.inputs import check_inputs
    from trace_assets.instance import write_instance
    from trace_assets.project import build_definitions

    experiment = check_inputs(load_experiment(args.experiment))
    estimated = estimate(experiment)
    times_path = data / "gpu_smoke_times.json"
    times = json.loads(times_path.read_text()) if times_path.exists() else {"stages": {}, "steps": {}}
    write_instance(Path(os.environ["DAGSTER_HOME"]), overwrite=False)
    defs = build_definitions(experiment, data)
    with dg.DagsterInstance.get() as instance:
        for stage in STAGES:
            name = ", ".join(stage)
            if name in times["stages"]:
                print(f"{name}: done in an earlier call ({times['stages'][name]:.0f} s)", flush=True)
                continue
            if args.stop_after_s is not None and time.perf_counter() - began > args.stop_after_s:
                print(f"stopping before {name}: {args.stop_after_s:.0f} s have passed; run again to go on", flush=True)
                return
            print(f"{name} ...", flush=True)
            steps: dict[str, float] = {}
            seconds = run_stage(defs, instance, stage, steps)
            times["stages"][name] = seconds
            times["steps"].update(steps)
            times_path.write_text(json.dumps(times, indent=2))
            print(f"{name}: {seconds:.0f} s {json.dumps({k: round(v, 1) for k, v in steps.items()})}", flush=True)

    wall = sum(times["stages"].values())
    gpu_steps = {step: round(times["steps"].get(step, 0.0), 1) for step in GPU_STEPS}
    gpu_seconds = sum(gpu_steps.values())
    estimate_s = sum(estimated.values())
    figures = {
        "experiment": str(Path(args.experiment).relative_to(ROOT))
        if Path(args.experiment).is_relative_to(ROOT)
        else args.experiment,
        "wall_s": round(wall, 1),
        "stage_wall_s": {name: round(seconds, 1) for name, seconds in times["stages"].items()},
        "step_s": {step: round(seconds, 1) for step, seconds in times["steps"].items()},
        "gpu_step_s": gpu_steps,
        "gpu_hours": round(gpu_seconds / 3600, 4),
        "dry_run_estimate_s": {asset: round(seconds, 1) for asset, seconds in estimated.items()},
        "dry_run_gpu_hours": round(estimate_s / 3600, 4),
        # the estimate covers the GPU steps; the rest of the wall time (problems, prompts, datasets,
        # report, Dagster's own run overhead) is CPU work it does not claim
        "estimate_over_gpu_steps": round(estimate_s / gpu_seconds, 3) if gpu_seconds else None,
        "estimate_over_wall": round(estimate_s / wall, 3) if wall else None,
        "within_30_percent": bool(gpu_seconds) and abs(estimate_s / gpu_seconds - 1) <= 0.30,
        "measured_at": time.strftime("%Y-%m-%d"),
    }
    from bench.gpu import device_name, merge_results

    merge_results(
        Path(args.output),
        "gpu_smoke",
        figures,
        {
            "gpu_smoke_wall_s": figures["wall_s"],
            "gpu_smoke_dry_run_estimate_s": round(estimate_s, 1),
            "gpu_smoke_device": device_name(),
        },
    )


if __name__ == "__main__":
    main()
