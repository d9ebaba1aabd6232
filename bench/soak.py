"""Fault soak: the loop experiment with its runs SIGKILLed at random moments, against an uninterrupted run.

    .venv/bin/python bench/soak.py --kills 24 --seed 0 --work /tmp/trace_assets_soak

The experiment (``--experiment``, by default experiments/loop.yaml) runs the study's stages as the
demo does, then, when it has a ``revision:`` section, the closed loop's rounds: the rounds to run
come from the ``next_round`` sensor, as under ``dagster dev``, and each round's assets
(round_styles ... round_failures) run one per stage, then rounds_report.

1. The reference: every stage of the experiment materialized once, uninterrupted, in
   ``WORK/reference`` (its own data folder and DAGSTER_HOME); each stage's wall time and when the
   step of its first asset started are recorded (``--reuse-reference`` keeps an earlier one).
2. The soak, in ``WORK/soak``, with ``dagster-daemon`` running on its instance (run monitoring, as
   under ``dagster dev``): the same stages, each a Dagster run in a child process of its own process
   group. In the stages that generate (teacher_traces), judge (judged_traces), train (checkpoints),
   evaluate (eval_results) and judge failures (failure_modes, accuracy, report), and in every round
   the ones that revise the style (round_styles after round 0), generate, train, evaluate and judge
   failures, the child's whole process group, vLLM engine processes included, is SIGKILLed at a
   seeded random moment between that step starting (it holds the ``gpu`` pool's slot then) and
   when it should end (the reference's time, less what earlier attempts left cached), then the
   stage is executed again, until it runs through. ``--kills`` kills are spread over those stages
   (as they ran in the reference; a step under ``MIN_KILL_WINDOW_S`` is not killed); a stage that
   finishes before its kill passes its remaining kills on to the next one. A killed run holds the
   ``gpu`` pool's slot until run monitoring marks it failed, so a re-execution also waits on that.
3. Every table of both DuckDB files is compared (scripts/table_digests.py, provenance columns left
   out): rows of the reference missing from the soak (lost), rows the soak has more often than the
   reference (duplicated; a key, where the table has one, counted once), rows that differ, and
   whether every table, accuracy included, is identical. Also: how many killed runs run monitoring
   marked failed, and how long after the kill; and the shared-memory segments (``/dev/shm/psm_*``,
   vLLM's message queues) that no live process uses any more and were not there before: killed
   engines leave theirs, and the next step that generates removes them (trace_assets/shm.py).

Writes ``bench/results/soak.json`` (``--output``) and prints progress lines as it goes. Exits 1
if anything was lost, duplicated or different, or shared memory was left behind.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import math
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.table_digests import PROVENANCE, asset_tables, table_rows  # noqa: E402

# The demo's stages (trace_assets/demo.py), with generation and judging in runs of their own.
STUDY_STAGES: list[list[str]] = [
    ["problems"],
    ["style_prompts"],
    ["teacher_traces"],
    ["judged_traces"],
    ["sft_examples", "dataset_exclusions", "trace_stats"],
    ["checkpoints", "training_log"],
    ["eval_results"],
    ["failure_modes", "accuracy", "report", "lineage_views"],
]
# A round of the closed loop (loop/sensors.py's style_round job), one asset a stage.
ROUND_STAGES: list[list[str]] = [
    ["round_styles"],
    ["round_traces"],
    ["round_examples"],
    ["round_checkpoints"],
    ["round_evals"],
    ["round_failures"],
]
# Stages whose runs are killed, by their first asset: what they are doing.
KILLED = {"teacher_traces": "generation", "judged_traces": "judging", "checkpoints": "SFT", "eval_results": "evaluation"}
KILLED["failure_modes"] = "failure judging"
KILLED |= {
    "round_styles": "revision",
    "round_traces": "round generation",
    "round_checkpoints": "round SFT",
    "round_evals": "round evaluation",
    "round_failures": "round failure judging",
}
# A stage whose step took less than this in the reference (round 0's style, a copy of the file) is not killed.
MIN_KILL_WINDOW_S = 2.0
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
ROUNDS_LINE = "@@soak rounds@@ "


@dataclass(frozen=True)
class Stage:
    """Assets materialized in one run; ``partition``: the loop round they belong to."""

    assets: tuple[str, ...]
    partition: str | None = None

    @property
    def label(self) -> str:
        return self.assets[0] + (f"[{self.partition}]" if self.partition else "")

    def argv(self) -> list[str]:
        return ["--child", ",".join(self.assets)] + (["--partition", self.partition] if self.partition else [])


def stages(next_rounds: Callable[[], list[str]]) -> Iterator[Stage]:
    """The study's stages, then each round the ``next_round`` sensor starts (asked once the stages
    before have run), then rounds_report."""
    for assets in STUDY_STAGES:
        yield Stage(tuple(assets))
    looped = False
    while keys := next_rounds():
        looped = True
        for key in keys:
            for assets in ROUND_STAGES:
                yield Stage(tuple(assets), key)
    if looped:
        yield Stage(("rounds_report",))


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def soak_definitions():
    """The experiment's definitions, with generation persisted every ``SOAK_CHUNK_SIZE`` prompts."""
    import warnings

    warnings.filterwarnings("ignore", message=".* is currently in beta")
    import dagster as dg

    from trace_assets.experiment import data_dir, load_experiment
    from trace_assets.inputs import check_inputs
    from trace_assets.instance import write_instance
    from trace_assets.project import build_definitions
    from trace_assets.resources import GenerationResource

    write_instance(Path(os.environ["DAGSTER_HOME"]), overwrite=False)
    defs = build_definitions(check_inputs(load_experiment()), data_dir())
    generation = defs.resources["generation"]
    chunked = GenerationResource(gpu=generation.gpu, data=generation.data, chunk_size=int(os.environ["SOAK_CHUNK_SIZE"]))
    return dg.Definitions(
        assets=defs.assets,
        resources={**defs.resources, "generation": chunked},
        sensors=defs.sensors,
        schedules=defs.schedules,
        executor=defs.executor,
    )


def child(assets: list[str], partition: str | None) -> None:
    """One stage as one Dagster run: the study's the way ``python -m trace_assets.demo`` runs it, a
    round's the way the ``style_round`` job does, for that round's partition only."""
    import dagster as dg

    from trace_assets.demo import run_stage

    defs = soak_definitions()
    with dg.DagsterInstance.get() as instance:
        if partition is None:
            run_stage(defs, instance, assets)
            return
        job = defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection={dg.AssetKey(a) for a in assets})
        result = job.execute_in_process(instance=instance, partition_key=partition, raise_on_error=False)
        if not result.success:
            for failure in (event for event in result.all_events if event.is_step_failure):
                print(failure.event_specific_data.error.to_string(), file=sys.stderr)
            raise SystemExit(f"stage {assets} [{partition}] failed")


def child_next_rounds() -> None:
    """One tick of the ``next_round`` sensor: add the rounds it starts as partitions and print their keys."""
    import dagster as dg

    defs = soak_definitions()
    keys: list[str] = []
    if any(sensor.name == "next_round" for sensor in defs.sensors or []):
        with dg.DagsterInstance.get() as instance:
            result = defs.resolve_sensor_def("next_round")(dg.build_sensor_context(instance=instance, definitions=defs))
            if isinstance(result, dg.SensorResult):
                for request in result.dynamic_partitions_requests or []:
                    instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
                keys = [request.partition_key for request in result.run_requests or []]
    print(ROUNDS_LINE + json.dumps(keys), flush=True)


def next_rounds(env: dict[str, str]) -> list[str]:
    """The rounds the loop starts now (none without a ``revision:`` section), from a child process."""
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--next-rounds"], env=env, cwd=ROOT, capture_output=True, text=True
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith(ROUNDS_LINE)]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"asking for the next rounds failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len(ROUNDS_LINE) :])


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

    def __init__(self, stage: Stage, env: dict[str, str], log_path: Path):
        self.step_start = f" - {stage.assets[0]} - {STEP_START} - "  # the stage's own step, not a side asset's
        self.started = time.monotonic()
        self.step_started: float | None = None
        self.run_ids: list[str] = []
        self.step_event = threading.Event()
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), *stage.argv()],
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
    for index, stage in enumerate(stages(lambda: next_rounds(env))):
        log_path = folder / log_name(index, stage)
        attempt = Attempt(stage, env, log_path)
        if attempt.wait() != 0:
            raise failed(attempt, log_path, f"reference stage {stage.label}")
        total = time.monotonic() - attempt.started
        to_step = (attempt.step_started or attempt.started) - attempt.started
        timings[stage.label] = {"total_s": round(total, 1), "to_first_step_s": round(to_step, 1)}
        log(
            f"reference: {', '.join(stage.assets)} {stage.partition or ''} in {total:.0f} s (its step started after {to_step:.0f} s)"
        )
    result = {"stages": timings, "wall_s": round(time.monotonic() - started, 1), "chunk_size": chunk_size}
    (folder / "timings.json").write_text(json.dumps(result, indent=2))
    return result


def log_name(index: int, stage: Stage) -> str:
    return f"stage{index}-{stage.assets[0]}" + (f"-{stage.partition}" if stage.partition else "") + ".log"


def killable(label: str, timing: dict) -> bool:
    """A stage of a killed kind (``KILLED``, by its first asset) whose step ran long enough to be killed."""
    return label.split("[")[0] in KILLED and timing["total_s"] - timing["to_first_step_s"] >= MIN_KILL_WINDOW_S


def plan_kills(kills: int, timings: dict[str, dict], rng: random.Random) -> dict[str, int]:
    """``kills`` spread evenly over the stages of the reference that are killed (``killable``, by
    label, rounds included), the remainder to stages drawn at random."""
    labels = [label for label, timing in timings.items() if killable(label, timing)]
    plan = {label: kills // len(labels) for label in labels}
    for label in rng.sample(labels, kills % len(labels)):
        plan[label] += 1
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
    plan = plan_kills(kills, reference["stages"], rng)
    log(f"soak: kills planned per stage: {plan}")
    carried = 0  # kills a stage did not get because it finished first go to the next killed stage
    record: list[dict] = []
    started = time.monotonic()
    daemon = start_daemon(folder, env)
    try:
        for index, stage in enumerate(stages(lambda: next_rounds(env))):
            name = stage.label
            if name not in reference["stages"]:
                log(f"soak: {name} did not run in the reference (its tables will differ)")
            timing = reference["stages"].get(name, {"total_s": 60.0, "to_first_step_s": 0.0})
            kills_here = killable(name, timing)
            wanted = plan.get(name, 0) + (carried if kills_here else 0)
            carried = 0 if kills_here else carried
            killed = 0
            work_s = max(1.0, timing["total_s"] - timing["to_first_step_s"])
            expected_s = work_s  # how long this attempt's steps should take, shrinking as kills leave work cached
            log_path = folder / log_name(index, stage)
            attempt_number = 0
            while True:
                attempt_number += 1
                attempt = Attempt(stage, env, log_path)
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
                                "doing": KILLED[stage.assets[0]],
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
                if kills_here and killed < wanted:
                    carried = wanted - killed
                    log(f"soak: {name} finished before its kill; {carried} kill(s) move to the next killed stage")
                log(f"soak: {name} done on attempt {attempt_number} ({total:.0f} s)")
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


# Floating-point results (log-probabilities and what is computed from them) are compared within this
# relative and absolute tolerance: a generation re-run after a kill batches its prompts otherwise, and
# vLLM's kernels are not batch-invariant, so the same tokens come back with log-probabilities that
# differ in the sixth digit (up to 1e-5 seen on 2026-12-07). Every text, token count, answer, verdict
# and accuracy must still match exactly.
FLOAT_TOLERANCE = 1e-4


def _is_float(data_type: str) -> bool:
    return data_type.split("[")[0] in {"DOUBLE", "FLOAT", "REAL"}


def _close(a, b) -> tuple[bool, float]:
    """Whether two values match (floats, and lists of them, within FLOAT_TOLERANCE), and the largest
    float difference seen."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=FLOAT_TOLERANCE, abs_tol=FLOAT_TOLERANCE), abs(a - b)
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        pairs = [_close(x, y) for x, y in zip(a, b)]
        return all(ok for ok, _ in pairs), max((d for _, d in pairs), default=0.0)
    return a == b, 0.0


def compare(reference: Path, soak: Path) -> dict:
    """Every table of the two databases, row by row (provenance columns left out, paths relative).

    Per table: ``lost``, keys of the reference the soak has fewer times; ``duplicated``, keys the soak
    has more than once (more than the reference has them); ``unexpected``, other keys the reference
    does not have; ``differing``, rows whose key matches but whose content does not, floats compared
    within FLOAT_TOLERANCE (``max_float_difference``: the largest difference seen). The key is the
    table's natural key (``KEYS``), else every column that is not a float."""
    import duckdb

    def rows_of(connection, table: str, folder: Path) -> tuple[list | None, list[list]]:
        if table not in asset_tables(connection):
            return None, []
        return table_rows(connection, table, str(folder.resolve()), str(ROOT))

    def by_key(rows: list[list], positions: list[int]) -> dict[str, list[list]]:
        grouped: dict[str, list[list]] = collections.defaultdict(list)
        for row in rows:
            grouped[json.dumps([row[i] for i in positions], default=str)].append(row)
        return grouped

    tables = {}
    with (
        duckdb.connect(str(reference / "trace_assets.duckdb"), read_only=True) as ref,
        duckdb.connect(str(soak / "trace_assets.duckdb"), read_only=True) as got,
    ):
        for table in sorted(set(asset_tables(ref)) | set(asset_tables(got))):
            ref_columns, ref_rows = rows_of(ref, table, reference)
            got_columns, got_rows = rows_of(got, table, soak)
            columns = ref_columns or got_columns or []
            names = [name for name, _ in columns]
            key = KEYS.get(table) if set(KEYS.get(table, [])) <= set(names) else None
            exact = [i for i, (_, data_type) in enumerate(columns) if not _is_float(data_type)]
            positions = [names.index(column) for column in key] if key else exact
            ref_keys, got_keys = by_key(ref_rows, positions), by_key(got_rows, positions)
            lost = sum(max(0, len(rows) - len(got_keys.get(k, []))) for k, rows in ref_keys.items())
            duplicated = sum(
                len(rows) - max(1, len(ref_keys.get(k, [])))
                for k, rows in got_keys.items()
                if len(rows) > max(1, len(ref_keys.get(k, [])))
            )
            differing, largest = 0, 0.0
            for k, rows in ref_keys.items():
                for ref_row, got_row in zip(sorted(rows, key=repr), sorted(got_keys.get(k, []), key=repr)):
                    checks = [_close(a, b) for a, b in zip(ref_row, got_row)]
                    differing += not all(ok for ok, _ in checks)
                    largest = max([largest, *(d for _, d in checks)])
            unexpected = sum(max(0, len(rows) - len(ref_keys.get(k, []))) for k, rows in got_keys.items()) - duplicated
            tables[table] = {
                "rows_reference": len(ref_rows),
                "rows_soak": len(got_rows),
                "key": key or "every column but floats",
                "lost": lost,
                "duplicated": duplicated,
                "unexpected": unexpected,
                "differing": differing,
                "max_float_difference": largest,
                "identical": ref_columns == got_columns and not (lost or duplicated or unexpected or differing),
            }
    return tables


def leftover_segments() -> set[str]:
    """Names of the ``/dev/shm/psm_*`` segments that no live process maps or holds open."""
    from trace_assets.shm import orphaned_segments

    return {path.name for path in orphaned_segments(min_age_s=0, prefixes=("psm_",))}


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
    parser.add_argument("--experiment", default=str(ROOT / "experiments" / "loop.yaml"))
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=16,
        help="prompts per vLLM chunk (GenerationResource.chunk_size, 1024 by default) in both runs: small, "
        "so a kill lands between cached chunks and the re-execution resumes mid-step",
    )
    parser.add_argument("--reuse-reference", action="store_true", help="keep WORK/reference from an earlier soak")
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "soak.json"))
    parser.add_argument("--child", help=argparse.SUPPRESS)  # comma-separated assets: run them as one stage
    parser.add_argument("--partition", help=argparse.SUPPRESS)  # ... for this loop round
    parser.add_argument("--next-rounds", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child.split(","), args.partition)
        return
    if args.next_rounds:
        child_next_rounds()
        return
    orphaned_before = leftover_segments()
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
    left = sorted(leftover_segments() - orphaned_before)
    in_use = sorted(path.name for path in Path("/dev/shm").glob("psm_*")) if Path("/dev/shm").is_dir() else []
    log(f"shared memory: {len(left)} psm_* segment(s) left behind by the runs, {len(in_use)} in /dev/shm in all")
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
                if Path(args.experiment) != ROOT / "experiments/loop.yaml"
                else []
            )
        ),
        "experiment": os.path.relpath(args.experiment, ROOT),
        "commit": code_commit(),
        "device": device(),
        "generation_chunk_size": args.chunk_size,
        "kills": len(soak["kills"]),
        "kills_by_stage": {
            label: by_stage.get(label, 0) for label, timing in reference["stages"].items() if killable(label, timing)
        },
        "kills_by_kind": dict(collections.Counter(kill["doing"] for kill in soak["kills"])),
        "lost_rows": sum(t["lost"] for t in tables.values()),
        "duplicated_rows": sum(t["duplicated"] for t in tables.values()),
        "differing_rows": sum(t["differing"] + t["unexpected"] for t in tables.values()),
        "tables_identical": all(t["identical"] for t in tables.values()),
        "tables_compared": len(tables),
        "provenance_columns_left_out": {table: sorted(columns) for table, columns in PROVENANCE.items()},
        "run_monitoring": soak["monitoring"],
        "psm_segments_left": len(left),  # /dev/shm/psm_* no live process uses, not there before the soak
        "psm_segments_left_names": left,
        "psm_segments_at_end": len(in_use),  # all of them, those of other processes on the machine included
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
    clean = result["tables_identical"] and not result["lost_rows"] and not result["duplicated_rows"] and not left
    sys.exit(0 if clean else 1)


if __name__ == "__main__":
    main()
