"""Problem sources normalised into one table: GSM8K (synthetic, the hub, local JSONL) and, through
``trace_assets.tasks``, Countdown, MATH and MBPP."""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from trace_assets.answers import count_reasoning_steps, reference_answer, strip_calculator_annotations
from trace_assets.errors import InputError
from trace_assets.experiment import ProblemsConfig, resolve_path
from trace_assets.problems.schemas import ProblemSchema
from trace_assets.problems.synthetic import generate_problems
from trace_assets.tables import frame_of


class ProblemFileError(InputError):
    """A problem file that is missing, unreadable, or has a line that is not a GSM8K-format record."""


# A GSM8K record is a few hundred bytes; a line this long is not one (and is not read whole).
MAX_LINE_BYTES = 1 << 20


@dataclass
class LoadReport:
    """What loading saw besides the problems: skipped lines, duplicates and contaminated train problems."""

    skipped_lines: list[str] = field(default_factory=list)
    duplicates_dropped: int = 0
    # Train problems (of the whole train pool, before sampling) that equal or nearly duplicate a
    # sampled test question; they were removed from the train split.
    contaminated: list[ContaminationHit] = field(default_factory=list)


def problem_id(question: str, task: str = "gsm8k") -> str:
    """A stable id from the normalised question text, so the same problem has the same id in every run.
    Other tasks than gsm8k (whose ids predate tasks) hash the task's name with it."""
    key = normalise_question(question) if task == "gsm8k" else f"{task}:{normalise_question(question)}"
    return "p_" + hashlib.sha1(key.encode()).hexdigest()[:12]


def normalise_question(question: str) -> str:
    return re.sub(r"\s+", " ", question).strip().lower()


def normalise_record(question: str, solution: str, split: str, source: str) -> dict:
    """One problem row from a GSM8K-format (question, answer) pair; raises ValueError if it has no answer."""
    clean_solution = strip_calculator_annotations(solution).strip()
    return {
        "problem_id": problem_id(question),
        "split": split,
        "question": question.strip(),
        "reference_solution": clean_solution,
        "answer": reference_answer(clean_solution),
        "difficulty": count_reasoning_steps(clean_solution),
        "source": source,
        "task": "gsm8k",
        "task_metadata": "{}",
    }


GSM8K_RECORD = "'question' and 'answer' (GSM8K format)"  # what a line of a GSM8K JSONL file holds


def json_object(text: str, keys: str) -> dict:
    """One JSONL line's JSON object; a ValueError saying what is wrong otherwise (``keys``: what the
    object should hold, for the message)."""
    try:
        record = json.loads(text)
    except RecursionError:
        raise ValueError("not a problem record (JSON nested too deeply)") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"not valid JSON ({error.msg} at column {error.colno})") from None
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object with {keys}, got a JSON {type(record).__name__}")
    return record


def parse_record(text: str, split: str) -> dict:
    """One JSONL line as a problem row; ValueError saying what is wrong with it."""
    record = json_object(text, "'question' and 'answer'")
    missing = [key for key in ("question", "answer") if not isinstance(record.get(key), str)]
    if missing:
        raise ValueError(f"missing or non-string key(s) {missing}; expected 'question' and 'answer' strings")
    empty = [key for key in ("question", "answer") if not record[key].strip()]
    if empty:
        raise ValueError(f"empty {' and '.join(repr(key) for key in empty)}")
    try:
        return normalise_record(record["question"], record["answer"], split, "jsonl")
    except ValueError:
        solution = strip_calculator_annotations(record["answer"])
        declared = re.findall(r"####[ \t]*(.*)", solution)
        if not declared:
            raise ValueError("the answer has no final '#### <number>' line (GSM8K format)") from None
        raise ValueError(f"the final answer '#### {declared[-1].strip()[:40]}' is not a number") from None


def _lines(handle) -> Iterator[tuple[int, str | None, str | None]]:
    """(line number, text, error) for each line of a binary file; over-long lines are not read whole."""
    number = 0
    while True:
        raw = handle.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        number += 1
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            while raw and not raw.endswith(b"\n"):  # skip the rest of it
                raw = handle.readline(MAX_LINE_BYTES)
            yield number, None, f"line longer than {MAX_LINE_BYTES:,} bytes; a problem record is one short JSON object"
            continue
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):  # a byte-order mark
            raw = raw[3:]
        try:
            yield number, raw.decode("utf-8"), None
        except UnicodeDecodeError as error:
            yield number, None, f"not UTF-8 text (byte {raw[error.start]:#04x} at column {error.start + 1})"


def read_jsonl(
    path: Path,
    split: str,
    skip_bad_lines: bool,
    report: LoadReport,
    parse: Callable[[str, str], dict] = parse_record,
    expected: str = GSM8K_RECORD,
) -> list[dict]:
    """Parse a JSONL problem file line by line with ``parse`` (default: GSM8K's format); a bad line is an
    error naming file and line, or counted when skipping. ``expected`` describes a record for the error
    about a file without any."""
    if not path.exists():
        raise ProblemFileError(f"{path}: problem file not found")
    rows = []
    try:
        with path.open("rb") as handle:
            for line_number, line, problem in _lines(handle):
                if line is not None and not line.strip():
                    continue
                try:
                    if problem is not None:
                        raise ValueError(problem)
                    assert line is not None, "_lines yields either a line's text or its problem"
                    rows.append(parse(line, split))
                except ValueError as error:
                    message = f"{path}:{line_number}: {error}"
                    if not skip_bad_lines:
                        raise ProblemFileError(message) from None
                    report.skipped_lines.append(message)
    except OSError as error:
        raise ProblemFileError(f"{path}: cannot read the problem file ({error.strerror or error})") from None
    if not rows:
        skipped = f" ({len(report.skipped_lines)} bad lines skipped)" if report.skipped_lines else ""
        raise ProblemFileError(f"{path}: no problems in the file{skipped}; expected one JSON object per line with {expected}")
    return rows


def read_jsonl_splits(
    files, report: LoadReport, parse: Callable[[str, str], dict] = parse_record, expected: str = GSM8K_RECORD
) -> dict[str, list[dict]]:
    """The train and test files a task's settings name (``files.train``, ``files.test``,
    ``files.skip_bad_lines``), each read with :func:`read_jsonl`."""
    return {
        split: read_jsonl(resolve_path(getattr(files, split)), split, files.skip_bad_lines, report, parse, expected)
        for split in ("train", "test")
    }


def read_gsm8k(dataset: str, config: str) -> dict[str, list[dict]]:
    """GSM8K train and test from the Hugging Face hub (needs network or a populated HF cache)."""
    from datasets import load_dataset

    loaded = load_dataset(dataset, config)
    return {
        split: [normalise_record(row["question"], row["answer"], split, "gsm8k") for row in loaded[split]]
        for split in ("train", "test")
    }


def synthetic_rows(settings: ProblemsConfig, seed: int) -> dict[str, list[dict]]:
    n_train, n_test = settings.n_train or 32, settings.n_test or 16
    problems = generate_problems(
        n_train + n_test,
        seed,
        settings.synthetic.min_steps,
        settings.synthetic.max_steps,
        tuple(settings.synthetic.operations),
        settings.synthetic.max_number,
    )
    rows = [normalise_record(p.question, p.solution, "", "synthetic") for p in problems]
    for row in rows[:n_train]:
        row["split"] = "train"
    for row in rows[n_train:]:
        row["split"] = "test"
    return {"train": rows[:n_train], "test": rows[n_train:]}


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


def gsm8k_rows(settings: ProblemsConfig, seed: int, report: LoadReport) -> dict[str, list[dict]]:
    """The gsm8k task's problems from the experiment's ``source``: synthetic, the hub, or local JSONL."""
    if settings.source == "synthetic":
        return synthetic_rows(settings, seed)
    if settings.source == "gsm8k":
        return read_gsm8k(settings.gsm8k.dataset, settings.gsm8k.config)
    assert settings.jsonl is not None
    return read_jsonl_splits(settings.jsonl, report)


def load_problems(settings: ProblemsConfig, seed: int) -> tuple[pl.DataFrame, LoadReport]:
    """All problems of the experiment's tasks, deduplicated within each split and sampled with its seed
    (``n_train`` / ``n_test`` per task).

    Train problems that equal or nearly duplicate (``near_duplicates``) a sampled test question of the
    same task are removed from the train pool before the train sample is drawn, and listed in
    ``report.contaminated``. For tasks whose numbers are the problem (Countdown), only equal questions count.
    """
    from trace_assets.tasks import get_task

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


@dataclass(frozen=True)
class ContaminationHit:
    """A train question that is the same as, or a near-duplicate of, a test question."""

    train_id: str
    test_id: str
    similarity: float  # Jaccard overlap of the number-masked word n-grams; 1.0 for an exact match


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
    from trace_assets.tasks import get_task

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
