"""Combine rule checks and judge verdicts into ``judged_traces`` rows: pure, no Dagster."""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from trace_assets.generation.cached import request_key
from trace_assets.generation.types import Completion, Request, Sampling
from trace_assets.judging.schemas import JudgedTraceSchema
from trace_assets.judging.verdicts import (
    FAITHFULNESS_SCHEMA,
    JudgeVerdict,
    faithfulness_messages,
    judge_messages,
    parse_faithfulness,
    parse_verdict,
    verdict_schema,
)
from trace_assets.styles.library import Style, failed_format_checks
from trace_assets.tables import frame_of

# The format check that reads a GSM8K answer line; other tasks declare answers their own way.
ANSWER_CHECK = "answer_line"


def judge_requests(
    traces: pl.DataFrame, questions: dict[str, str], styles: dict[str, Style], model: str, sampling: Sampling, max_chars: int
) -> dict[str, Request]:
    """One judge request per trace id; traces over ``max_chars`` are shown cut (see ``judge_messages``)."""
    requests = {}
    schemas = {name: verdict_schema([item.id for item in style.spec.rubric]) for name, style in styles.items()}
    for trace in traces.iter_rows(named=True):
        messages = judge_messages(styles[trace["style"]], questions[trace["problem_id"]], trace["completion"], max_chars)
        schema = schemas[trace["style"]]
        requests[trace["trace_id"]] = Request(request_key(messages, model, sampling, schema), messages, schema)
    return requests


def faithfulness_requests(
    traces: pl.DataFrame, problems: dict[str, dict], model: str, sampling: Sampling, max_chars: int
) -> dict[str, Request]:
    """One request per paraphrase trace: does it follow the human solution's steps?"""
    requests = {}
    for trace in traces.filter(pl.col("kind") == "paraphrase").iter_rows(named=True):
        problem = problems[trace["problem_id"]]
        messages = faithfulness_messages(problem["question"], problem["reference_solution"], trace["completion"], max_chars)
        requests[trace["trace_id"]] = Request(
            request_key(messages, model, sampling, FAITHFULNESS_SCHEMA), messages, FAITHFULNESS_SCHEMA
        )
    return requests


def verdict_rows(
    traces: pl.DataFrame,
    styles: dict[str, Style],
    requests: dict[str, Request],
    completions: dict[tuple[str, int], Completion],
    judge_model: str,
    max_chars: int,
    faithful: dict[str, Request] | None = None,
    tasks: Mapping[str, str] | None = None,
) -> pl.DataFrame:
    """``faithful``: the faithfulness requests of paraphrase traces (see ``faithfulness_requests``);
    ``tasks``: problem id -> task (default gsm8k). A style's format check ``answer_line`` checks the
    form of a GSM8K answer; for other tasks the task's own reading takes its place: the trace must
    declare an answer in the form the task asks for (``strict_answer`` or ``label_answer``)."""
    faithful = faithful or {}
    tasks = tasks or {}
    rows = []
    for trace in traces.iter_rows(named=True):
        style = styles[trace["style"]]
        checks = list(style.spec.format_checks)
        task = tasks.get(trace["problem_id"], "gsm8k")
        if task != "gsm8k":
            checks = [check for check in checks if check.id != ANSWER_CHECK]
        rules_failed = failed_format_checks(trace["completion"], checks)
        if task != "gsm8k" and trace.get("strict_answer") is None and trace.get("label_answer") is None:
            rules_failed.append(ANSWER_CHECK)
        completion = completions.get((requests[trace["trace_id"]].key, 0))
        if completion is None:
            verdict = JudgeVerdict(False, None, (), "", error="judge generation failed")
        else:
            verdict = parse_verdict(completion.text, [item.id for item in style.spec.rubric])
        if checks:
            source = "both" if verdict.parsed else "rules"
        else:
            source = "judge"
        # An unparsable judge reply is never a pass, and neither is a verdict on a trace the judge saw only in part.
        truncated = len(trace["completion"]) > max_chars
        conforms = not rules_failed and verdict.parsed and bool(verdict.conforms) and not truncated
        rows.append(
            {
                "trace_id": trace["trace_id"],
                "problem_id": trace["problem_id"],
                "style": trace["style"],
                "kind": trace["kind"],
                "style_version": trace["style_version"],
                "completion": trace["completion"],
                "finish_reason": trace["finish_reason"],
                "n_tokens": trace["n_tokens"],
                "extracted_answer": trace["extracted_answer"],
                "is_correct": trace["is_correct"],
                "step_confidence": trace.get("step_confidence"),
                "mean_logprob": trace.get("mean_logprob"),
                "rules_failed": ",".join(rules_failed),
                "rules_pass": not rules_failed,
                "judge_parsed": verdict.parsed,
                "judge_conforms": verdict.conforms,
                "judge_failed": ",".join(verdict.failed_criteria),
                "judge_reason": verdict.reason,
                "judge_truncated": truncated,
                "judge_faithful": _faithful(faithful.get(trace["trace_id"]), completions, truncated),
                "judge_error": verdict.error,
                "judge_model": judge_model,
                "verdict_source": source,
                "conforms": conforms,
            }
        )
    return frame_of(rows, JudgedTraceSchema)


def _faithful(request: Request | None, completions: dict[tuple[str, int], Completion], truncated: bool) -> bool | None:
    """None for solve traces, unparsable replies, and paraphrases the judge saw only in part."""
    if request is None or truncated:
        return None
    completion = completions.get((request.key, 0))
    return parse_faithfulness(completion.text if completion else None)
