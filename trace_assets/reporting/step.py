"""Failure classification as one function, without Dagster: what ``failure_modes`` and the loop's
``round_failures`` both run."""

from __future__ import annotations

from collections.abc import Callable

import polars as pl

from trace_assets.experiment import ModelConfig
from trace_assets.generation.cached import engine_metadata, request_key
from trace_assets.generation.types import Request
from trace_assets.reporting.failures import (
    FAILURE_SCHEMA,
    classify_by_rules,
    classify_task_failure,
    decide,
    failure_judge_messages,
)
from trace_assets.resources import GenerationResource


def classify_failures(
    generation: GenerationResource,
    judge: ModelConfig,
    answers: pl.DataFrame,
    problems: pl.DataFrame,
    keys: tuple[str, ...],
    log: Callable[[str], None] = print,
) -> tuple[list[dict], dict[str, float]]:
    """The wrong answers of ``answers`` (eval_results rows) classified into the failure taxonomy:
    rules propose, the judge decides. Each result is ``keys`` of its row plus category, source and
    evidence; with the judge's engine starts, reuses and wakes and its seconds generating (cached.engine_metadata)."""
    wrong = answers.filter(~pl.col("is_correct"))
    problem_rows = {row["problem_id"]: row for row in problems.iter_rows(named=True)}
    spec, sampling = generation.settings(judge, n=1)
    decided, asked = [], []  # (row key, proposal[, request])
    for row in wrong.iter_rows(named=True):
        problem = problem_rows[row["problem_id"]]
        if row.get("task", "gsm8k") == "gsm8k":
            proposal = classify_by_rules(
                row["completion"],
                row["extracted_answer"],
                row["reference_answer"],
                row["degenerate_loop"],
                row["hit_length_limit"],
            )
        else:  # the task's own categories, decided by its verifier
            proposal = classify_task_failure(row["completion"], problem, row["degenerate_loop"], row["hit_length_limit"])
        base = {k: row[k] for k in keys}
        if proposal.decisive:
            decided.append((base, proposal))
            continue
        messages = failure_judge_messages(problem["question"], problem["reference_solution"], row["completion"], proposal)
        asked.append(
            (base, proposal, Request(request_key(messages, judge.model, sampling, FAILURE_SCHEMA), messages, FAILURE_SCHEMA))
        )
    result = generation.generate(spec, sampling, [r for *_, r in asked], log) if asked else None
    rows = [{**base, **dict(zip(("category", "source", "evidence"), decide(proposal, None)))} for base, proposal in decided]
    for base, proposal, request in asked:
        completion = result.completions.get((request.key, 0)) if result else None
        # A failed generation is an unparsable reply: recorded as such, the rules' proposal stands.
        category, source, evidence = decide(proposal, completion.text if completion else "")
        rows.append({**base, "category": category, "source": source, "evidence": evidence})
    return rows, engine_metadata([result])
