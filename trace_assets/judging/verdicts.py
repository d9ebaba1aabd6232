"""The LLM judge's prompt and schema, and robust parsing of what it answers: pure functions."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from trace_assets.styles.library import Style


def verdict_schema(criteria_ids: list[str]) -> dict:
    """The judge's JSON schema for one style: failed criteria can only be that style's rubric ids.

    Without the enum a small judge fills the list with free text until it hits max_tokens, and a
    truncated reply is unparsable: measured on the smoke run, 81 of 100 verdicts were lost that way.
    """
    return {
        "type": "object",
        "properties": {
            "conforms": {"type": "boolean"},
            "failed_criteria": {
                "type": "array",
                "items": {"type": "string", "enum": criteria_ids},
                "maxItems": len(criteria_ids),
            },
            "reason": {"type": "string", "maxLength": 120},
        },
        "required": ["conforms", "failed_criteria", "reason"],
        "additionalProperties": False,
    }


VERDICT_SCHEMA = verdict_schema(["criterion"])  # the generic shape, for tests and backends


def judge_char_budget(max_model_len: int, max_output_tokens: int, prompt_tokens: int = 512, chars_per_token: int = 3) -> int:
    """How many characters of a trace fit the judge's context beside its instructions and reply
    (a conservative 3 characters per token)."""
    return max(1000, (max_model_len - max_output_tokens - prompt_tokens) * chars_per_token)


def judge_messages(style: Style, question: str, completion: str, max_chars: int) -> list[dict]:
    """The judge sees the whole trace when it fits ``max_chars``; a longer one is cut, marked as cut,
    and (see ``verdict_rows``) can never pass."""
    criteria = "\n".join(f"- {item.id}: {item.text}" for item in style.spec.rubric)
    shown = completion if len(completion) <= max_chars else completion[:max_chars] + "\n[...truncated]"
    return [
        {
            "role": "system",
            "content": "You check whether a worked solution follows a required writing style. "
            "Judge the style only, not whether the maths is right. Reply with JSON only, in this form: "
            '{"conforms": <true if every criterion is met, else false>, "failed_criteria": [<ids of unmet criteria>], '
            '"reason": "<why, in a few words>"}',
        },
        {
            "role": "user",
            "content": f"Style criteria:\n{criteria}\n\nProblem:\n{question.strip()}\n\nSolution to judge:\n{shown}",
        },
    ]


FAITHFULNESS_SCHEMA = {
    "type": "object",
    "properties": {"faithful": {"type": "boolean"}, "reason": {"type": "string", "maxLength": 100}},
    "required": ["faithful", "reason"],
    "additionalProperties": False,
}


def faithfulness_messages(question: str, reference_solution: str, paraphrase: str, max_chars: int) -> list[dict]:
    """Asks whether a paraphrase of the human solution follows its steps, rather than solving afresh."""
    shown = paraphrase if len(paraphrase) <= max_chars else paraphrase[:max_chars] + "\n[...truncated]"
    return [
        {
            "role": "system",
            "content": "You check whether a rewritten solution follows the same reasoning steps as an original one: "
            "the same intermediate quantities, computed in the same order from the same facts. Wording, layout and "
            "extra explanation may differ; a different method does not count. Reply with JSON only: "
            '{"faithful": <true or false>, "reason": "<a few words>"}',
        },
        {
            "role": "user",
            "content": f"Problem:\n{question.strip()}\n\nOriginal solution:\n{reference_solution.strip()}"
            f"\n\nRewritten solution:\n{shown}",
        },
    ]


def json_reply(text: str | None) -> dict | None:
    """The first JSON object in a model's reply, when there is one and it parses; else None."""
    candidate = _first_json_object(text or "")
    try:
        data = json.loads(candidate) if candidate else None
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def parse_faithfulness(text: str | None) -> bool | None:
    """The judge's faithfulness verdict; None when the reply is not a well-formed one."""
    data = json_reply(text)
    return _as_bool(data.get("faithful")) if data is not None else None


@dataclass(frozen=True)
class JudgeVerdict:
    parsed: bool
    conforms: bool | None
    failed_criteria: tuple[str, ...]
    reason: str
    error: str | None = None


def _first_json_object(text: str) -> str | None:
    """The first balanced {...} in text (models wrap JSON in prose or code fences)."""
    start = text.find("{")
    while start != -1:
        depth, in_string, escaped = 0, False, False
        for index in range(start, len(text)):
            char = text[index]
            if in_string:
                escaped = char == "\\" and not escaped
                if char == '"' and not escaped:
                    in_string = False
                continue
            if char == '"':
                in_string = True
            elif char == "{":
                depth += 1
            elif char == "}":
                depth -= 1
                if depth == 0:
                    return text[start : index + 1]
        start = text.find("{", start + 1)
    return None


def _as_bool(value) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in {"true", "yes", "false", "no"}:
        return value.strip().lower() in {"true", "yes"}
    return None


def parse_verdict(text: str, criteria_ids: list[str]) -> JudgeVerdict:
    """Parse a judge reply; anything not a well-formed verdict is ``parsed=False`` (never a pass)."""
    candidate = _first_json_object(text or "")
    if candidate is None:
        return JudgeVerdict(False, None, (), "", error="no JSON object in judge output")
    try:
        data = json.loads(candidate)
    except json.JSONDecodeError as error:
        return JudgeVerdict(False, None, (), "", error=f"invalid JSON: {error.msg}")
    conforms = _as_bool(data.get("conforms")) if isinstance(data, dict) else None
    if conforms is None:
        return JudgeVerdict(False, None, (), "", error="'conforms' missing or not a boolean")
    failed = data.get("failed_criteria") or []
    if not isinstance(failed, list):
        failed = [failed]
    known = tuple(str(item) for item in failed if str(item) in criteria_ids)
    reason = re.sub(r"\s+", " ", str(data.get("reason") or ""))[:300]
    # A judge that names failed criteria but says it conforms contradicts itself: trust the criteria.
    return JudgeVerdict(True, conforms and not known, known, reason)
