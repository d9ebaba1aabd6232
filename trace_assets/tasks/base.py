"""What every task provides, and all that is task-specific: its settings, a problem source, dry-run
sizes, a prompt instruction for its final answer, a reader of final answers, a verifier and the
failure categories that make sense for it.

A task is a plug-in behind :class:`Task`, registered by one line in :mod:`trace_assets.tasks.registry`;
the graph (problems -> traces -> datasets -> checkpoints -> evaluations -> report), the recipes'
eligibility and contrast rules and the statistics are the same for every task. Only these points differ:

- ``settings``: the keys of the experiment's ``problems:`` section the task owns, each with its type
  and default (a pydantic section, validated with the rest of the file), and ``check_settings``: the
  checks across keys (a ``ValueError`` names what is wrong);
- ``load``: the task's train and test problems as ``problems`` rows (``ProblemSchema``; the question
  text already carries the task's answer instruction, so teacher, judge and student all see it);
- ``check_problems``: reads or generates the problems as a run would, before any work starts, and
  returns the train problems a run samples (a :class:`~trace_assets.settings.SettingsError` names the key);
- ``full_sizes``: the (train, test) sizes dry-run assumes when ``n_train`` / ``n_test`` are null;
- ``read``: the answers a completion declares (an :class:`~trace_assets.answers.Extraction`:
  ``strict`` is the form the task's instruction asks for, ``label`` an ``ANSWER:`` line,
  ``flexible`` a looser reading, ``declared_answers`` every declaration in order);
- ``check``: whether one answer is right for a problem, with the reason (:class:`Check`);
- ``failure_rule``: the failure category the verifier's reason already decides, if any.
- ``reference_note``: what the reference solutions (recipe H) are where they are no human's worked solution
  (Countdown: the generator's step lines; MBPP: bare code), which the report says beside the task's results.

Model output is untrusted: every reader and verifier returns a failed :class:`Check` for empty,
malformed, huge or hostile answers and never raises.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from trace_assets.answers import ANSWER_LABEL, Extraction
from trace_assets.problems.records import LoadReport


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
    # What the reference solutions (recipe H's examples) are where they are not a human's worked solution;
    # "" where they are. The report says it beside the task's results.
    reference_note: str
    # Whether two questions that differ only in their numbers are the same problem (contamination check).
    numbers_matter: bool
    # Whether the failure judge is asked about this task's wrong answers: False where the verifier's
    # failure_rule decides every wrong answer's category (dry-run counts judge calls by it).
    judges_wrong_answers: bool
    # Whether reference answers are canonical numbers (the problems table checks their form).
    numeric_answers: bool
    # The keys of the experiment's `problems:` section this task owns: key -> (type, default).
    settings: Mapping[str, tuple[Any, Any]]

    # ``problems`` below is the experiment's validated ``problems:`` section (experiment.ProblemsConfig):
    # ``tasks``, ``n_train``, ``n_test`` and every task's settings as attributes.
    def check_settings(self, problems: Any) -> None: ...

    def load(self, problems: Any, seed: int, report: LoadReport) -> dict[str, list[dict]]: ...

    def check_problems(self, problems: Any, seed: int) -> int: ...

    def full_sizes(self, problems: Any) -> tuple[int, int]: ...

    def read(self, completion: str | None) -> Extraction: ...

    def check(self, answer: str | None, problem: Mapping) -> Check: ...

    def failure_rule(self, check: Check) -> tuple[str, str] | None: ...


def sizes(task: Task, problems: Any) -> tuple[int, int]:
    """The train and test problems a run asks of ``task``: ``n_train`` / ``n_test``, or the task's full sizes."""
    full_train, full_test = task.full_sizes(problems)
    return problems.n_train or full_train, problems.n_test or full_test


def require_section(problems: Any, name: str) -> None:
    """A task that reads its own JSONL files needs its section (``train``, ``test``) under ``problems``."""
    if getattr(problems, name, None) is None:
        raise ValueError(f"task '{name}' needs a '{name}' section with 'train' and 'test' JSONL file paths")


def metadata(problem: Mapping) -> dict:
    """The task-specific fields of a ``problems`` row (``task_metadata`` JSON)."""
    text = problem.get("task_metadata") or "{}"
    return json.loads(text)


# --------------------------------------------------------------------------------------------------
# Reading "#### <answer>" / "ANSWER: <answer>" lines whose answer is not a number.

MAX_ANSWER_CHARS = 2_000  # a declared answer longer than this is not read (and scores as not declared)
_SCAN_CHARS = 100_000
_HASH_LINE = re.compile(r"^[ \t>*_]*(?:\*\*)?(?<!#)####(?!#)[ \t]*(?P<answer>[^\n]*)$", re.MULTILINE)
_LABEL_LINE = re.compile(ANSWER_LABEL + r"(?P<answer>[^\n]*)$", re.MULTILINE | re.IGNORECASE)
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
