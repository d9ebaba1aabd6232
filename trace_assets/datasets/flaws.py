"""Flawed versions of a correct trace, for the mixtures: declared procedures with a check.

- ``wrong``: the style's own wrong-answer trace for the same problem (the one the W arm takes).
- ``corrupted``: the correct trace with an arithmetic slip in the calculation that first yields
  the final answer: that result, and every later mention of it (the answer line included), become
  a wrong value, so the error is carried through to a wrong final answer.
- ``complete``: the correct trace with every calculation step corrupted (an operand, the operator
  and the result of each) and a wrong final answer (``degrade`` at level 1.0); with a ``flaw_level``
  below 1, a share of the steps (the degradation ladder).

Whichever flaw the result must pass ``is_flawed_version``: its reasoning differs from the source's and
its declared final answer is a single wrong one. A candidate that fails is not used.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from fractions import Fraction

from trace_assets.answers import canonical_number, numbers_match, parse_number
from trace_assets.datasets.selection import UNSIGNED, AnswerFormat, answer_lines, declared_answers, numbers_in

_WHITESPACE = re.compile(r"\s+")


def reasoning(text: str, answer_format: AnswerFormat) -> str:
    """The trace without its answer lines, whitespace folded: what "differs in reasoning" compares."""
    text = text or ""
    pieces, position = [], 0
    for line in answer_lines(text, answer_format):  # in order; two declarations on one line share it
        pieces.append(text[position : line.line_start])
        position = max(position, line.line_end)
    pieces.append(text[position:])
    return _WHITESPACE.sub(" ", "".join(pieces)).strip()


def is_flawed_version(source: str, flawed: str, reference_answer: str, answer_format: AnswerFormat) -> bool:
    """``flawed`` differs from ``source`` in its reasoning and declares one final answer, which is wrong."""
    declaration = declared_answers(flawed, answer_format)
    return (
        declaration.final is not None
        and not declaration.changed
        and not numbers_match(declaration.final, reference_answer)
        and reasoning(flawed, answer_format) != reasoning(source, answer_format)
    )


def _format(value: Fraction) -> str:
    if value.denominator == 1:
        return str(value.numerator)
    return canonical_number(f"{float(value):.6f}") or str(float(value))


def corrupt_final_step(text: str, final_answer: str, answer_format: AnswerFormat, rng: random.Random) -> str | None:
    """The trace with the first calculation that yields ``final_answer`` (``... = N``) given a wrong
    result, carried into every later mention of N; None when no calculation yields the final answer
    (or it is negative)."""
    value = parse_number(final_answer)
    if value is None or value < 0:
        return None
    mentions = numbers_in(text)
    first = next((start for start, _, number in mentions if number == final_answer and text[:start].rstrip().endswith("=")), None)
    if first is None:
        return None
    delta = max(1, round(abs(float(value)) * rng.uniform(0.1, 0.3)))
    wrong = value + delta if value - delta < 0 or rng.random() < 0.5 else value - delta
    written = _format(wrong)
    pieces, position = [], 0
    for start, end, number in mentions:
        if start >= first and number == final_answer:
            digits = start + 1 if text[start] == "$" else start
            pieces += [text[position:digits], written]
            position = end
    return "".join(pieces) + text[position:]


# A calculation as traces write it: operands (optionally in parentheses) joined by + - * / × ÷ or a
# spaced "x", then "=" and a result: "3*4=12", "$5 x 3 = $15", "C2: (12 + 5) / 2 = 8.5".
_OPERATOR = r"(?:[-+*/×÷]|(?<=\s)x(?=\s))"
_TERM = r"\(*\s*" + UNSIGNED + r"\s*\)*"
_CALCULATION_RE = re.compile(
    r"(?<![\w.])(?P<expression>" + _TERM + r"(?:\s*" + _OPERATOR + r"\s*" + _TERM + r")+)\s*=\s*(?P<result>" + UNSIGNED + r")"
)
_OPERATOR_RE = re.compile(_OPERATOR)
_OPERATORS = ("+", "-", "*", "/")
_CANONICAL_OPERATOR = {"×": "*", "x": "*", "÷": "/"}

Span = tuple[int, int]


@dataclass(frozen=True)
class Calculation:
    """One calculation step of a trace: where its operands, operators and result are written."""

    operands: tuple[tuple[int, int, str], ...]  # (start, end, canonical value)
    operators: tuple[tuple[int, int, str], ...]  # (start, end, symbol as written)
    result: tuple[int, int, str]


def calculations(text: str | None) -> list[Calculation]:
    """Every calculation step written in ``text`` (``a op b [op c ...] = r``), in order."""
    found = []
    for match in _CALCULATION_RE.finditer(text or ""):
        start = match.start("expression")
        expression = match.group("expression")
        operands = tuple((start + s, start + e, value) for s, e, value in numbers_in(expression))
        operators = tuple((start + m.start(), start + m.end(), m.group(0)) for m in _OPERATOR_RE.finditer(expression))
        result = canonical_number(match.group("result"))
        if operands and operators and result is not None:
            found.append(Calculation(operands, operators, (match.start("result"), match.end("result"), result)))
    return found


def _wrong_value(value: Fraction, rng: random.Random) -> Fraction:
    """A non-negative value other than ``value``, off by 10-50% of it (at least 1)."""
    delta = max(1, round(abs(float(value)) * rng.uniform(0.1, 0.5)))
    return value + delta if value - delta < 0 or rng.random() < 0.5 else value - delta


def _written(text: str, span: Span, value: Fraction) -> str:
    """``value`` written where ``span`` held a number, keeping its dollar sign."""
    return ("$" if text[span[0]] == "$" else "") + _format(value)


def _corrupt_operation(text: str, operands, operators, rng: random.Random) -> dict[Span, str]:
    """Edits that give one operand a wrong value and turn one operator into another."""
    start, end, value = rng.choice(operands)
    op_start, op_end, symbol = rng.choice(operators)
    current = _CANONICAL_OPERATOR.get(symbol, symbol)
    return {
        (start, end): _written(text, (start, end), _wrong_value(Fraction(value), rng)),
        (op_start, op_end): rng.choice([op for op in _OPERATORS if op != current]),
    }


def _corrupt_step(text: str, step: Calculation, rng: random.Random) -> dict[Span, str]:
    """Edits that corrupt one step throughout: an operand, an operator and the result all change."""
    edits = _corrupt_operation(text, step.operands, step.operators, rng)
    start, end, value = step.result
    edits[(start, end)] = _written(text, (start, end), _wrong_value(Fraction(value), rng))
    return edits


def _apply(text: str, edits: dict[Span, str]) -> str:
    pieces, position = [], 0
    for (start, end), replacement in sorted(edits.items()):
        if start < position:  # overlaps an edit already made (cannot happen with number/operator spans)
            continue
        pieces += [text[position:start], replacement]
        position = end
    return "".join(pieces) + text[position:]


def degrade(text: str | None, final_answer: str | None, level: float, seed: str) -> str | None:
    """The trace with ``ceil(level x steps)`` of its calculation steps corrupted and a wrong final answer;
    ``level`` 1.0 is the completely flawed trace (every step corrupted). None when the trace has no
    calculation step or no final answer, or its final answer is a negative number (not usable).

    - A corrupted step gets a wrong value in one operand, another operator and a wrong result.
    - Which steps: the last step that yields the final answer is corrupted first, then the others in
      an order seeded by ``seed``; each step's corruption is seeded by ``seed`` and its position alone,
      so the steps corrupted at a lower level are corrupted identically at every higher one (the
      ladder nests).
    - The answer is wrong whenever any step is: a numeric final answer takes the corrupted result of
      the step that yields it, carried into every later mention (the answer line included); when no
      step yields it, it is moved to another value in its mentions after the last step. A final answer
      that is an expression (Countdown) gets one operand and one operator changed, as a step does.
    """
    steps = calculations(text)
    if not steps or final_answer is None or not 0 < level <= 1:
        return None
    assert text is not None  # calculations found some
    number = parse_number(final_answer)
    if number is not None and number < 0:
        return None
    canonical = canonical_number(final_answer)
    answer_step = next((step for step in reversed(steps) if number is not None and step.result[2] == canonical), None)
    others = [step for step in steps if step is not answer_step]
    random.Random(f"{seed}:order").shuffle(others)
    order = ([answer_step] if answer_step else []) + others
    chosen = order[: math.ceil(level * len(steps) - 1e-9)]
    edits: dict[Span, str] = {}
    for step in chosen:
        edits |= _corrupt_step(text, step, random.Random(f"{seed}:step:{steps.index(step)}"))
    answer_rng = random.Random(f"{seed}:answer")
    if number is None:
        return _degrade_expression_answer(text, final_answer, edits, answer_rng)
    if answer_step is not None:
        after, wrong = answer_step.result[0], edits[answer_step.result[:2]]
    else:
        after, wrong = steps[-1].result[1], _format(_wrong_value(number, answer_rng))
    for start, end, value in numbers_in(text):
        if start >= after and value == canonical:
            edits[(start, end)] = ("$" if text[start] == "$" else "") + wrong.lstrip("$")
    return _apply(text, edits)


def _degrade_expression_answer(text: str, final_answer: str, edits: dict[Span, str], rng: random.Random) -> str | None:
    """``text`` with its step edits and its last written ``final_answer`` expression corrupted."""
    start = text.rfind(final_answer)
    operands = [(start + s, start + e, value) for s, e, value in numbers_in(final_answer)]
    operators = [(start + m.start(), start + m.end(), m.group(0)) for m in _OPERATOR_RE.finditer(final_answer)]
    if start < 0 or not operands or not operators:
        return None
    return _apply(text, edits | _corrupt_operation(text, operands, operators, rng))
