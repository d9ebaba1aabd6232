"""Step-level confidence of a trace from its tokens' log-probabilities: pure, no Dagster.

A trace's reasoning is a sequence of steps (its lines, and the sentences of a line that holds
several). A step's confidence is the lowest mean token log-probability over a sliding window of
``window`` tokens inside it (the whole step when it is shorter): one unsure stretch in an
otherwise fluent step pulls it down, where a trace-wide average would wash it out. A trace's
step-level confidence is that of its least confident step; its global confidence is the plain
mean over all its tokens, the control.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_WINDOW = 8
# A sentence ends at . ! or ? followed by space and a capital letter or "(" ("2.5" and "3. 4" stay whole).
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+(?=[A-Z(])")


@dataclass(frozen=True)
class Confidence:
    step: float | None  # the least confident step's lowest window mean (None: no log-probabilities)
    mean: float | None  # mean log-probability over every token
    weakest_step: int | None  # index of that step among the trace's steps
    steps: int  # steps that had tokens


def step_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) character spans of the steps of ``text``: non-empty lines, split into sentences."""
    spans, offset = [], 0
    for line in (text or "").splitlines(keepends=True):
        body = line.rstrip("\r\n")
        position = 0
        for match in _SENTENCE_BREAK.finditer(body):
            if body[position : match.start()].strip():
                spans.append((offset + position, offset + match.start()))
            position = match.end()
        if body[position:].strip():
            spans.append((offset + position, offset + len(body)))
        offset += len(line)
    return spans


def lowest_window_mean(values: Sequence[float], window: int) -> float:
    """The lowest mean over every run of ``window`` consecutive values (all of them when fewer)."""
    width = max(1, min(window, len(values)))
    total = sum(values[:width])
    lowest = total
    for index in range(width, len(values)):
        total += values[index] - values[index - width]
        lowest = min(lowest, total)
    return lowest / width


def trace_confidence(
    text: str, token_logprobs: Sequence[float] | None, token_ends: Sequence[int] | None, window: int = DEFAULT_WINDOW
) -> Confidence:
    """Step-level and global confidence of one completion. A token belongs to the step in which its
    text starts (tokens of the whitespace between steps belong to none); log-probabilities that are
    missing, of another length than the offsets, or not finite give ``Confidence(None, None, ...)``."""
    if not token_logprobs or token_ends is None or len(token_logprobs) != len(token_ends):
        return Confidence(None, None, None, 0)
    if not all(math.isfinite(value) for value in token_logprobs):
        return Confidence(None, None, None, 0)
    spans = step_spans(text)
    per_step: list[list[float]] = [[] for _ in spans]
    start, step = 0, 0
    for value, end in zip(token_logprobs, token_ends):
        while step < len(spans) and spans[step][1] <= start:
            step += 1
        if (step < len(spans) and spans[step][0] <= start < spans[step][1]) or (
            step < len(spans) and start < spans[step][0] < end
        ):
            per_step[step].append(value)
        start = max(start, end)
    mean = sum(token_logprobs) / len(token_logprobs)
    scored = [(lowest_window_mean(values, window), index) for index, values in enumerate(per_step) if values]
    if not scored:
        return Confidence(mean, mean, None, 0)  # no step text (whitespace only): the mean is all there is
    lowest, index = min(scored)
    return Confidence(lowest, mean, index, len(scored))
