"""Which teacher traces an arm may use, and which one it takes: pure functions.

- One eligibility policy for every synthetic arm (``policy_reason``): not truncated, a final
  answer declared in the style's own format and never changed, a parseable judge verdict and,
  where the experiment requires it, conformance. G and W then differ only in whether the declared
  answer is right.
- One ranking of the samples of each (seed, style, kind, problem) (``rank_key``): it never sees a
  dataset's name, so every arm that needs "a trace of this style for this problem" takes the same one.
- The faithfulness rule of H_style paraphrases (``paraphrase_coverage``).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Literal

from trace_assets.answers import Declared, answer_region, canonical_number, declarations
from trace_assets.experiment import EligibilityPolicy
from trace_assets.tasks import task_of

AnswerFormat = Literal["hash", "label"]

# A number as written in a trace: optional $, thousands separators, decimals. Signs are left out when
# reading numbers in running text ("63-20=43" is not -20); an answer line keeps its sign.
UNSIGNED = r"\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
_NUMBER_RE = re.compile(r"(?<![\w.])" + UNSIGNED)
_ANSWER_NUMBER = r"-?" + UNSIGNED + r"(?:\s*/\s*\d+)?"
# "the answer is 7", "final answer: 7", \boxed{7}: a restatement that counts when it follows a declaration.
_ANSWER_PHRASE = re.compile(
    r"(?:\\boxed\{\s*("
    + _ANSWER_NUMBER
    + r")\s*\}|(?:final answer|the answer)\s*(?:is|:|=|should be|would be)\s*\**\s*("
    + _ANSWER_NUMBER
    + r"))",
    re.IGNORECASE,
)
POLICY_REASONS = ("truncated", "no_declared_answer", "answer_changed", "judge_unparsable", "not_conforming")


@dataclass(frozen=True)
class Declaration:
    """The final answers a trace declares."""

    values: tuple[str | None, ...]  # canonical values of the answer lines in the style's own format, in order;
    # None for one whose answer is not a number (``#### 3:30``), so that ``final`` is None as extract_strict's is
    other_values: tuple[str, ...]  # answer lines in the other format, and answer phrases after the first declaration
    first_start: int | None  # where the first answer line (either format) starts
    last_line: str | None  # the last answer line in the style's format, as written

    @property
    def final(self) -> str | None:
        return self.values[-1] if self.values else None

    @property
    def changed(self) -> bool:
        return len({v for v in self.values if v is not None} | set(self.other_values)) > 1


KIND_OF_FORMAT: dict[AnswerFormat, str] = {"hash": "strict", "label": "label"}
"""The kind of :func:`trace_assets.answers.declarations` that an answer format writes."""


def answer_lines(text: str, answer_format: AnswerFormat) -> list[Declared]:
    """The declarations of ``text`` in ``answer_format``, read by answers.py's one reader."""
    return [d for d in declarations(text) if d.kind == KIND_OF_FORMAT[answer_format]]


def declared_answers(text: str, answer_format: AnswerFormat) -> Declaration:
    """The answers ``text`` declares in ``answer_format`` (``hash``: ``#### N``; ``label``: ``ANSWER: N``),
    read as answers.py reads them (so ``final`` is ``extract_strict`` / ``extract_label``), plus any declared
    in the other format or restated ("the answer is N") after the first declaration and before a new turn
    (``answers.answer_region``), which reveal an answer that changed."""
    text = text or ""
    found = declarations(text)
    own = [d for d in found if d.kind == KIND_OF_FORMAT[answer_format]]
    others = [d.value for d in found if d.kind != KIND_OF_FORMAT[answer_format]]
    first = found[0].line_start if found else None
    if first is not None:
        for match in _ANSWER_PHRASE.finditer(text, first, answer_region(text)[1]):
            others.append(canonical_number(match.group(1) or match.group(2)))
    return Declaration(
        values=tuple(d.value for d in own),
        other_values=tuple(v for v in others if v is not None),
        first_start=first,
        last_line=own[-1].line.strip() if own else None,
    )


def task_declaration(text: str, problem: dict, require_declared: bool) -> tuple[Declaration, str | None, bool]:
    """(declaration, final answer, correct) of a trace for a task other than gsm8k, read and verified by
    the task: its declared answers (``####`` / ``ANSWER:`` lines, MBPP's last code block), the last
    declared one as final (the looser reading when the policy allows undeclared answers)."""
    task = task_of(problem)
    extraction = task.read(text)
    final = extraction.strict or extraction.label
    if final is None and not require_declared:
        final = extraction.flexible
    correct = final is not None and task.check(final, problem).correct
    declaration = Declaration(values=extraction.declared_answers, other_values=(), first_start=None, last_line=None)
    return declaration, final, correct


def answer_line(value: str, answer_format: AnswerFormat) -> str:
    return f"#### {value}" if answer_format == "hash" else f"ANSWER: {value}"


def numbers_in(text: str) -> list[tuple[int, int, str]]:
    """(start, end, canonical value) of every number written in ``text``, without sign."""
    found = []
    for match in _NUMBER_RE.finditer(text or ""):
        value = canonical_number(match.group(0))
        if value is not None:
            found.append((match.start(), match.end(), value))
    return found


def rank_key(seed: int, style: str | None, kind: str, problem_id: str, trace_id: str) -> str:
    """The place of a sample in its (seed, style, kind, problem) ranking: lower is taken first.
    Built from the trace's identity only, never from a dataset's name."""
    return hashlib.sha1(f"{seed}:{style}:{kind}:{problem_id}:{trace_id}".encode()).hexdigest()


def problem_key(seed: int, purpose: str, problem_id: str) -> str:
    """A seeded order of problems for ``purpose`` (flaw order, token-matching order)."""
    return hashlib.sha1(f"{seed}:{purpose}:{problem_id}".encode()).hexdigest()


def policy_reason(trace: dict, declaration: Declaration, policy: EligibilityPolicy) -> str | None:
    """The first check of the eligibility policy that ``trace`` (a judged_traces row) fails, or None.
    The same function for every arm, so G, W and H_style filter identically."""
    if policy.exclude_truncated and trace["finish_reason"] == "length":
        return "truncated"
    if policy.require_declared_answer and declaration.final is None:
        return "no_declared_answer"
    if policy.exclude_changed_answer and declaration.changed:
        return "answer_changed"
    if policy.require_judge_verdict and not trace["judge_parsed"]:
        return "judge_unparsable"
    if policy.require_conformance and not trace["conforms"]:
        return "not_conforming"
    return None


def intermediate_quantities(solution: str, question: str) -> set[str]:
    """The quantities a human solution computes: the result of every calculation in its reasoning
    (the number after an ``=``, before ``####``); for a solution without any ``=``, the numbers it
    writes that the question does not give."""
    body = (solution or "").split("####", 1)[0]
    numbers = numbers_in(body)
    results = {value for start, _, value in numbers if body[:start].rstrip().endswith("=")}
    if results:
        return results
    given = {value for _, _, value in numbers_in(question)}
    return {value for _, _, value in numbers if value not in given}


def paraphrase_coverage(paraphrase: str, solution: str, question: str) -> tuple[float, list[str]]:
    """Share of the human solution's intermediate quantities that the paraphrase writes, and those it misses."""
    needed = intermediate_quantities(solution, question)
    if not needed:
        return 1.0, []
    written = {value for _, _, value in numbers_in(paraphrase)}
    missing = sorted(needed - written)
    return 1 - len(missing) / len(needed), missing
