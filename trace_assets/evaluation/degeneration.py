"""Detect outputs that degenerated into loops: pure functions on text.

A loop is text repeating itself *verbatim*: the same word sequence (a phrase, a sentence, a block of
lines) back to back, again and again. That is what greedy decoding produces when it gets stuck, usually
until the length limit. Legitimate repetition is never verbatim for long: a per-item list ("Monday: 5
apples. Tuesday: 5 apples. ...") changes a word in every unit, a table changes its row labels, and
repeated ``= 12`` lines sit in different sentences. So the detector looks for *tandem repeats* of word
sequences, not for a high share of repeated n-grams (which a long list also has).
"""

from __future__ import annotations

import re

import numpy as np

MIN_REPEATS = 3  # a unit must occur this many times back to back
MIN_SPAN_WORDS = 30  # ... covering at least this many words anywhere in the text
MIN_TAIL_SPAN_WORDS = 12  # ... or this many when the repeat runs to the end (cut off by the length limit)
NUMERIC_SPAN_WORDS = 60  # units without a word (e.g. "5 + 5 + ...") must cover this many words
MAX_PERIOD_WORDS = 200
_ALPHA = re.compile(r"[^\W\d_]{2,}")


def repeated_ngram_ratio(text: str, n: int = 4) -> float:
    """Share of word n-grams that repeat an earlier one: ~0 for normal prose, near 1 for a loop.

    Kept as a descriptive statistic; long legitimate lists also score high, so it no longer decides.
    """
    words = text.split()
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start indices and lengths of the runs of True in a boolean array."""
    padded = np.concatenate(([False], mask, [False]))
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    starts, ends = edges[::2], edges[1::2]
    return starts, ends - starts


def longest_tandem_repeat(text: str, max_period: int = MAX_PERIOD_WORDS) -> tuple[int, int, int, bool] | None:
    """The qualifying verbatim repeat of a word sequence in ``text``, if any.

    Returns ``(start_word, period_words, repeats, reaches_end)`` of the repeat that covers the most words
    among those that qualify as a loop (see ``is_degenerate_loop``), or None.
    """
    words = text.split()
    n = len(words)
    if n < MIN_REPEATS:
        return None
    vocabulary: dict[str, int] = {}
    ids = np.fromiter((vocabulary.setdefault(word, len(vocabulary)) for word in words), dtype=np.int64, count=n)
    best = None
    for period in range(1, min(max_period, n // MIN_REPEATS) + 1):
        starts, lengths = _runs(ids[:-period] == ids[period:])
        # A run of m matches at period p means words[start : start + m + p] repeat a p-word unit.
        keep = lengths >= (MIN_REPEATS - 1) * period
        for start, length in zip(starts[keep].tolist(), lengths[keep].tolist()):
            span = length + period
            reaches_end = start + span >= n
            wordy = any(_ALPHA.search(word) for word in words[start : start + period])
            needed = MIN_TAIL_SPAN_WORDS if reaches_end else MIN_SPAN_WORDS
            if not wordy:
                needed = NUMERIC_SPAN_WORDS
            if span >= needed and (best is None or span > best[1] * best[2]):
                best = (start, period, span // period, reaches_end)
    return best


def repeated_line_run(text: str, min_chars: int = 9) -> int:
    """Length of the longest run of identical, consecutive non-trivial lines."""
    longest, current, previous = 0, 0, None
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue  # blank lines between repeats do not break a loop
        if len(line) >= min_chars and line == previous:
            current += 1
        else:
            current = 1 if len(line) >= min_chars else 0
        previous = line
        longest = max(longest, current)
    return longest


def is_degenerate_loop(text: str) -> bool:
    """True if the text repeats a word sequence verbatim, back to back, at least three times.

    Fires on: the same sentence (or block) cycling until the length limit; a repeated phrase running to
    the end of the text; one line printed three or more times in a row. Does not fire on per-item lists,
    tables or repeated results in different sentences, because those differ in at least one word per unit.
    """
    if not text or not text.strip():
        return False
    if repeated_line_run(text) >= MIN_REPEATS:
        return True
    return longest_tandem_repeat(text) is not None
