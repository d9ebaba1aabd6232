"""The training stage as one function, without Dagster: what ``checkpoints`` and the loop's
``round_checkpoints`` both run, and the training key that names a checkpoint's folder."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from trace_assets.datasets.recipes import student_rows
from trace_assets.experiment import BASE_DATASETS, StudentConfig, TrainingConfig
from trace_assets.resources import DataResource, GPUResource
from trace_assets.students import student_path
from trace_assets.training.sft import TrainResult, TrainRun, directory_hash, train_sft, train_sft_launched


@dataclass
class TrainedCheckpoints:
    rows: list[dict] = field(default_factory=list)  # checkpoints rows
    log: list[dict] = field(default_factory=list)  # training_log rows of the runs trained or reused

    @property
    def train_s(self) -> float:
        """The trainers' own seconds over the runs trained here (not reused): the step's work seconds
        (metadata.WORK_SECONDS), recorded by the study's and the loop's checkpoints alike."""
        return sum(row["wall_s"] for row in self.rows if row["status"] == "trained")


def train_checkpoints(
    gpu: GPUResource,
    data: DataResource,
    config: TrainingConfig,
    students: Mapping[str, StudentConfig],
    examples: pl.DataFrame,
    problems: pl.DataFrame,
    datasets: Iterable[str],
    folder: Path,
    log: Callable[[str], None] = print,
    seed_offsets: Mapping[str, int] | None = None,
    per_task: Collection[str] = (),
) -> TrainedCheckpoints:
    """Each student fine-tuned on each of ``datasets`` (rows of ``examples``, sft_examples rows), once
    per training seed, into ``folder/<dataset>/<student>``: a base dataset gives the untrained student,
    an empty dataset a ``skipped_empty`` row, and a run trained before (same training key) is reused.
    A dataset in ``per_task`` gives one run per task of ``problems`` instead, on that task's examples
    alone, into ``folder/<dataset>/<student>/<task>``; its rows carry the task (pooled rows: null).
    ``seed_offsets``: per replicate dataset (an A/A control), what its training seeds add to each seed;
    its rows keep the nominal seed."""
    trained = TrainedCheckpoints()
    tasks = sorted(problems["task"].unique().to_list())
    pending: list[tuple[int, dict, PendingRun]] = []  # rows still to train: (row position, record, run)
    for dataset in datasets:
        for student_name, student in students.items():
            base_path = student_path(student, data)
            chosen = training_examples(examples, dataset, student_name, problems)
            runs = examples_by_task(chosen, problems, tasks) if dataset in per_task else {None: chosen}
            for seed in config.seeds:
                for task, task_examples in runs.items():
                    record = untrained_record(dataset, student_name, seed, base_path, config, task)
                    if dataset in BASE_DATASETS:
                        path_hash = directory_hash_safe(base_path)
                        trained.rows.append({**record, "status": "base", "path": base_path, "content_hash": path_hash})
                        continue
                    if not task_examples:
                        trained.rows.append({**record, "status": "skipped_empty", "path": None, "content_hash": None})
                        continue
                    folder_of_run = folder / dataset / student_name
                    folder_of_run = folder_of_run / task if task else folder_of_run
                    training_seed = seed + (seed_offsets or {}).get(dataset, 0)
                    key = checkpoint_key(base_path, data.path, task_examples, config, training_seed)
                    output = folder_of_run / f"seed{training_seed}-{key}"
                    label = f"{student_name} on {dataset}" + (f" ({task} only)" if task else "") + f", seed {training_seed}"
                    run = TrainRun(base_path, task_examples, training_seed, str(output), gpu.torch_device(), student.dtype)
                    trained.rows.append(record)  # completed below, once trained or found on disk
                    pending.append((len(trained.rows) - 1, record, PendingRun(run, label)))
    results = train_or_reuse(gpu, [run for _, _, run in pending], config, log)
    for (position, record, _), result in zip(pending, results):
        trained.rows[position] = trained_row(record, result)
        meta = {key: record[key] for key in ("dataset", "student", "seed", "task")}
        trained.log += [{**meta, **row} for row in result.log]
    return trained


def training_examples(frame: pl.DataFrame, dataset: str, student: str, problems: pl.DataFrame) -> list[dict]:
    """A dataset's rows for one student, each with its problem's difficulty (for the curriculum)."""
    difficulty = dict(zip(problems["problem_id"], problems["difficulty"]))
    return [
        {**row, "difficulty": difficulty.get(row["problem_id"], 0)}
        for row in student_rows(frame, dataset, student).iter_rows(named=True)
    ]


def examples_by_task(examples: list[dict], problems: pl.DataFrame, tasks: Iterable[str]) -> dict[str | None, list[dict]]:
    """``examples`` split by their problem's task, every one of ``tasks`` present (empty where it has none)."""
    task_of = dict(zip(problems["problem_id"], problems["task"]))
    return {task: [e for e in examples if task_of.get(e["problem_id"]) == task] for task in tasks}


@dataclass(frozen=True)
class PendingRun:
    run: TrainRun  # its output_dir is named by the training key
    label: str  # names the run in the log


def train_or_reuse(
    gpu: GPUResource, pending: list[PendingRun], config: TrainingConfig, log: Callable[[str], None]
) -> list[TrainResult]:
    """Each run's result: the saved one when a run with the same training key finished before, else
    trained now (all of them in one launched process on GPUs, see :func:`train`) and saved."""
    results: dict[int, TrainResult] = {}
    to_train: list[int] = []
    for index, item in enumerate(pending):
        result = load_trained(Path(item.run.output_dir))
        if result is not None:
            log(f"reusing {item.run.output_dir}: same base model, examples, settings and seed")
            results[index] = result
        else:
            to_train.append(index)
    for number, index in enumerate(to_train, 1):
        item = pending[index]
        log(f"to train {number}/{len(to_train)}: {item.label} ({len(item.run.examples)} examples)")
    if to_train:
        log(f"training {len(to_train)} run(s) on {gpu.torch_device()} x {config.processes}")
        train(gpu, [pending[index].run for index in to_train], config, log)
    for index in to_train:
        result = load_trained(Path(pending[index].run.output_dir))
        assert result is not None  # train() raises when a run did not save its record
        log(f"trained {pending[index].label} in {result.wall_s:.1f}s, {result.train_tokens} tokens, hash {result.content_hash}")
        results[index] = result
    return [results[index] for index in range(len(pending))]


def untrained_record(
    dataset: str, student: str, seed: int, base_path: str, config: TrainingConfig, task: str | None = None
) -> dict:
    """A checkpoints-table row's identity and settings, with nothing trained yet (status and path to add).
    ``config`` leaves out ``per_task``: the row's ``task`` says how this run was trained."""
    return {
        "dataset": dataset,
        "student": student,
        "seed": seed,
        "task": task,
        "base_model": base_path,
        "config": config.model_dump_json(exclude=NOT_IN_RECORD),
        "train_examples": 0,
        "eval_examples": 0,
        "train_tokens": 0,
        "wall_s": 0.0,
    }


def trained_row(record: dict, result: TrainResult) -> dict:
    """A checkpoints-table row for a trained (or reused) checkpoint."""
    return {
        **record,
        "status": "trained",
        "path": result.path,
        "content_hash": result.content_hash,
        "train_examples": result.train_examples,
        "eval_examples": result.eval_examples,
        "train_tokens": result.train_tokens,
        "wall_s": result.wall_s,
    }


def train(gpu: GPUResource, runs: list[TrainRun], config: TrainingConfig, log: Callable[[str], None]) -> None:
    """Train ``runs`` one after another, each saving its checkpoint and its record (:data:`RUN_RECORD`)
    as it ends: in this process on a CPU; on GPUs (or with several processes) all of them in one
    torchrun launch on claimed cards, so Python, torch and TRL start once rather than once a run
    (about 30 s a run on an H100 for a 135M student, bench/results/gpu_study/second_run.json).
    Raises when a run did not finish; those that did are kept and reused by the next attempt."""
    records = [str(Path(run.output_dir) / RUN_RECORD) for run in runs]
    if not gpu.has_cuda() and config.processes == 1:
        for run, record in zip(runs, records):
            result = train_sft(run, config)
            assert result is not None  # a single process is rank 0
            result.write(Path(record))
        return
    with gpu.claim(config.processes, log=log) as cards:
        if cards:
            log(f"SFT on GPU(s) {','.join(cards)}")
        train_sft_launched(runs, config, env=gpu.environment(cards), records=records)


# How a run executes, not what it learns: left out of the training key, so turning them on keeps checkpoints
# (the fused LM head computes the model's own loss and gradient: test_training.py). Comparing their speed
# therefore takes another data folder, or the checkpoints already trained are reused.
EXECUTION_ONLY = {"attention", "compile", "logging_steps", "gradient_checkpointing", "fused_lm_head"}
# Which runs a dataset gets, not how one run trains: a run's examples (in the key) already say whether it
# saw one task or all, so pooled runs keep the key (and checkpoints) they had before per-task training existed.
NOT_IN_RECORD = {"per_task"}


def base_identity(base_path: str, data_dir: Path) -> str:
    """The base model as the training key names it: a hub id or outside folder as given, a model built
    into the data folder (``local:...``) by its place there, so moving the data folder, or the same
    run in another one, keeps the key (and the checkpoints trained under it)."""
    path = Path(base_path)
    if path.is_absolute() and path.resolve().is_relative_to(data_dir.resolve()):
        return "<data>/" + path.resolve().relative_to(data_dir.resolve()).as_posix()
    return base_path


def checkpoint_key(base_path: str, data_dir: Path, examples: list[dict], config: TrainingConfig, seed: int) -> str:
    """The training key of a checkpoint, as both the study's and the loop's checkpoints name their folders:
    the base model by its place in the data folder, the config without its execution-only fields."""
    return training_key(
        base_identity(base_path, data_dir), examples, config.model_dump_json(exclude=EXECUTION_ONLY | NOT_IN_RECORD), seed
    )


def training_key(base_path: str, examples: list[dict], config_json: str, seed: int) -> str:
    """Identity of a training run: what it starts from, what it sees, how, and with which seed."""
    payload = json.dumps(
        {
            "base": base_path,
            "config": config_json,
            "seed": seed,
            "examples": sorted((e["example_id"], e["prompt"], e["completion"]) for e in examples),
        }
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


RUN_RECORD = "trace_assets_run.json"


def save_result(output: Path, result: TrainResult) -> None:
    result.write(output / RUN_RECORD)


def load_trained(output: Path) -> TrainResult | None:
    """A finished run's result if this exact run is already on disk (a re-run trains nothing).
    A record that can't be read (cut short by a crash before records were written atomically, or
    edited by hand) does not count: the run is trained again."""
    record = output / RUN_RECORD
    if not record.exists():
        return None
    try:
        return TrainResult.read(record)
    except (ValueError, TypeError):  # broken JSON, missing or unknown fields
        return None


def directory_hash_safe(path: str) -> str:
    """Hash of a local base-model folder; hub ids are identified by name."""
    folder = Path(path)
    return directory_hash(folder) if folder.is_dir() else f"hub:{path}"
