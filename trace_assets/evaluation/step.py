"""The evaluation stage as one function, without Dagster: what ``eval_results`` and the loop's
``round_evals`` both run."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import polars as pl

from trace_assets.evaluation.build import eval_rows, few_shot_examples
from trace_assets.evaluation.schemas import PER_TASK, POOLED, UNTRAINED, EvalResultSchema
from trace_assets.experiment import BASE_DATASET, BASE_FEW_SHOT, EvaluationConfig, StudentConfig
from trace_assets.generation.cached import CachedGeneration, prompt_request
from trace_assets.generation.types import ModelSpec, Sampling
from trace_assets.resources import GenerationResource
from trace_assets.students import load_tokenizer
from trace_assets.tables import empty_frame
from trace_assets.training.format import student_prompt


@dataclass(frozen=True)
class Evaluation:
    answers: dict[str, pl.DataFrame]  # split -> eval_results rows of every checkpoint on that split
    results: list[CachedGeneration]  # one generation per checkpoint and split (for their metadata)


def evaluate(
    generation: GenerationResource,
    students: Mapping[str, StudentConfig],
    settings: EvaluationConfig,
    seed: int,
    checkpoints: pl.DataFrame,
    problems: pl.DataFrame,
    splits: Sequence[str] = ("test",),
    log: Callable[[str], None] = print,
) -> Evaluation:
    """Greedy answers of each trained (and each untrained base) checkpoint of ``checkpoints`` to every
    problem of ``splits`` (a per-task checkpoint, one with a ``task``: to its own task's problems only),
    prompted as ``settings.prompt_format`` says (the few-shot baseline always few-shot, the zero-shot
    baseline never). vLLM starts one engine per architecture and loads each further checkpoint's weights into it."""
    train = problems.filter(pl.col("split") == "train")
    questions = {split: problems.filter(pl.col("split") == split) for split in splits}
    # Few-shot exemplars come from the train problems of the asked problem's own task.
    tasks = set().union(*(frame["task"].unique().to_list() for frame in questions.values()))
    exemplars = {
        task: few_shot_examples(train.filter(pl.col("task") == task), settings.few_shot_k, seed) for task in sorted(tasks)
    }
    evaluated, jobs = [], []
    for checkpoint in checkpoints.filter(pl.col("status").is_in(["trained", "base"])).iter_rows(named=True):
        few_shot = checkpoint["dataset"] == BASE_FEW_SHOT or (
            checkpoint["dataset"] != BASE_DATASET and settings.prompt_format == "few_shot"
        )
        shots = exemplars if few_shot else {}
        dtype = generation.gpu.resolve_dtype(students[checkpoint["student"]].dtype)
        spec = ModelSpec(name=checkpoint["path"], path=checkpoint["path"], dtype=dtype)
        # Greedy: the seed is not part of the requests' keys (Sampling.identity), so an untrained model's
        # rows of every training seed share one generation.
        sampling = Sampling(temperature=0.0, max_tokens=settings.max_tokens, n=1, seed=checkpoint["seed"])
        tokenizer = load_tokenizer(checkpoint["path"])
        for split, frame in questions.items():
            if checkpoint.get("task"):
                frame = frame.filter(pl.col("task") == checkpoint["task"])
                if frame.is_empty():  # its task has no problems in this split
                    continue
            requests = {
                row["problem_id"]: prompt_request(
                    student_prompt(row["question"], tokenizer, shots.get(row["task"], [])), checkpoint["content_hash"], sampling
                )
                for row in frame.iter_rows(named=True)
            }
            evaluated.append((checkpoint, split, frame, requests))
            jobs.append((spec, sampling, list(requests.values())))
    results = generation.generate_many(jobs, log) if jobs else []
    frames: dict[str, list[pl.DataFrame]] = {split: [] for split in splits}
    for (checkpoint, split, frame, requests), result in zip(evaluated, results):
        base = {key: checkpoint[key] for key in ("dataset", "student", "seed")} | {
            "checkpoint_hash": checkpoint["content_hash"],
            "training": training_kind(checkpoint),
        }
        frames[split].append(eval_rows(frame, requests, result.completions, base))
    answers = {split: pl.concat(parts) if parts else empty_frame(EvalResultSchema) for split, parts in frames.items()}
    return Evaluation(answers, results)


def training_kind(checkpoint: dict) -> str:
    """How a checkpoints row's model was fine-tuned: untrained, on one task (it has a ``task``), or on all pooled."""
    if checkpoint["status"] == "base":
        return UNTRAINED
    return PER_TASK if checkpoint.get("task") else POOLED
