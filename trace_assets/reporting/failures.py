"""Failure taxonomy for wrong answers: reliable rule-based detectors first, the LLM judge for the rest."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import polars as pl

from trace_assets.answers import numbers_match, parse_number
from trace_assets.experiment import BASE_DATASET
from trace_assets.judging.verdicts import _first_json_object

RULE_CATEGORIES = ["loop_degeneration", "no_answer_format", "arithmetic_slip", "answer_overwritten"]
JUDGE_CATEGORIES = [
    "relation_inverted", "premise_forgotten", "intermediate_dropped", "scope_confused",
    "aggregation_error", "operation_omitted",
]
CATEGORIES = RULE_CATEGORIES + JUDGE_CATEGORIES + ["unclassified"]

_EXPRESSION = re.compile(
    r"(-?\d[\d,]*(?:\.\d+)?(?:\s*[-+*/x×÷]\s*-?\d[\d,]*(?:\.\d+)?)+)\s*=\s*\$?(-?\d[\d,]*(?:\.\d+)?)"
)
_RESULT = re.compile(r"=\s*\$?(-?\d[\d,]*(?:\.\d+)?)")


def arithmetic_slips(text: str) -> list[str]:
    """Expressions ``a op b ... = c`` in the text whose stated result is wrong."""
    slips = []
    for expression, stated in _EXPRESSION.findall(text):
        cleaned = expression.replace(",", "").replace("x", "*").replace("×", "*").replace("÷", "/")
        try:
            value = eval(cleaned, {"__builtins__": {}}, {})  # digits and + - * / only, matched above
        except (SyntaxError, ZeroDivisionError):
            continue
        result = parse_number(stated)
        if result is not None and abs(float(value) - float(result)) > 1e-6 * max(1.0, abs(float(value))):
            slips.append(f"{expression.strip()} = {stated}")
    return slips


def reached_then_overwritten(text: str, reference: str, final: str | None) -> bool:
    """The right value was computed at some point, but a different final answer was given."""
    if final is None or numbers_match(final, reference):
        return False
    return any(numbers_match(value, reference) for value in _RESULT.findall(text))


@dataclass(frozen=True)
class RuleVerdict:
    category: str | None
    evidence: str


def classify_by_rules(text: str, extracted: str | None, reference: str, degenerate: bool, hit_limit: bool) -> RuleVerdict:
    """The rule-based category of a wrong answer, or None when a judge has to decide."""
    if degenerate:
        return RuleVerdict("loop_degeneration", "repeated n-grams")
    if extracted is None:
        return RuleVerdict("no_answer_format", "hit the length limit" if hit_limit else "no number to extract")
    slips = arithmetic_slips(text)
    if slips:
        return RuleVerdict("arithmetic_slip", "; ".join(slips[:3]))
    if reached_then_overwritten(text, reference, extracted):
        return RuleVerdict("answer_overwritten", f"computed {reference} but answered {extracted}")
    return RuleVerdict(None, "")


FAILURE_SCHEMA = {
    "type": "object",
    "properties": {"category": {"type": "string", "enum": JUDGE_CATEGORIES}, "reason": {"type": "string", "maxLength": 100}},
    "required": ["category", "reason"],
    "additionalProperties": False,
}


def failure_judge_messages(question: str, reference_solution: str, completion: str) -> list[dict]:
    categories = ", ".join(JUDGE_CATEGORIES)
    return [
        {"role": "system", "content": "You diagnose why a student's solution to a math word problem got the wrong answer. "
         f"Pick one category from: {categories}. Reply with JSON only: "
         '{"category": "<one category>", "reason": "<a few words>"}'},
        {"role": "user", "content": f"Problem:\n{question}\n\nCorrect solution:\n{reference_solution}\n\n"
         f"Student's wrong solution:\n{completion[:3000]}"},
    ]


def parse_failure_category(text: str) -> tuple[str, str]:
    """(category, reason) from the judge; ``unclassified`` when its reply is not a valid category."""
    candidate = _first_json_object(text or "")
    try:
        data = json.loads(candidate) if candidate else None
    except json.JSONDecodeError:
        data = None
    if not isinstance(data, dict) or data.get("category") not in JUDGE_CATEGORIES:
        return "unclassified", "judge reply not a valid category"
    return data["category"], str(data.get("reason") or "")[:200]


def failure_changes(failure_modes: pl.DataFrame) -> pl.DataFrame:
    """Failure counts per dataset x student x category and their change against the untrained base student.

    Every category seen anywhere appears for every trained dataset, so a failure that disappears
    after training shows as a negative change rather than vanishing from the table.
    """
    counts = failure_modes.group_by(["student", "dataset", "category"]).agg(pl.len().cast(pl.Int64).alias("count"))
    trained = counts.filter(pl.col("dataset") != BASE_DATASET).select("student", "dataset").unique()
    grid = trained.join(counts.select("category").unique(), how="cross")
    base = counts.filter(pl.col("dataset") == BASE_DATASET).select("student", "category", pl.col("count").alias("base_count"))
    return (
        grid.join(counts, on=["student", "dataset", "category"], how="left")
        .join(base, on=["student", "category"], how="left")
        .with_columns(pl.col("count").fill_null(0), pl.col("base_count").fill_null(0))
        .with_columns((pl.col("count") - pl.col("base_count")).alias("change_vs_base"))
        .sort(["student", "dataset", "category"])
    )
