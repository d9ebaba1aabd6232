"""Final-answer extraction and numeric comparison: pure functions, no Dagster.

Three extractors are reported separately, because they fail differently on real model output:

- ``strict``: the first ``#### N`` line (GSM8K's own format). A model that declares an answer and
  then rambles on keeps its declared answer.
- ``label``: the first ``ANSWER: N`` line (the titanium style's schema).
- ``flexible``: an explicit "the answer is N" / ``\\boxed{N}`` phrase if there is one, otherwise
  the last number in the text. Numbers recited after a declared answer fool it, by design:
  comparing it against ``strict`` shows how often that happens.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

_NUMBER = r"-?\$?\s?-?\d[\d,]*(?:\.\d+)?(?:\s*/\s*\d+)?|-?\$?\.\d+"
_NUMBER_RE = re.compile(_NUMBER)
_STRICT_RE = re.compile(r"####\s*(" + _NUMBER + r")")
_LABEL_RE = re.compile(r"^\s*\**ANSWER\**\s*:\s*\**\s*(" + _NUMBER + r")", re.MULTILINE | re.IGNORECASE)
_PHRASE_RE = re.compile(
    r"(?:\\boxed\{\s*(" + _NUMBER + r")\s*\}|(?:final answer|the answer)\s*(?:is|:|=)\s*\**\s*(" + _NUMBER + r"))",
    re.IGNORECASE,
)
_CALC_ANNOTATION_RE = re.compile(r"<<[^<>]*>>")


def strip_calculator_annotations(text: str) -> str:
    """Remove GSM8K's ``<<48/2=24>>`` calculator annotations."""
    return _CALC_ANNOTATION_RE.sub("", text)


def parse_number(text: str | None) -> Fraction | None:
    """Parse ``"$1,234.50"``, ``"18."``, ``"-3"``, ``"3/4"`` into an exact Fraction; None if not a number."""
    if text is None:
        return None
    cleaned = text.strip().replace(",", "").replace("$", "").replace(" ", "")
    cleaned = cleaned.rstrip(".")
    if cleaned.startswith("--"):
        return None
    try:
        if "/" in cleaned:
            numerator, denominator = cleaned.split("/", 1)
            if Fraction(denominator) == 0:
                return None
            return Fraction(numerator) / Fraction(denominator)
        return Fraction(cleaned)
    except (ValueError, ZeroDivisionError):
        return None


def canonical_number(text: str | None) -> str | None:
    """Canonical string of a number: ``"$1,200.00"`` -> ``"1200"``, ``"3.50"`` -> ``"3.5"``, ``"1/4"`` -> ``"0.25"``."""
    value = parse_number(text)
    if value is None:
        return None
    if value.denominator == 1:
        return str(value.numerator)
    # Terminating decimals print as decimals; others keep the exact fraction.
    denominator = value.denominator
    for prime in (2, 5):
        while denominator % prime == 0:
            denominator //= prime
    if denominator == 1:
        digits = 0
        scaled = value
        while scaled.denominator != 1:
            scaled *= 10
            digits += 1
        sign = "-" if value < 0 else ""
        whole = abs(scaled.numerator)
        text_digits = str(whole).rjust(digits + 1, "0")
        return f"{sign}{text_digits[:-digits]}.{text_digits[-digits:]}"
    return f"{value.numerator}/{value.denominator}"


def numbers_match(predicted: str | None, reference: str | None) -> bool:
    """Exact numeric equality after normalisation; anything unparsable is not a match."""
    left, right = parse_number(predicted), parse_number(reference)
    return left is not None and right is not None and left == right


def extract_strict(text: str) -> str | None:
    match = _STRICT_RE.search(text or "")
    return canonical_number(match.group(1)) if match else None


def extract_label(text: str) -> str | None:
    match = _LABEL_RE.search(text or "")
    return canonical_number(match.group(1)) if match else None


def extract_flexible(text: str) -> str | None:
    text = text or ""
    phrases = list(_PHRASE_RE.finditer(text))
    if phrases:
        last = phrases[-1]
        return canonical_number(last.group(1) or last.group(2))
    for candidate in reversed(_NUMBER_RE.findall(text)):
        number = canonical_number(candidate)
        if number is not None:
            return number
    return None


@dataclass(frozen=True)
class Extraction:
    strict: str | None
    label: str | None
    flexible: str | None

    @property
    def answer(self) -> str | None:
        """Best single answer: a declared one (``####`` or ``ANSWER:``) wins over the fallback."""
        return self.strict or self.label or self.flexible

    @property
    def method(self) -> str:
        if self.strict is not None:
            return "strict"
        if self.label is not None:
            return "label"
        return "flexible" if self.flexible is not None else "none"


def extract_answer(text: str) -> Extraction:
    return Extraction(extract_strict(text), extract_label(text), extract_flexible(text))


def reference_answer(solution: str) -> str:
    """The canonical final answer of a GSM8K-format reference solution; raises ValueError if absent."""
    answer = extract_strict(solution)
    if answer is None:
        raise ValueError("reference solution has no '#### <number>' final answer")
    return answer


def count_reasoning_steps(solution: str) -> int:
    """Difficulty of a reference solution: its non-empty lines before the ``####`` line."""
    body = solution.split("####", 1)[0]
    return sum(1 for line in body.splitlines() if line.strip())
