"""The problems of an experiment's tasks in one table: each registered task loads its own
(trace_assets/tasks); here they are deduplicated, sampled and checked for train/test contamination."""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from pathlib import Path

import polars as pl

from trace_assets.experiment import ProblemsConfig
from trace_assets.problems import records
from trace_assets.problems.records import (
    MAX_LINE_BYTES,
    ContaminationHit,
    LoadReport,
    ProblemFileError,
    json_object,
    normalise_question,
    problem_id,
    read_jsonl_splits,
)
from trace_assets.problems.schemas import ProblemSchema
from trace_assets.tables import frame_of
from trace_assets.tasks import get_task
from trace_assets.tasks.gsm8k import GSM8K_RECORD, normalise_record, parse_record

__all__ = [
    "MAX_LINE_BYTES",
    "ContaminationHit",
    "LoadReport",
    "ProblemFileError",
    "contamination",
    "json_object",
    "load_problems",
    "near_duplicates",
    "normalise_question",
    "normalise_record",
    "problem_id",
    "read_jsonl",
    "read_jsonl_splits",
]


def read_jsonl(
    path: Path,
    split: str,
    skip_bad_lines: bool,
    report: LoadReport,
    parse: Callable[[str, str], dict] = parse_record,
    expected: str = GSM8K_RECORD,
) -> list[dict]:
    """:func:`trace_assets.problems.records.read_jsonl`, reading GSM8K's format unless told otherwise."""
    return records.read_jsonl(path, split, skip_bad_lines, report, parse, expected)


def _dedupe(rows: list[dict], report: LoadReport) -> list[dict]:
    unique: dict[str, dict] = {}
    for row in rows:
        if row["problem_id"] in unique:
            report.duplicates_dropped += 1
        else:
            unique[row["problem_id"]] = row
    return list(unique.values())


def _sample(rows: list[dict], count: int | None, seed: int) -> list[dict]:
    if count is None or count >= len(rows):
        return rows
    return random.Random(seed).sample(rows, count)


def load_problems(settings: ProblemsConfig, seed: int) -> tuple[pl.DataFrame, LoadReport]:
    """All problems of the experiment's tasks, deduplicated within each split and sampled with its seed
    (``n_train`` / ``n_test`` per task).

    Train problems that equal or nearly duplicate (``near_duplicates``) a sampled test question of the
    same task are removed from the train pool before the train sample is drawn, and listed in
    ``report.contaminated``. For tasks whose numbers are the problem (Countdown), only equal questions count.
    """
    report = LoadReport()
    rows: list[dict] = []
    for name in settings.tasks:
        task = get_task(name)
        by_split = task.load(settings, seed, report)
        train_pool = _dedupe(by_split["train"], report)
        test = _sample(_dedupe(by_split["test"], report), settings.n_test, seed)
        hits = near_duplicates(
            {row["problem_id"]: row["question"] for row in train_pool},
            {row["problem_id"]: row["question"] for row in test},
            NEAR_DUPLICATE_THRESHOLD if not task.numbers_matter else 1.0,
            NEAR_DUPLICATE_NGRAM,
            mask_numbers=not task.numbers_matter,
        )
        report.contaminated += hits
        removed = {hit.train_id for hit in hits}
        train = _sample([row for row in train_pool if row["problem_id"] not in removed], settings.n_train, seed)
        rows += train + test
    frame = frame_of(rows, ProblemSchema)
    return frame.sort(["split", "problem_id"]), report


NEAR_DUPLICATE_THRESHOLD = 0.8  # Jaccard overlap of number-masked word 5-grams
NEAR_DUPLICATE_NGRAM = 5
_NUMBER_TOKEN = re.compile(r"\$?\d[\d,]*(?:\.\d+)?%?")
_WORD = re.compile(r"[a-z]+|<n>")
_WORD_OR_NUMBER = re.compile(r"[a-z]+|\d+")


def masked_words(question: str) -> list[str]:
    """Lower-cased words with every number replaced by ``<n>``, punctuation dropped: two questions
    that differ only in their numbers (a GSM-style numeric variant) give the same list."""
    return _WORD.findall(_NUMBER_TOKEN.sub(" <n> ", question.lower()))


def shingles(question: str, n: int = 5, mask_numbers: bool = True) -> frozenset[tuple[str, ...]]:
    words = masked_words(question) if mask_numbers else _WORD_OR_NUMBER.findall(question.lower())
    if len(words) <= n:
        return frozenset([tuple(words)]) if words else frozenset()
    return frozenset(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def near_duplicates(
    train: dict[str, str], test: dict[str, str], threshold: float = 0.8, n: int = 5, mask_numbers: bool = True
) -> list[ContaminationHit]:
    """Train questions whose number-masked word ``n``-grams overlap a test question's by at least
    ``threshold`` (Jaccard), or that equal one after whitespace/case folding; the closest test
    question per train question. ``train``/``test`` map problem ids to question texts.
    ``mask_numbers`` False: numbers are words like any other (where the numbers are the problem)."""
    index: dict[tuple[str, ...], list[str]] = {}
    test_shingles = {pid: shingles(q, n, mask_numbers) for pid, q in test.items()}
    for pid, grams in test_shingles.items():
        for gram in grams:
            index.setdefault(gram, []).append(pid)
    exact = {normalise_question(q): pid for pid, q in test.items()}
    hits = []
    for train_id, question in train.items():
        if normalise_question(question) in exact:
            hits.append(ContaminationHit(train_id, exact[normalise_question(question)], 1.0))
            continue
        grams = shingles(question, n, mask_numbers)
        shared: dict[str, int] = {}
        for gram in grams:
            for test_id in index.get(gram, ()):
                shared[test_id] = shared.get(test_id, 0) + 1
        best: ContaminationHit | None = None
        for test_id, count in shared.items():
            similarity = count / (len(grams) + len(test_shingles[test_id]) - count)
            if similarity >= threshold and (best is None or (similarity, best.test_id) > (best.similarity, test_id)):
                best = ContaminationHit(train_id, test_id, round(similarity, 4))
        if best is not None:
            hits.append(best)
    return sorted(hits, key=lambda hit: hit.train_id)


def contamination(problems: pl.DataFrame, threshold: float = 0.8, n: int = 5) -> list[str]:
    """Train problem ids whose question equals (after whitespace/case folding) or nearly duplicates
    (numbers masked, word ``n``-gram Jaccard >= ``threshold``) a test question of the same task;
    for tasks whose numbers are the problem, only equal questions count."""
    hits: set[str] = set()
    tasks = problems["task"].unique().to_list() if "task" in problems.columns else [None]
    for task in tasks:
        rows = problems if task is None else problems.filter(pl.col("task") == task)
        exact_only = task is not None and get_task(task).numbers_matter

        def questions(split: str, rows=rows) -> dict[str, str]:
            chosen = rows.filter(pl.col("split") == split)
            return dict(zip(chosen["problem_id"], chosen["question"]))

        found = near_duplicates(
            questions("train"), questions("test"), 1.0 if exact_only else threshold, n, mask_numbers=not exact_only
        )
        hits |= {hit.train_id for hit in found}
    return sorted(hits)
