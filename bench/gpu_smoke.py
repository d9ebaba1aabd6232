"""The study on one GPU, end to end, against dry-run's estimate (issue 12, item 6).

    python bench/gpu_smoke.py [--experiment experiments/gpu_smoke.yaml] [--data DIR] [--output bench/results/gpu.json]

Materializes every asset of the experiment through Dagster, stage by stage as ``make demo`` does
(trace_assets/demo.py: one run per stage, a partitioned stage as one partition range, so one engine
serves all its partitions), with vLLM and TRL on the GPU. Records each step's seconds as Dagster
timed it, the whole wall time, and the GPU-hours (the seconds of the steps that hold a GPU), and
compares them with ``trace-assets dry-run``'s estimate for the same experiment.

Stages run through bench/study_run.py: their times are kept in DIR as each stage ends, so a command
cut off by a time limit is run again with the same DIR and goes on from the first unfinished stage.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


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
    from bench.gpu import device_name, merge_results
    from bench.study_run import run_study, time_figures

    times, done = run_study(args.experiment, Path(args.data), args.stop_after_s)
    if not done:
        return
    figures = time_figures(times, args.experiment, ROOT)
    estimate_s = sum(times["estimate_before_run_s"].values())

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
