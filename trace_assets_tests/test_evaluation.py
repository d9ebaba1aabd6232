"""The evaluation step without Dagster, with a scripted backend standing in for the engine."""

import polars as pl

from trace_assets.evaluation.step import evaluate
from trace_assets.experiment import EvaluationConfig, ProblemsConfig, StudentConfig
from trace_assets.generation.backends import Backend
from trace_assets.generation.types import Completion, GenerationStats
from trace_assets.problems.sources import load_problems
from trace_assets.resources import DataResource, GenerationResource, GPUResource


class CountingBackend(Backend):
    """Answers every raw prompt with the model's name and records the keys it was asked for."""

    asked: list[str]

    def generate(self, spec, sampling, requests, on_batch, log=print):
        self.asked.extend(request.key for request in requests)
        on_batch([Completion(request.key, 0, f"{spec.name}: #### 5", "stop", 10, 3) for request in requests])
        return GenerationStats(completions=len(requests))


class CountingGeneration(GenerationResource):
    def backend(self, spec, keep_engines=False):
        return CountingBackend()


def test_untrained_arms_are_generated_once_for_every_seed_and_trained_checkpoints_each(tmp_path, tiny_model):
    """base and base_few_shot have one checkpoints row per training seed, all the same model: its
    greedy answers are generated once per prompt form and every seed gets rows; two trained
    checkpoints (other content hashes) are generated each."""
    CountingBackend.asked = []
    problems, _ = load_problems(
        ProblemsConfig(source="synthetic", n_train=4, n_test=3, synthetic={"min_steps": 1, "max_steps": 2}), 0
    )
    rows = [
        {"dataset": dataset, "seed": seed, "status": "base", "content_hash": "base-hash"}
        for dataset in ("base", "base_few_shot")
        for seed in (0, 1, 2)
    ] + [{"dataset": "H", "seed": seed, "status": "trained", "content_hash": f"h-{seed}"} for seed in (0, 1)]
    checkpoints = pl.DataFrame([{**row, "student": "tiny", "path": tiny_model, "task": None} for row in rows])
    generation = CountingGeneration(gpu=GPUResource(), data=DataResource(data_dir=str(tmp_path)))
    students = {"tiny": StudentConfig(model=tiny_model)}
    evaluation = evaluate(generation, students, EvaluationConfig(few_shot_k=2), 0, checkpoints, problems, log=lambda m: None)

    asked = CountingBackend.asked
    assert len(asked) == len(set(asked)) == 4 * 3  # base zero-shot, base few-shot, H seed 0, H seed 1: 3 test problems each
    answers = evaluation.answers["test"]
    assert sorted(answers.select("dataset", "seed").unique().rows()) == sorted((r["dataset"], r["seed"]) for r in rows)
    assert answers.height == len(rows) * 3
    by_seed = answers.filter(pl.col("dataset") == "base").group_by("problem_id").agg(pl.col("completion").n_unique())
    assert (by_seed["completion"] == 1).all()
    assert [r.generated for r in evaluation.results] == [3, 0, 0, 3, 0, 0, 3, 3]
