"""Materialize an experiment stage by stage through Dagster, resumable over several command calls.

Used by bench/gpu_smoke.py and bench/gpu_study.py on the GPU machine, where one command may run
10 minutes at most. Stages are trace_assets.demo's, then the closed loop's rounds when the
experiment has a ``revision`` section. Each stage's wall time and each step's own seconds (from its
Dagster success event) are kept in ``DATA/study_times.json`` as the stage ends: a call cut off by a
limit is run again with the same data folder and goes on from the first unfinished stage (the
generation cache and the checkpoints already saved are reused, so a stage cut mid-way loses little).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

# the steps that hold a GPU: dry-run estimates each (its rows are named after them)
GPU_STEPS = ("teacher_traces", "judged_traces", "checkpoints", "eval_results", "failure_modes")
# the loop's steps that hold a GPU, compared together with dry-run's row for every round ("round_*")
LOOP_GPU_STEPS = ("round_styles", "round_traces", "round_checkpoints", "round_evals", "round_failures")
LOOP_STAGE = "loop rounds"
TIMES_FILE = "study_times.json"
PROCESS_ID = f"{os.getpid()}-{time.time()}"  # this process: a run split over device calls takes several


def estimate(experiment) -> dict[str, float]:
    """dry-run's seconds per GPU asset (its GPU-hours; one GPU each here)."""
    from trace_assets.cli import plan

    seconds: dict[str, float] = {}
    for row in plan(experiment):
        asset = row["asset"].split("[")[0]
        seconds[asset] = seconds.get(asset, 0.0) + row["gpu_hours"] * 3600
    return seconds


def round_estimates(experiment) -> dict[str, dict[str, float]]:
    """dry-run's seconds per GPU step of each round of the closed loop (loop/rounds.py round_steps, the
    engines warm: the study's stages ran first), by round key; {} without a ``revision`` section."""
    if experiment.revision is None:
        return {}
    from trace_assets.loop.rounds import round_key, round_steps

    return {
        round_key(style, number): round_steps(experiment, style, number=number)
        for style in experiment.revision.styles
        for number in range(experiment.revision.rounds + 1)
    }


def load_times(data: Path) -> dict:
    path = data / TIMES_FILE
    return json.loads(path.read_text()) if path.exists() else {"stages": {}, "steps": {}}


def experiment_digest(path: str | Path) -> str:
    """The experiment file's digest, as study_times.json records it (the cut a data folder's times are of)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def times_for(data: Path, experiment_path: str) -> dict:
    """The times kept in ``data`` for this experiment file. Another cut of the study on the same data
    folder (more arms, a changed setting) starts afresh: every stage runs again, reusing the generation
    cache and the checkpoints already saved, and the earlier cut's times are kept under
    ``earlier_runs``, each with the estimate made before it ran."""
    times = load_times(data)
    digest = experiment_digest(experiment_path)
    if times.get("experiment_digest", digest) != digest:
        earlier = times.pop("earlier_runs", [])
        times = {"stages": {}, "steps": {}, "earlier_runs": [*earlier, times]}
        print("the experiment changed since the last call: every stage runs again (cached work is reused)", flush=True)
    times["experiment_digest"] = digest
    return times


def stage_estimate_s(stage: list[str] | str, estimated: dict[str, float]) -> float:
    """dry-run's seconds for a stage's GPU steps (the loop stage: every round's); 0 for CPU stages."""
    if isinstance(stage, str):
        return estimated.get("round_*", 0.0)
    return sum(estimated.get(step, 0.0) for step in stage)


def over_budget(stage: list[str] | str, estimated: dict[str, float], left_s: float, ran_this_call: bool) -> str | None:
    """Why a call with ``left_s`` seconds left should stop before ``stage`` rather than start it: its
    estimate does not fit, and a stage cut off by the call's time limit is lost (the fourth GPU run lost
    ~49 s of evaluation so). None when it fits, or when nothing ran in this call yet (a stage longer than
    any call must still start somewhere; the estimate counts the generation cache's teacher samples and
    verdicts as read back, not its other rows, so it may overstate)."""
    need = stage_estimate_s(stage, estimated)
    if not ran_this_call or need <= left_s:
        return None
    return f"its estimate ({need:.0f} s) is more than the {max(left_s, 0.0):.0f} s this call has left"


def run_study(
    experiment_path: str,
    data: Path,
    stop_after_s: float | None = None,
    until: str | None = None,
    budget_s: float | None = None,
) -> tuple[dict, bool]:
    """Run every stage not yet done; returns (the stage and step times so far, whether all are done).
    ``until``: stop once the stage holding that asset is done (``checkpoints``: export before the
    evaluation). The dry-run estimate is taken once, before the first stage runs, and
    kept with the times."""
    began = time.perf_counter()
    data.mkdir(parents=True, exist_ok=True)
    os.environ["TRACE_ASSETS_EXPERIMENT"] = experiment_path
    os.environ["TRACE_ASSETS_DATA_DIR"] = str(data)
    os.environ.setdefault("DAGSTER_HOME", str(data / "dagster_home"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import dagster as dg

    from trace_assets.demo import STAGES, run_stage
    from trace_assets.experiment import load_experiment
    from trace_assets.inputs import check_inputs
    from trace_assets.instance import write_instance
    from trace_assets.metadata import add_step_figures
    from trace_assets.project import build_definitions

    experiment = check_inputs(load_experiment(experiment_path))
    times = times_for(data, experiment_path)
    times.setdefault("estimate_before_run_s", estimate(experiment))
    times.setdefault("round_estimate_before_run_s", round_estimates(experiment))
    write_instance(Path(os.environ["DAGSTER_HOME"]), overwrite=False)
    defs = build_definitions(experiment, data)
    stages: list[list[str] | str] = [*STAGES, *([LOOP_STAGE] if experiment.revision is not None else [])]

    def save() -> None:
        (data / TIMES_FILE).write_text(json.dumps(times, indent=2))

    done_stages: list[list[str] | str] = []  # the stages before this one
    ran_this_call = False
    with dg.DagsterInstance.get() as instance:
        for stage in stages:
            name = stage if isinstance(stage, str) else ", ".join(stage)
            if until is not None and any(until in (names if isinstance(names, list) else [names]) for names in done_stages):
                print(f"stopping before {name}: {until} is done; run again without --until to go on", flush=True)
                save()
                return times, False
            done_stages.append(stage)
            if name in times["stages"]:
                print(f"{name}: done in an earlier call ({times['stages'][name]:.0f} s)", flush=True)
                continue
            if stop_after_s is not None and time.perf_counter() - began > stop_after_s:
                print(f"stopping before {name}: {stop_after_s:.0f} s have passed; run again to go on", flush=True)
                save()
                return times, False
            left = None if budget_s is None else budget_s - (time.perf_counter() - began)
            reason = None if left is None else over_budget(stage, times["estimate_before_run_s"], left, ran_this_call)
            if reason:
                print(f"stopping before {name}: {reason}; run again to go on", flush=True)
                save()
                return times, False
            ran_this_call = True
            print(f"{name} ...", flush=True)
            steps: dict[str, float] = {}
            engines: dict[str, dict[str, float]] = {}
            started = time.perf_counter()

            def record_engines(engines: dict[str, dict[str, float]] = engines) -> None:
                """The steps' engine counts and work seconds so far into the times, and this process among those that started
                an engine (a run split over device calls starts its engines again in each)."""
                add_step_figures(times.setdefault("engines", {}), engines)
                if any(counts.get("engine_starts", 0) for counts in engines.values()):
                    processes = times.setdefault("engine_processes", [])
                    if PROCESS_ID not in processes:
                        processes.append(PROCESS_ID)
                engines.clear()

            if isinstance(stage, str):
                from trace_assets.loop.sensors import run_loop

                def round_done(key: str, seconds: dict[str, float], again: bool) -> None:
                    # kept as each round ends: a call cut off in a later round loses only that round's; a
                    # round run again (its cut-off attempt's finished steps reused, their seconds lost) is
                    # kept apart, in the loop's total but not compared with a round's estimate
                    times.setdefault("loop_round_steps_again" if again else "loop_round_steps", {})[key] = seconds
                    record_engines()
                    save()

                rounds = run_loop(
                    defs,
                    instance,
                    log=lambda line: print(line, flush=True),
                    step_seconds=steps,
                    on_round=round_done,
                    step_engines=engines,
                )
                run_stage(defs, instance, ["rounds_report"], steps)
                times["loop_rounds"] = rounds
            else:
                run_stage(defs, instance, stage, steps, engines)
            record_engines()
            times["stages"][name] = time.perf_counter() - started
            for step, seconds in steps.items():
                times["steps"][step] = times["steps"].get(step, 0.0) + seconds
            save()
            print(f"{name}: {times['stages'][name]:.0f} s {json.dumps({k: round(v, 1) for k, v in steps.items()})}", flush=True)
    return times, True


def engine_figures(times: dict, experiment) -> dict | None:
    """The run's vLLM engines (issue 25): starts, reuses and wakes per step and in all, and starts per model
    (the distinct vLLM models of the teacher, judge, reviser and students), also per process that started
    one (a run split over device calls starts its engines again in each). None for a run that recorded none."""
    engines = times.get("engines")
    if not engines:
        return None
    roles = [experiment.teacher, experiment.judge, *experiment.students.values()]
    if experiment.revision is not None:
        roles.append(experiment.reviser())
    models = len({role.model for role in roles if getattr(role, "backend", "vllm") == "vllm"}) or 1
    from trace_assets.generation.cached import ENGINE_COUNTS

    total = {key: sum(step.get(key, 0) for step in engines.values()) for key in ENGINE_COUNTS}
    processes = max(1, len(times.get("engine_processes", [])))
    return {
        "per_step": engines,
        **total,
        "models": models,
        "processes": processes,
        "starts_per_model": round(total["engine_starts"] / models, 2),
        "starts_per_model_per_process": round(total["engine_starts"] / models / processes, 2),
    }


def work_figures(times: dict) -> dict | None:
    """The share of time the GPU steps spent on the work itself (issue 25): vLLM generating and the
    trainers training (metadata.WORK_SECONDS, recorded per step from its metadata beside the engine
    counts), against engine starts, compiles, loading and Python; of the GPU steps' seconds and of the
    run's wall time (its CPU stages and Dagster's runs too). None for a run that recorded none."""
    from trace_assets.metadata import WORK_SECONDS

    recorded = times.get("engines") or {}
    steps = [step for step in (*GPU_STEPS, *LOOP_GPU_STEPS) if times["steps"].get(step)]  # the loop's rounds too
    work = {step: sum(recorded.get(step, {}).get(key, 0.0) for key in WORK_SECONDS) for step in steps}
    if not any(work.values()):
        return None
    gpu = sum(times["steps"][step] for step in steps)
    wall = sum(times["stages"].values())
    return {
        "per_step": {
            step: {
                "work_s": round(work[step], 1),
                "step_s": round(times["steps"][step], 1),
                "share": round(work[step] / times["steps"][step], 3),
            }
            for step in steps
        },
        "work_s": round(sum(work.values()), 1),
        "share_of_gpu_steps": round(sum(work.values()) / gpu, 3),
        "share_of_wall": round(sum(work.values()) / wall, 3) if wall else None,
    }


def busy_share(samples: Path) -> dict | None:
    """The GPU's busy share over a run from nvidia-smi's samples (bench/gpu_study_call.sh's gpu_util.csv:
    time, utilization.gpu in %, memory used): the mean utilisation (the share of each second a kernel ran)
    and the share of seconds with any kernel. None without the file or samples."""
    if not samples.exists():
        return None
    values = []
    for line in samples.read_text().splitlines():
        parts = [part.strip() for part in line.split(",")]
        if len(parts) >= 2 and parts[1].replace(".", "", 1).isdigit():
            values.append(float(parts[1]))
    if not values:
        return None
    return {
        "study_gpu_busy_share": round(sum(values) / len(values) / 100, 3),
        "seconds_with_a_kernel": round(sum(v > 0 for v in values) / len(values), 3),
        "samples": len(values),
    }


def time_figures(times: dict, experiment_path: str, root: Path) -> dict:
    """Per-step GPU seconds against dry-run's estimate made before the run, per step and in total."""
    wall = sum(times["stages"].values())
    gpu_steps = {step: round(times["steps"].get(step, 0.0), 1) for step in GPU_STEPS}
    estimated = times["estimate_before_run_s"]
    rounds = times.get("loop_round_steps", {})
    again = times.get("loop_round_steps_again", {})
    if "round_*" in estimated:  # the closed loop: its rounds' GPU steps against dry-run's estimate of every round
        # each finished round's, kept as it ended (the loop stage's own total is lost when a call is cut off in
        # it); a round's cut-off attempt is lost, so a loop cut off mid-round counts less than it spent
        kept = [*rounds.values(), *again.values()]
        measured = [seconds for steps in kept for step, seconds in steps.items() if step in LOOP_GPU_STEPS]
        gpu_steps["round_*"] = round(sum(measured) if kept else sum(times["steps"].get(step, 0.0) for step in LOOP_GPU_STEPS), 1)
    gpu_seconds = sum(gpu_steps.values())
    estimate_s = sum(estimated.values())
    per_step = {
        step: {
            "measured_s": gpu_steps[step],
            "estimate_s": round(estimated.get(step, 0.0), 1),
            "estimate_over_measured": round(estimated.get(step, 0.0) / gpu_steps[step], 3) if gpu_steps[step] else None,
        }
        for step in gpu_steps
    }
    path = Path(experiment_path)
    inside = path.exists() and path.resolve().is_relative_to(root)
    return {
        "experiment": str(path.resolve().relative_to(root)) if inside else experiment_path,
        "wall_s": round(wall, 1),
        "stage_wall_s": {name: round(seconds, 1) for name, seconds in times["stages"].items()},
        "step_s": {step: round(seconds, 1) for step, seconds in times["steps"].items()},
        "gpu_step_s": gpu_steps,
        "gpu_hours": round(gpu_seconds / 3600, 4),
        "dry_run_estimate_s": {asset: round(seconds, 1) for asset, seconds in estimated.items()},
        "dry_run_gpu_hours": round(estimate_s / 3600, 4),
        "per_step_vs_estimate": per_step,
        "rounds_vs_estimate": round_figures(rounds, times.get("round_estimate_before_run_s", {})),
        "rounds_run_again": sorted(again),  # cut off by a call's limit, then finished: not compared
        # the estimate covers the GPU steps; the rest of the wall time (problems, prompts, datasets,
        # report, Dagster's own run overhead) is CPU work it does not claim
        "estimate_over_gpu_steps": round(estimate_s / gpu_seconds, 3) if gpu_seconds else None,
        "estimate_over_wall": round(estimate_s / wall, 3) if wall else None,
        "within_30_percent": bool(gpu_seconds) and abs(estimate_s / gpu_seconds - 1) <= 0.30,
        "every_step_within_30_percent": all(
            figure["estimate_over_measured"] is not None and abs(figure["estimate_over_measured"] - 1) <= 0.30
            for figure in per_step.values()
            if figure["measured_s"] or figure["estimate_s"]
        ),
        "measured_at": time.strftime("%Y-%m-%d"),
    }


def round_figures(rounds: dict[str, dict[str, float]], estimated: dict[str, dict[str, float]]) -> list[dict]:
    """Each finished round's GPU steps, measured and estimated before the run, step by step."""
    figures = []
    for key, steps in rounds.items():
        guess = estimated.get(key, {})
        measured = {step: round(steps.get(step, 0.0), 1) for step in LOOP_GPU_STEPS}
        total, total_guess = sum(measured.values()), sum(guess.get(step, 0.0) for step in LOOP_GPU_STEPS)
        figures.append(
            {
                "round_key": key,
                "measured_s": measured,
                "estimate_s": {step: round(guess.get(step, 0.0), 1) for step in LOOP_GPU_STEPS} if guess else None,
                "estimate_over_measured": round(total_guess / total, 3) if guess and total else None,
            }
        )
    return figures
