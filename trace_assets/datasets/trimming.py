"""Trimming a trace after its conclusion, and the control that removes as many tokens elsewhere.

The conclusion point is the first place where a trace states the final answer it ends with: an
answer line in the style's format carrying that value, or the earliest sentence that states that
number as the answer (the number is the sentence's last one, and the sentence uses a concluding
word: "so", "therefore", "the answer", "in total", ...). Trimming keeps everything up to the end of
that sentence, drops the rest and ends with one answer line in the style's format. The control keeps
the tail and instead removes the same number of tokens from a seeded random span of the reasoning
before the conclusion point, so the two arms differ in *where* tokens were removed, not how many.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass

from trace_assets.datasets.selection import AnswerFormat, answer_lines, numbers_in

TokenCounter = Callable[[str], int]

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_CONCLUDING = re.compile(
    r"\\boxed|\b(?:answer|so|therefore|thus|hence|total|altogether|in all|final(?:ly)?|result|in the end|overall)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Conclusion:
    start: int  # where the concluding sentence or answer line starts
    end: int  # where it ends: trimming keeps text[:end]
    is_answer_line: bool  # the conclusion is the answer line itself


def _segments(text: str):
    """(start, end) of every sentence, sentences being split at . ! ? and at line ends."""
    offset = 0
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\r\n")
        position = 0
        for match in _SENTENCE_END.finditer(body):
            if body[position : match.start()].strip():
                yield offset + position, offset + match.start()
            position = match.end()
        if body[position:].strip():
            yield offset + position, offset + len(body)
        offset += len(line)


def _unsigned(value: str) -> str:
    return value.lstrip("-")


def find_conclusion(text: str, final_answer: str, answer_format: AnswerFormat) -> Conclusion | None:
    """The first statement of ``final_answer`` as the answer (see the module docstring); None if the
    trace never states it."""
    target = _unsigned(final_answer)
    declarations = answer_lines(text, answer_format)
    for start, end in _segments(text):
        # a sentence of an answer line: the line is the conclusion if it says the answer (its last declaration's)
        line = next((d for d in reversed(declarations) if d.line_start <= start < d.line_end), None)
        if line is not None:
            if line.value == final_answer:
                return Conclusion(line.line_start, line.line_end, True)
            continue
        sentence = text[start:end]
        numbers = [value for _, _, value in numbers_in(sentence)]
        if numbers and _unsigned(numbers[-1]) == target and _CONCLUDING.search(sentence):
            return Conclusion(start, end, False)
    return None


def trim_after_conclusion(text: str, conclusion: Conclusion, final_line: str) -> str:
    """``text`` up to the end of its conclusion, ending with the answer line ``final_line``."""
    kept = text[: conclusion.end]
    if conclusion.is_answer_line:
        return kept
    if text[conclusion.end :].strip() == final_line.strip():
        return text  # nothing after the conclusion but the answer line itself
    return kept.rstrip() + "\n" + final_line


def remove_random_span(text: str, limit: int, tokens: int, count: TokenCounter, rng: random.Random) -> tuple[str, int] | None:
    """Remove a run of whole words from ``text[:limit]`` (the reasoning before the conclusion) that
    costs as close to ``tokens`` tokens as word boundaries allow, starting at a seeded random word;
    returns (text, tokens removed), or None when the reasoning before ``limit`` has fewer tokens."""
    if tokens <= 0:
        return text, 0
    words = [m.span() for m in re.finditer(r"\S+", text[:limit])]
    if not words:
        return None
    total = count(text)

    def cut(i: int, j: int) -> str:  # drop words i..j-1 and the whitespace after them (before them at the end)
        if j < len(words):
            return text[: words[i][0]] + text[words[j][0] :]
        return text[: words[i - 1][1] if i else 0] + text[words[-1][1] :]

    def removed(i: int, j: int) -> int:
        return total - count(cut(i, j))

    last = len(words)
    if removed(0, last) < tokens:
        return None
    low, high = 0, last - 1  # the latest start from which the rest of the reasoning still holds enough tokens
    while low < high:
        middle = (low + high + 1) // 2
        if removed(middle, last) >= tokens:
            low = middle
        else:
            high = middle - 1
    start = rng.randint(0, low)
    low, high = start + 1, last  # the shortest span from there that removes enough
    while low < high:
        middle = (low + high) // 2
        if removed(start, middle) >= tokens:
            high = middle
        else:
            low = middle + 1
    choices = [end for end in (low - 1, low) if end > start]
    end = min(choices, key=lambda e: (abs(removed(start, e) - tokens), -e))
    return cut(start, end), removed(start, end)
