"""MATH (competition mathematics): problems in the MATH format from local JSONL or a hub dataset, answers
compared by symbolic equivalence with Hugging Face's math-verify.

A record is ``{"problem": ..., "solution": "... \\boxed{<answer>} ...", "level": "Level 3", "type":
"Algebra"}``; the reference answer is the solution's last ``\\boxed{}``, ``difficulty`` its level.
The model declares its answer on a ``#### <answer>`` line (an ``ANSWER:`` line or a last
``\\boxed{}`` also count). math-verify parses both sides with SymPy and compares them; its own
timeouts use ``signal.alarm``, which works only in the main thread, so elsewhere an answer that
could make SymPy compute without end (exponent towers, factorials, long digit runs) is refused
before it is parsed, and scored as unverifiable.
"""

from __future__ import annotations

import functools
import json
import re
import threading
from collections.abc import Mapping
from typing import Any

from trace_assets.answers import Extraction
from trace_assets.problems.records import (
    LoadReport,
    count_jsonl,
    json_object,
    problem_id,
    read_hub_splits,
    read_jsonl_splits,
)
from trace_assets.settings import HubSource, JsonlSource
from trace_assets.tasks.base import Check, line_extraction, require_section

INSTRUCTION = (
    'Give the final answer on its own last line as "#### <answer>", in LaTeX where needed (for example "#### \\frac{3}{4}").'
)
MAX_ANSWER_CHARS = 300  # longest answer handed to math-verify
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_RISKY = re.compile(r"\^\s*\{?[^}]*\^|\^\s*\{\s*\d{3,}|!|\d{30,}|\\underbrace|\\overbrace")
_LEVEL = re.compile(r"^\s*(?:level\s*)?([0-9])\s*$", re.IGNORECASE)


def last_boxed(text: str | None) -> str | None:
    """The content of the last ``\\boxed{...}`` (braces matched), or None."""
    text = text or ""
    found = None
    for match in _BOXED.finditer(text):
        depth, index = 1, match.end()
        while index < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[index], 0)
            index += 1
        if depth == 0:
            found = text[match.end() : index - 1].strip()
    return found or None


def _latex(answer: str) -> str:
    answer = answer.strip()
    return answer if "$" in answer or "\\boxed" in answer or "\\(" in answer else f"${answer}$"


def _parse(latex: str):
    from math_verify import LatexExtractionConfig, parse

    main_thread = threading.current_thread() is threading.main_thread()
    # LaTeX extraction only: math-verify's ExprExtractionConfig hands text to SymPy's parse_expr, an eval.
    return parse(
        latex,
        extraction_config=[LatexExtractionConfig(boxed_match_priority=0)],
        fallback_mode="no_fallback",  # text that is no mathematics is unparsable, not compared as a string
        parsing_timeout=1 if main_thread else None,  # signal.alarm only works in the main thread
    )


@functools.lru_cache(maxsize=4096)
def _gold(answer: str):
    return _parse(_latex(answer))


def equivalent(answer: str | None, reference: str) -> Check:
    """Whether ``answer`` is symbolically equal to ``reference`` (LaTeX), by math-verify."""
    if answer is None or not answer.strip():
        return Check(False, "no_answer")
    if len(answer) > MAX_ANSWER_CHARS:
        return Check(False, f"unparsable_answer: longer than {MAX_ANSWER_CHARS} characters")
    main_thread = threading.current_thread() is threading.main_thread()
    if not main_thread and _RISKY.search(answer):
        return Check(False, "unparsable_answer: not verified off the main thread (exponent tower, factorial or huge number)")
    from math_verify import verify

    try:
        gold = _gold(reference)
        predicted = _parse(_latex(answer))
        if not predicted:
            return Check(False, f"unparsable_answer: math-verify read nothing from {answer[:60]!r}")
        same = verify(gold, predicted, timeout_seconds=1 if main_thread else None)
    except Exception as error:  # math-verify and SymPy raise many kinds on hostile input
        return Check(False, f"unparsable_answer: {type(error).__name__}")
    return Check(True, "ok") if same else Check(False, f"wrong_value: {answer[:60]} is not {reference[:60]}")


MATH_KEYS = "'problem', 'solution', 'level' and 'type'"


def math_row(record: dict, split: str, source: str) -> dict:
    """One MATH-format record (a JSONL line's object or a hub row) as a problem row; ValueError saying what is
    wrong with it."""
    missing = [key for key in ("problem", "solution", "type") if not isinstance(record.get(key), str) or not record[key].strip()]
    if missing:
        raise ValueError(f"missing, empty or non-string key(s) {missing}; expected {MATH_KEYS}")
    level = _LEVEL.match(str(record.get("level", "")))
    if level is None:
        raise ValueError(f"'level' must be 'Level N' or N with N a digit (got {str(record.get('level'))[:40]!r})")
    answer = last_boxed(record["solution"])
    if answer is None:
        raise ValueError("the solution has no \\boxed{...} final answer (MATH format)")
    question = f"{record['problem'].strip()}\n\n{INSTRUCTION}"
    return {
        "problem_id": problem_id(question, "math"),
        "split": split,
        "question": question,
        "reference_solution": f"{record['solution'].strip()}\n#### {answer}",
        "answer": answer,
        "difficulty": int(level.group(1)),
        "source": source,
        "task": "math",
        "task_metadata": json.dumps({"level": int(level.group(1)), "type": record["type"].strip()}),
    }


def parse_math_record(text: str, split: str) -> dict:
    """One MATH-format JSONL line as a problem row; ValueError saying what is wrong with it."""
    return math_row(json_object(text, MATH_KEYS), split, "jsonl")


class MathTask:
    name = "math"
    instruction = INSTRUCTION
    failure_categories: tuple[str, ...] = ("unparsable_answer",)
    reference_note = ""  # MATH's solutions are human-written
    numbers_matter = False
    judges_wrong_answers = True  # only an unreadable answer is the verifier's; a wrong one is judged
    numeric_answers = False
    # MATH-format train and test files, or a hub dataset of MATH's columns
    settings: Mapping[str, tuple[Any, Any]] = {"math": (JsonlSource | HubSource | None, None)}

    def check_settings(self, problems) -> None:
        require_section(problems, self.name)

    def load(self, problems, seed: int, report: LoadReport) -> dict[str, list[dict]]:
        if isinstance(problems.math, HubSource):
            return read_hub_splits(problems.math, report, functools.partial(math_row, source="hub"))
        expected = "'problem', 'solution' (with \\boxed{}), 'level' and 'type' (MATH format)"
        return read_jsonl_splits(problems.math, report, parse_math_record, expected)

    def check_problems(self, problems, seed: int) -> int:
        """The hub is not read here (it may need the network); local files are."""
        if isinstance(problems.math, HubSource):
            return problems.n_train or self.full_sizes(problems)[0]
        return count_jsonl(problems.math, "math", problems.n_train, parse_math_record, "the MATH format's keys")

    def full_sizes(self, problems) -> tuple[int, int]:
        return 7500, 5000  # the MATH release

    def read(self, completion: str | None) -> Extraction:
        return line_extraction(completion, flexible=last_boxed((completion or "")[-2000:]))

    def check(self, answer: str | None, problem: Mapping) -> Check:
        return equivalent(answer, problem["answer"])

    def failure_rule(self, check: Check) -> tuple[str, str] | None:
        return ("unparsable_answer", check.reason) if check.code == "unparsable_answer" else None
