"""Evaluation prompts and result rows: pure, no Dagster."""

from __future__ import annotations

import random

import polars as pl

from trace_assets.evaluation.degeneration import is_degenerate_loop
from trace_assets.evaluation.schemas import EvalResultSchema
from trace_assets.generation.types import Completion, Request
from trace_assets.tables import frame_of
from trace_assets.tasks import grade


def few_shot_examples(train: pl.DataFrame, k: int, seed: int) -> list[tuple[str, str]]:
    rows = sorted(train.iter_rows(named=True), key=lambda r: r["problem_id"])
    return [(r["question"], r["reference_solution"]) for r in random.Random(seed).sample(rows, min(k, len(rows)))]


def eval_rows(
    test: pl.DataFrame, requests: dict[str, Request], completions: dict[tuple[str, int], Completion], base: dict
) -> pl.DataFrame:
    """One row per test problem; a problem whose generation failed counts as wrong with an empty completion."""
    rows = []
    for problem in test.iter_rows(named=True):
        completion = completions.get((requests[problem["problem_id"]].key, 0))
        text = completion.text if completion else ""
        extraction, check, strict = grade(text, problem)
        finish = completion.finish_reason if completion else "error"
        rows.append(
            {
                **base,
                "problem_id": problem["problem_id"],
                "difficulty": problem["difficulty"],
                "completion": text,
                "strict_answer": extraction.strict,
                "flexible_answer": extraction.flexible,
                "extracted_answer": extraction.answer,
                "reference_answer": problem["answer"],
                "is_correct": check.correct,
                "is_correct_strict": strict.correct,  # only the form the prompt asks for (`#### N` for gsm8k)
                "output_tokens": completion.output_tokens if completion else 0,
                "finish_reason": finish,
                "hit_length_limit": finish == "length",
                "degenerate_loop": is_degenerate_loop(text),
                "task": problem.get("task") or "gsm8k",
            }
        )
    return frame_of(rows, EvalResultSchema)
