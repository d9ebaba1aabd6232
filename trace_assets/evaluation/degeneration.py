"""Detect outputs that degenerated into loops: pure functions on text."""

from __future__ import annotations

from collections import Counter


def repeated_ngram_ratio(text: str, n: int = 4) -> float:
    """Share of word n-grams that repeat an earlier one: ~0 for normal prose, near 1 for a loop."""
    words = text.split()
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def is_degenerate_loop(text: str, ratio_threshold: float = 0.5, min_words: int = 16) -> bool:
    """True if most of the text repeats itself, or one non-trivial line recurs three or more times."""
    if len(text.split()) >= min_words and repeated_ngram_ratio(text) >= ratio_threshold:
        return True
    lines = [line.strip() for line in text.splitlines() if len(line.strip()) > 8]
    return any(count >= 3 for count in Counter(lines).values())
