"""Turn teacher completions into ``teacher_traces`` rows: pure, no Dagster."""

from __future__ import annotations

import json
from dataclasses import asdict

import polars as pl

from trace_assets.generation.cached import request_key
from trace_assets.generation.types import Completion, Request, Sampling
from trace_assets.styles.library import Style
from trace_assets.tables import frame_of
from trace_assets.tasks import grade
from trace_assets.traces.confidence import DEFAULT_WINDOW, trace_confidence
from trace_assets.traces.prompts import paraphrase_messages, prompt_hash, teacher_messages
from trace_assets.traces.schemas import TeacherTraceSchema

Planned = tuple[Style, str, dict, Request]


def teacher_requests(
    styles: list[Style], problems: pl.DataFrame, model: str, sampling: Sampling, paraphrase_styles: frozenset[str] = frozenset()
) -> list[Planned]:
    """One ``solve`` request per (style, train problem), keyed by the content of what is sent, plus a
    ``paraphrase`` request (rewrite the human solution in the style) for styles an H->style recipe uses."""
    planned = []
    for style in styles:
        for problem in problems.iter_rows(named=True):
            messages = teacher_messages(style, problem["question"])
            planned.append((style, "solve", problem, Request(request_key(messages, model, sampling), messages, logprobs=True)))
            if style.name in paraphrase_styles:
                messages = paraphrase_messages(style, problem["question"], problem["reference_solution"])
                planned.append(
                    (style, "paraphrase", problem, Request(request_key(messages, model, sampling), messages, logprobs=True))
                )
    return planned


def score_completion(text: str, problem: dict) -> dict:
    """The answers a completion declares and whether it is right, under the problem's task's verifier."""
    extraction, check, _ = grade(text, problem)
    return {
        "strict_answer": extraction.strict,
        "label_answer": extraction.label,
        "flexible_answer": extraction.flexible,
        "extracted_answer": extraction.answer,
        "extraction_method": extraction.method,
        "is_correct": check.correct,
    }


def trace_rows(
    planned: list[Planned],
    completions: dict[tuple[str, int], Completion],
    model: str,
    sampling: Sampling,
    window: int = DEFAULT_WINDOW,
) -> pl.DataFrame:
    """Rows for every planned sample that has a completion; missing samples are simply absent.
    ``window``: tokens of the sliding window of step-level confidence (``confidence.trace_confidence``)."""
    sampling_json = json.dumps(asdict(sampling), sort_keys=True)
    rows = []
    for style, kind, problem, request in planned:
        for index in range(sampling.n):
            completion = completions.get((request.key, index))
            if completion is None:
                continue
            confidence = trace_confidence(completion.text, completion.token_logprobs, completion.token_ends, window)
            rows.append(
                {
                    "trace_id": f"{request.key}-{index}",
                    "problem_id": problem["problem_id"],
                    "style": style.name,
                    "kind": kind,
                    "style_version": style.version,
                    "prompt_hash": prompt_hash(request.messages),
                    "request_hash": request.key,
                    "model": model,
                    "sampling": sampling_json,
                    "sample_index": index,
                    "completion": completion.text,
                    "finish_reason": completion.finish_reason,
                    "prompt_tokens": completion.prompt_tokens,
                    "n_tokens": completion.output_tokens,
                    "reference_answer": problem["answer"],
                    **score_completion(completion.text, problem),
                    "step_confidence": confidence.step,
                    "mean_logprob": confidence.mean,
                }
            )
    return frame_of(rows, TeacherTraceSchema)
