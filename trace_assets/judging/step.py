"""The judging stage as one function, without Dagster: what ``judged_traces`` and the loop's
``round_traces`` both run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

from trace_assets.experiment import ModelConfig
from trace_assets.generation.cached import CachedGeneration
from trace_assets.judging.build import faithfulness_requests, judge_requests, verdict_rows
from trace_assets.judging.verdicts import judge_char_budget
from trace_assets.resources import GenerationResource
from trace_assets.styles.library import Style


@dataclass(frozen=True)
class JudgedTraces:
    frame: pl.DataFrame  # judged_traces rows
    result: CachedGeneration  # the judge's generation (for its metadata)
    max_chars: int  # traces longer than this were shown to the judge cut, and never pass


def judge_traces(
    generation: GenerationResource,
    judge: ModelConfig,
    traces: pl.DataFrame,
    styles: dict[str, Style],
    problems: pl.DataFrame,
    log: Callable[[str], None] = print,
) -> JudgedTraces:
    """Rule checks and the judge's verdict on every trace of ``traces`` (teacher_traces rows), and the
    judge's faithfulness verdict on each paraphrase. Each trace's answer is read by its problem's task."""
    spec, sampling = generation.settings(judge, n=1)
    max_chars = judge_char_budget(judge.max_model_len, sampling.max_tokens)
    questions = dict(zip(problems["problem_id"], problems["question"]))
    requests = judge_requests(traces, questions, styles, judge.model, sampling, max_chars)
    problem_rows = {row["problem_id"]: row for row in problems.iter_rows(named=True)}
    faithful = faithfulness_requests(traces, problem_rows, judge.model, sampling, max_chars)
    result = generation.generate(spec, sampling, [*requests.values(), *faithful.values()], log)
    tasks = dict(zip(problems["problem_id"], problems["task"]))
    frame = verdict_rows(traces, styles, requests, result.completions, judge.model, max_chars, faithful, tasks)
    return JudgedTraces(frame, result, max_chars)
