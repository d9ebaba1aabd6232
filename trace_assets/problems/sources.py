"""Problem sources (synthetic, GSM8K from the hub, local JSONL) normalised into one table."""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from trace_assets.answers import count_reasoning_steps, reference_answer, strip_calculator_annotations
from trace_assets.experiment import ProblemsConfig, resolve_path
from trace_assets.problems.schemas import ProblemSchema
from trace_assets.problems.synthetic import generate_problems
from trace_assets.tables import frame_of


class ProblemFileError(ValueError):
    """A problem file line that is not a GSM8K-format record."""


@dataclass
class LoadReport:
    """What loading saw besides the problems: skipped lines and duplicates."""

    skipped_lines: list[str] = field(default_factory=list)
    duplicates_dropped: int = 0


def problem_id(question: str) -> str:
    """A stable id from the normalised question text, so the same problem has the same id in every run."""
    return "p_" + hashlib.sha1(normalise_question(question).encode()).hexdigest()[:12]


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
    }


def read_jsonl(path: Path, split: str, skip_bad_lines: bool, report: LoadReport) -> list[dict]:
    """Parse a GSM8K-format JSONL file; a bad line is an error naming file and line, or counted when skipping."""
    if not path.exists():
        raise ProblemFileError(f"{path}: problem file not found")
    rows = []
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError("expected a JSON object with 'question' and 'answer'")
                missing = [key for key in ("question", "answer") if not isinstance(record.get(key), str)]
                if missing:
                    raise ValueError(f"missing or non-string key(s) {missing}; expected 'question' and 'answer'")
                rows.append(normalise_record(record["question"], record["answer"], split, "jsonl"))
            except (json.JSONDecodeError, ValueError) as error:
                message = f"{path}:{line_number}: {error}"
                if not skip_bad_lines:
                    raise ProblemFileError(message) from None
                report.skipped_lines.append(message)
    return rows


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
        n_train + n_test, seed, settings.synthetic.min_steps, settings.synthetic.max_steps,
        tuple(settings.synthetic.operations), settings.synthetic.max_number,
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


def load_problems(settings: ProblemsConfig, seed: int) -> tuple[pl.DataFrame, LoadReport]:
    """All problems of the experiment's source, deduplicated within each split and sampled with its seed."""
    report = LoadReport()
    if settings.source == "synthetic":
        by_split = synthetic_rows(settings, seed)
    elif settings.source == "gsm8k":
        by_split = read_gsm8k(settings.gsm8k.dataset, settings.gsm8k.config)
    else:
        assert settings.jsonl is not None
        by_split = {
            split: read_jsonl(resolve_path(getattr(settings.jsonl, split)), split, settings.jsonl.skip_bad_lines, report)
            for split in ("train", "test")
        }
    sizes = {"train": settings.n_train, "test": settings.n_test}
    rows = []
    for split, split_rows in by_split.items():
        rows.extend(_sample(_dedupe(split_rows, report), sizes[split], seed))
    return frame_of(rows, ProblemSchema).sort(["split", "problem_id"]), report


def contamination(problems: pl.DataFrame) -> list[str]:
    """Problem ids whose question appears in both train and test (exact match after whitespace/case folding)."""
    train = set(problems.filter(pl.col("split") == "train")["problem_id"].to_list())
    test = set(problems.filter(pl.col("split") == "test")["problem_id"].to_list())
    return sorted(train & test)
