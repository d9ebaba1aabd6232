"""Fault soak: the smoke experiment with its runs SIGKILLed at random moments, against an uninterrupted run.

    .venv/bin/python bench/soak.py --kills 24 --seed 0 --work /tmp/trace_assets_soak

1. The reference: every stage of the experiment materialized once, uninterrupted, in
   ``WORK/reference`` (its own data folder and DAGSTER_HOME); each stage's wall time and when the
   step of its first asset started are recorded (``--reuse-reference`` keeps an earlier one).
2. The soak, in ``WORK/soak``, with ``dagster-daemon`` running on its instance (run monitoring, as
   under ``dagster dev``): the same stages, each a Dagster run in a child process of its own process
   group. In the stages that generate (teacher_traces), judge (judged_traces), train (checkpoints),
   evaluate (eval_results) and judge failures (failure_modes, accuracy, report), the child's whole
   process group, vLLM engine processes included, is SIGKILLed at a seeded random moment between
   that step starting (it holds the ``gpu`` pool's slot then) and when it should end (the
   reference's time, less what earlier attempts left cached), then the stage is executed again,
   until it runs through. ``--kills`` kills are spread over those stages; a stage that finishes
   before its kill passes its remaining kills on to the next one. A killed run holds the ``gpu``
   pool's slot until run monitoring marks it failed, so a re-execution also waits on that.
3. Every table of both DuckDB files is compared (scripts/table_digests.py, provenance columns left
   out): rows of the reference missing from the soak (lost), rows the soak has more often than the
   reference (duplicated; a key, where the table has one, counted once), rows that differ, and
   whether every table, accuracy included, is identical. Also: how many killed runs run monitoring
   marked failed, and how long after the kill.

Writes ``bench/results/soak.json`` (``--output``) and prints progress lines as it goes. Exits 1
if anything was lost, duplicated or different.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.table_digests import PROVENANCE, asset_tables, table_rows  # noqa: E402

# The demo's stages (trace_assets/demo.py), with generation and judging in runs of their own.
STAGES: list[list[str]] = [
    ["problems"],
    ["style_prompts"],
    ["teacher_traces"],
    ["judged_traces"],
    ["sft_examples", "dataset_exclusions", "trace_stats"],
    ["checkpoints", "training_log"],
    ["eval_results"],
    ["failure_modes", "accuracy", "report", "lineage_views"],
]
# Stages whose runs are killed, by what they are doing.
KILLED = {"teacher_traces": "generation", "judged_traces": "judging", "checkpoints": "SFT", "eval_results": "evaluation"}
KILLED["failure_modes"] = "failure judging"
# A table's natural key, where it has one: a key seen twice is a duplicated row even if the copies differ.
KEYS = {
    "problems": ["problem_id"],
    "style_prompts": ["style"],
    "teacher_traces": ["trace_id"],
    "judged_traces": ["trace_id"],
    "generation_cache": ["request_hash", "sample_index"],
    "checkpoints": ["dataset", "student", "seed"],
    "eval_results": ["dataset", "student", "seed", "problem_id"],
    "accuracy": ["dataset", "student"],
}
# The share of a stage's time an attempt spends again after a kill (process and engine start-up, model
# loading) before it makes new progress: the next attempt's kill is drawn within the time left.
RESTART_SHARE = 0.3
RUN_ID = re.compile(r"\b([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\b")
STEP_START = "STEP_START"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def child(stage: int) -> None:
    """One stage as one Dagster run, the way ``python -m trace_assets.demo`` runs it."""
    import warnings

    warnings.filterwarnings("ignore", message=".* is currently in beta")
    import dagster as dg

    from trace_assets.demo import run_stage
    from trace_assets.experiment import data_dir, load_experiment
    from trace_assets.inputs import check_inputs
    from trace_assets.instance import write_instance
    from trace_assets.project import build_definitions
    from trace_assets.resources import GenerationResource

    write_instance(Path(os.environ["DAGSTER_HOME"]), overwrite=False)
    defs = build_definitions(check_inputs(load_experiment()), data_dir())
    generation = defs.resources["generation"]
    chunked = GenerationResource(gpu=generation.gpu, data=generation.data, chunk_size=int(os.environ["SOAK_CHUNK_SIZE"]))
    defs = dg.Definitions(
        assets=defs.assets,
        resources={**defs.resources, "generation": chunked},
        sensors=defs.sensors,
        schedules=defs.schedules,
        executor=defs.executor,
    )
    with dg.DagsterInstance.get() as instance:
        run_stage(defs, instance, STAGES[stage])


def environment(folder: Path, experiment: str, chunk_size: int) -> dict[str, str]:
    return {
        "SOAK_CHUNK_SIZE": str(chunk_size),
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in [str(ROOT), os.environ.get("PYTHONPATH", "")] if p),
        "TRACE_ASSETS_DATA_DIR": str(folder),
        "TRACE_ASSETS_EXPERIMENT": experiment,
        "DAGSTER_HOME": str(folder / "dagster_home"),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }


class Attempt:
    """One child process running one stage; its output goes to ``log_path``, and the moment the step of
    the stage's first asset starts (it has its ``gpu`` pool slot then) and the run id it logs are noted
    as they appear."""

    def __init__(self, stage: int, env: dict[str, str], log_path: Path):
        self.step_start = f" - {STAGES[stage][0]} - {STEP_START} - "  # the stage's own step, not a side asset's
        self.started = time.monotonic()
        self.step_started: float | None = None
        self.run_ids: list[str] = []
        self.step_event = threading.Event()
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--child", str(stage)],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group: the kill takes vLLM's processes with it
        )
        self.reader = threading.Thread(target=self._read, args=(log_path,), daemon=True)
        self.reader.start()

    def _read(self, log_path: Path) -> None:
        assert self.process.stdout is not None
        with log_path.open("a") as handle:
            for line in self.process.stdout:
                handle.write(line)
                if self.step_start in line and self.step_started is None:
                    self.step_started = time.monotonic()
                    self.step_event.set()
                match = RUN_ID.search(line)
                if match and match.group(1) not in self.run_ids:
                    self.run_ids.append(match.group(1))

    def wait(self, timeout: float | None = None) -> int | None:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        """SIGKILL the whole process group and wait until none of it is left (zombies aside)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        deadline = time.monotonic() + 30
        while group_alive(self.process.pid):
            if time.monotonic() > deadline:
                raise RuntimeError(f"process group {self.process.pid} survived SIGKILL for 30 s")
            time.sleep(0.1)
        self.reader.join(5)


def group_alive(group: int) -> bool:
    import psutil

    for process in psutil.process_iter(["status"]):
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if os.getpgid(process.pid) == group and process.info["status"] != psutil.STATUS_ZOMBIE:
                return True
    return False


def failed(attempt: Attempt, log_path: Path, what: str) -> SystemExit:
    tail = "".join(log_path.read_text().splitlines(keepends=True)[-40:])
    return SystemExit(f"{what} failed (exit {attempt.process.returncode}); last lines of {log_path}:\n{tail}")


def run_reference(folder: Path, experiment: str, chunk_size: int) -> dict:
    """Every stage once, uninterrupted; per stage: seconds until its first asset's step started, and in all."""
    env = environment(folder, experiment, chunk_size)
    timings = {}
    started = time.monotonic()
    for index, stage in enumerate(STAGES):
        log_path = folder / f"stage{index}-{stage[0]}.log"
        attempt = Attempt(index, env, log_path)
        if attempt.wait() != 0:
            raise failed(attempt, log_path, f"reference stage {stage[0]}")
        total = time.monotonic() - attempt.started
        to_step = (attempt.step_started or attempt.started) - attempt.started
        timings[stage[0]] = {"total_s": round(total, 1), "to_first_step_s": round(to_step, 1)}
        log(f"reference: {', '.join(stage)} in {total:.0f} s (its step started after {to_step:.0f} s)")
    result = {"stages": timings, "wall_s": round(time.monotonic() - started, 1), "chunk_size": chunk_size}
    (folder / "timings.json").write_text(json.dumps(result, indent=2))
    return result


def plan_kills(kills: int, rng: random.Random) -> dict[str, int]:
    """``kills`` spread evenly over the killed stages, the remainder to stages drawn at random."""
    stages = list(KILLED)
    plan = {stage: kills // len(stages) for stage in stages}
    for stage in rng.sample(stages, kills % len(stages)):
        plan[stage] += 1
    return plan


def start_daemon(folder: Path, env: dict[str, str]) -> subprocess.Popen:
    """``dagster-daemon`` on the soak's instance, with no code locations: run monitoring only."""
    workspace = folder / "monitoring_workspace.yaml"
    workspace.write_text("load_from: []\n")
    return subprocess.Popen(
        [str(Path(sys.executable).with_name("dagster-daemon")), "run", "-w", str(workspace)],
        env=env,
        cwd=ROOT,
        stdout=(folder / "daemon.log").open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def run_soak(folder: Path, experiment: str, chunk_size: int, reference: dict, kills: int, rng: random.Random) -> dict:
    env = environment(folder, experiment, chunk_size)
    from trace_assets.instance import write_instance

    write_instance(folder / "dagster_home")
    plan = plan_kills(kills, rng)
    log(f"soak: kills planned per stage: {plan}")
    carried = 0  # kills a stage did not get because it finished first go to the next killed stage
    record: list[dict] = []
    started = time.monotonic()
    daemon = start_daemon(folder, env)
    try:
        for index, stage in enumerate(STAGES):
            name = stage[0]
            wanted = plan.get(name, 0) + (carried if name in KILLED else 0)
            carried = 0 if name in KILLED else carried
            killed = 0
            timing = reference["stages"][name]
            work_s = max(1.0, timing["total_s"] - timing["to_first_step_s"])
            expected_s = work_s  # how long this attempt's steps should take, shrinking as kills leave work cached
            log_path = folder / f"stage{index}-{name}.log"
            attempt_number = 0
            while True:
                attempt_number += 1
                attempt = Attempt(index, env, log_path)
                if killed < wanted:
                    # a random moment between its step starting and when it should end
                    delay = rng.uniform(0.05, 0.9) * expected_s
                    while not attempt.step_event.wait(1) and attempt.process.poll() is None:
                        pass
                    if attempt.step_started is not None and attempt.wait(delay) is None:
                        attempt.kill()
                        killed_at = time.time()
                        killed += 1
                        after = time.monotonic() - (attempt.step_started or attempt.started)
                        restart_s = RESTART_SHARE * work_s
                        expected_s = max(restart_s, expected_s - max(0.0, after - restart_s))
                        record.append(
                            {
                                "stage": name,
                                "doing": KILLED[name],
                                "attempt": attempt_number,
                                "after_step_start_s": round(after, 1),
                                "killed_at": killed_at,
                                "run_ids": attempt.run_ids,
                            }
                        )
                        log(
                            f"soak: {name} attempt {attempt_number}: SIGKILL {after:.0f} s after its step started "
                            f"({sum(1 for r in record)} of {kills} kills)"
                        )
                        continue
                if attempt.wait() != 0:
                    raise failed(attempt, log_path, f"soak stage {name} attempt {attempt_number}")
                total = time.monotonic() - attempt.started
                if name in KILLED and killed < wanted:
                    carried = wanted - killed
                    log(f"soak: {name} finished before its kill; {carried} kill(s) move to the next killed stage")
                log(f"soak: {', '.join(stage)} done on attempt {attempt_number} ({total:.0f} s)")
                break
        if carried:
            log(f"soak: {carried} planned kill(s) were left over after the last killed stage")
        monitoring = wait_for_monitoring(folder, env, record)
    finally:
        daemon.send_signal(signal.SIGINT)
        try:
            daemon.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait()
    for entry in record:
        entry.pop("killed_at")
    return {"wall_s": round(time.monotonic() - started, 1), "kills": record, "monitoring": monitoring}


def wait_for_monitoring(folder: Path, env: dict[str, str], record: list[dict], timeout_s: float = 180) -> dict:
    """Wait until run monitoring has marked every killed run failed; how long each took after its kill."""
    os.environ["DAGSTER_HOME"] = env["DAGSTER_HOME"]
    import dagster as dg

    deadline = time.monotonic() + timeout_s
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        while True:
            started = instance.get_run_records(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
            if not started or time.monotonic() > deadline:
                break
            time.sleep(5)
        latencies, unmarked = [], 0
        for entry in record:
            runs = [instance.get_run_record_by_id(run_id) for run_id in entry["run_ids"]]
            runs = [run for run in runs if run is not None]
            if not runs:
                continue  # killed before its run was created
            run = runs[-1]
            if run.dagster_run.status == dg.DagsterRunStatus.FAILURE and run.end_time:
                latencies.append(run.end_time - entry["killed_at"])
            else:
                unmarked += 1
        statuses = collections.Counter(record.dagster_run.status.value for record in instance.get_run_records())
    summary = {
        "runs_by_status": dict(statuses),
        "killed_runs_marked_failed": len(latencies),
        "killed_runs_not_marked_failed": unmarked,
        "marked_failed_after_kill_s": {
            "median": round(sorted(latencies)[len(latencies) // 2], 1) if latencies else None,
            "max": round(max(latencies), 1) if latencies else None,
        },
    }
    log(f"soak: run monitoring: {summary}")
    return summary


def compare(reference: Path, soak: Path) -> dict:
    """Every table of the two databases, row by row (provenance columns left out, paths relative).

    Per table: ``lost``, keys of the reference the soak has fewer times; ``duplicated``, keys the soak
    has more than once (more than the reference has them); ``unexpected``, other keys the reference
    does not have; ``differing``, rows whose key matches but whose content does not. The key is the
    table's natural key (``KEYS``), else the whole row."""
    import duckdb

    def rows_of(connection, table: str, folder: Path) -> tuple[list | None, list[list]]:
        if table not in asset_tables(connection):
            return None, []
        return table_rows(connection, table, str(folder.resolve()), str(ROOT))

    def count(rows: list[list], positions: list[int]) -> collections.Counter:
        return collections.Counter(json.dumps([row[i] for i in positions], default=str) for row in rows)

    tables = {}
    with (
        duckdb.connect(str(reference / "trace_assets.duckdb"), read_only=True) as ref,
        duckdb.connect(str(soak / "trace_assets.duckdb"), read_only=True) as got,
    ):
        for table in sorted(set(asset_tables(ref)) | set(asset_tables(got))):
            ref_columns, ref_rows = rows_of(ref, table, reference)
            got_columns, got_rows = rows_of(got, table, soak)
            names = [name for name, _ in (ref_columns or got_columns or [])]
            key = KEYS.get(table) if set(KEYS.get(table, [])) <= set(names) else None
            positions = [names.index(column) for column in key] if key else list(range(len(names)))
            ref_keys, got_keys = count(ref_rows, positions), count(got_rows, positions)
            everything = list(range(len(names)))
            full_ref, full_got = count(ref_rows, everything), count(got_rows, everything)
            lost = sum((ref_keys - got_keys).values())
            duplicated = sum(n - max(1, ref_keys[k]) for k, n in got_keys.items() if n > max(1, ref_keys[k]))
            tables[table] = {
                "rows_reference": len(ref_rows),
                "rows_soak": len(got_rows),
                "key": key or "every column",
                "lost": lost,
                "duplicated": duplicated,
                "unexpected": sum((got_keys - ref_keys).values()) - duplicated,
                "differing": sum((full_ref - full_got).values()) - lost,
                "identical": ref_columns == got_columns and full_ref == full_got,
            }
    return tables


def code_commit() -> str:
    """The checkout's commit, marked ``+changes`` when its tracked files differ from it."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"], cwd=ROOT).returncode != 0
    return (head or "unknown") + ("+changes" if dirty else "")


def device() -> dict:
    cpu = "unknown"
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        cpu = platform.processor() or cpu
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(memory_gib, 1),
        "gpus": 0,
        "load_average_at_end": os.getloadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=24, help="SIGKILLs in all, spread over the killed stages")
    parser.add_argument("--seed", type=int, default=0, help="seeds the kill plan and the kill moments")
    parser.add_argument("--work", default="/tmp/trace_assets_soak", help="folder for both runs' data (wiped first)")
    parser.add_argument("--experiment", default=str(ROOT / "experiments" / "smoke.yaml"))
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=16,
        help="prompts per vLLM chunk (GenerationResource.chunk_size, 1024 by default) in both runs: small, "
        "so a kill lands between cached chunks and the re-execution resumes mid-step",
    )
    parser.add_argument("--reuse-reference", action="store_true", help="keep WORK/reference from an earlier soak")
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "soak.json"))
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child)
        return
    work = Path(args.work)
    reference_dir, soak_dir = work / "reference", work / "soak"
    rng = random.Random(args.seed)
    if args.reuse_reference and (reference_dir / "timings.json").exists():
        reference = json.loads((reference_dir / "timings.json").read_text())
        if reference["chunk_size"] != args.chunk_size:
            raise SystemExit(f"{reference_dir} was generated with --chunk-size {reference['chunk_size']}")
        log(f"reference: reusing {reference_dir} ({reference['wall_s']:.0f} s when it ran)")
    else:
        shutil.rmtree(reference_dir, ignore_errors=True)
        reference_dir.mkdir(parents=True)
        log(f"reference: uninterrupted run in {reference_dir}")
        reference = run_reference(reference_dir, args.experiment, args.chunk_size)
    shutil.rmtree(soak_dir, ignore_errors=True)
    soak_dir.mkdir(parents=True)
    log(f"soak: in {soak_dir}, {args.kills} kills, seed {args.seed}")
    soak = run_soak(soak_dir, args.experiment, args.chunk_size, reference, args.kills, rng)
    tables = compare(reference_dir, soak_dir)
    for table, outcome in tables.items():
        if not outcome["identical"]:
            log(f"compare: {table} differs: {outcome}")
    by_stage = collections.Counter(kill["stage"] for kill in soak["kills"])
    result = {
        "command": " ".join(
            [
                ".venv/bin/python bench/soak.py",
                f"--kills {args.kills}",
                f"--seed {args.seed}",
                f"--chunk-size {args.chunk_size}",
                f"--work {args.work}",
            ]
            + (
                [f"--experiment {os.path.relpath(args.experiment, ROOT)}"]
                if Path(args.experiment) != ROOT / "experiments/smoke.yaml"
                else []
            )
        ),
        "experiment": os.path.relpath(args.experiment, ROOT),
        "commit": code_commit(),
        "device": device(),
        "generation_chunk_size": args.chunk_size,
        "kills": len(soak["kills"]),
        "kills_by_stage": {stage: by_stage.get(stage, 0) for stage in KILLED},
        "lost_rows": sum(t["lost"] for t in tables.values()),
        "duplicated_rows": sum(t["duplicated"] for t in tables.values()),
        "differing_rows": sum(t["differing"] + t["unexpected"] for t in tables.values()),
        "tables_identical": all(t["identical"] for t in tables.values()),
        "tables_compared": len(tables),
        "provenance_columns_left_out": {table: sorted(columns) for table, columns in PROVENANCE.items()},
        "run_monitoring": soak["monitoring"],
        "reference_wall_s": reference["wall_s"],
        "soak_wall_s": soak["wall_s"],
        "reference_stage_timings": reference["stages"],
        "tables": tables,
        "kill_log": soak["kills"],
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    log(
        f"done: {result['kills']} kills, {result['lost_rows']} lost, {result['duplicated_rows']} duplicated, "
        f"{result['differing_rows']} differing rows, tables identical: {result['tables_identical']} -> {args.output}"
    )
    sys.exit(0 if result["tables_identical"] and not result["lost_rows"] and not result["duplicated_rows"] else 1)


if __name__ == "__main__":
    main()
