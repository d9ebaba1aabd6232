"""What every task provides: a problem source, a prompt instruction for its final answer, a reader
of final answers, a verifier and the failure categories that make sense for it.

A task is a plug-in behind :class:`Task`; the graph (problems -> traces -> datasets -> checkpoints
-> evaluations -> report), the recipes' eligibility and contrast rules and the statistics are the
same for every task. Only these points differ:

- ``load``: the task's train and test problems as ``problems`` rows (``ProblemSchema``; the question
  text already carries the task's answer instruction, so teacher, judge and student all see it);
- ``read``: the answers a completion declares (an :class:`~trace_assets.answers.Extraction`:
  ``strict`` is the form the task's instruction asks for, ``label`` an ``ANSWER:`` line,
  ``flexible`` a looser reading, ``declared_answers`` every declaration in order);
- ``check``: whether one answer is right for a problem, with the reason (:class:`Check`);
- ``failure_rule``: the failure category the verifier's reason already decides, if any.

Model output is untrusted: every reader and verifier returns a failed :class:`Check` for empty,
malformed, huge or hostile answers and never raises.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from trace_assets.answers import Extraction

if TYPE_CHECKING:
    from trace_assets.experiment import ProblemsConfig
    from trace_assets.problems.sources import LoadReport


@dataclass(frozen=True)
class Check:
    """A verifier's verdict on one answer: right or not, and why (a short code, then details)."""

    correct: bool
    reason: str  # "ok", or what was wrong: "wrong_value: 74 != 75", "test_failed: assert f(2) == 4", ...

    @property
    def code(self) -> str:
        """The reason's code: the part before the first colon."""
        return self.reason.split(":", 1)[0]


class Task(Protocol):
    name: str
    instruction: str  # the answer-format instruction appended to every question ("" for gsm8k)
    # Failure categories this task's verifier decides by itself, beyond the shared ones.
    failure_categories: tuple[str, ...]
    # Whether two questions that differ only in their numbers are the same problem (contamination check).
    numbers_matter: bool

    def load(self, settings: ProblemsConfig, seed: int, report: LoadReport) -> dict[str, list[dict]]: ...

    def read(self, completion: str | None) -> Extraction: ...

    def check(self, answer: str | None, problem: Mapping) -> Check: ...

    def failure_rule(self, check: Check) -> tuple[str, str] | None: ...


def metadata(problem: Mapping) -> dict:
    """The task-specific fields of a ``problems`` row (``task_metadata`` JSON)."""
    text = problem.get("task_metadata") or "{}"
    return json.loads(text)


# --------------------------------------------------------------------------------------------------
# Reading "#### <answer>" / "ANSWER: <answer>" lines whose answer is not a number.

MAX_ANSWER_CHARS = 2_000  # a declared answer longer than this is not read (and scores as not declared)
_SCAN_CHARS = 100_000
_HASH_LINE = re.compile(r"^[ \t>*_]*(?:\*\*)?(?<!#)####(?!#)[ \t]*(?P<answer>[^\n]*)$", re.MULTILINE)
_LABEL_LINE = re.compile(
    r"^[ \t>*_-]*(?:\*\*|__)?ANSWER[ \t]*(?:\*\*|__)?[ \t]*:(?P<answer>[^\n]*)$", re.MULTILINE | re.IGNORECASE
)
_DECORATION = re.compile(r"^(?:\*\*|__|`)+|(?:\*\*|__|`)+$")


def _clean(answer: str) -> str | None:
    answer = _DECORATION.sub("", answer.strip()).strip()
    answer = answer.rstrip(".").strip() if not answer.endswith("..") else answer
    if not answer or len(answer) > MAX_ANSWER_CHARS:
        return None
    return answer


def line_declarations(text: str | None) -> list[tuple[str, str]]:
    """``(kind, answer)`` for every ``#### X`` ("strict") and ``ANSWER: X`` ("label") line, in order."""
    region = (text or "")[-_SCAN_CHARS:]
    found = [(m.start(), "strict", m["answer"]) for m in _HASH_LINE.finditer(region)]
    found += [(m.start(), "label", m["answer"]) for m in _LABEL_LINE.finditer(region)]
    declarations = []
    for _, kind, raw in sorted(found):
        answer = _clean(raw)
        if answer is not None:
            declarations.append((kind, answer))
    return declarations[-64:]


def line_extraction(text: str | None, flexible: str | None = None) -> Extraction:
    """An :class:`Extraction` from the answer lines: the last ``####`` and the last ``ANSWER:`` line."""
    declarations = line_declarations(text)
    strict = next((a for kind, a in reversed(declarations) if kind == "strict"), None)
    label = next((a for kind, a in reversed(declarations) if kind == "label"), None)
    return Extraction(strict=strict, label=label, flexible=flexible, declared_answers=tuple(a for _, a in declarations))
