"""Evaluation prompts and result rows: pure, no Dagster."""

from __future__ import annotations

import random

import polars as pl

from trace_assets.answers import extract_answer, numbers_match
from trace_assets.evaluation.degeneration import is_degenerate_loop
from trace_assets.evaluation.schemas import EvalResultSchema
from trace_assets.generation.types import Completion, Request
from trace_assets.tables import frame_of


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
        extraction = extract_answer(text)
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
                "is_correct": numbers_match(extraction.answer, problem["answer"]),
                "is_correct_strict": numbers_match(extraction.strict, problem["answer"]),  # only the asked-for `#### N`
                "output_tokens": completion.output_tokens if completion else 0,
                "finish_reason": finish,
                "hit_length_limit": finish == "length",
                "degenerate_loop": is_degenerate_loop(text),
            }
        )
    return frame_of(rows, EvalResultSchema)
