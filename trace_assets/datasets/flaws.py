"""Flawed versions of a correct trace, for the mixtures: declared procedures with a check.

- ``wrong``: the style's own wrong-answer trace for the same problem (the one the W arm takes).
- ``corrupted``: the correct trace with an arithmetic slip in the calculation that first yields
  the final answer: that result, and every later mention of it (the answer line included), become
  a wrong value, so the error is carried through to a wrong final answer.

Either way the result must pass ``is_flawed_version``: its reasoning differs from the source's and
its declared final answer is a single wrong one. A candidate that fails is not used.
"""

from __future__ import annotations

import random
import re
from fractions import Fraction

from trace_assets.answers import canonical_number, numbers_match, parse_number
from trace_assets.datasets.selection import DECLARATION_RE, AnswerFormat, declared_answers, numbers_in

_WHITESPACE = re.compile(r"\s+")


def reasoning(text: str, answer_format: AnswerFormat) -> str:
    """The trace without its answer lines, whitespace folded: what "differs in reasoning" compares."""
    without = DECLARATION_RE[answer_format].sub("", text or "")
    return _WHITESPACE.sub(" ", without).strip()


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
