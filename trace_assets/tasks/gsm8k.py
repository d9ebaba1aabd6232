"""GSM8K-format arithmetic word problems: the project's original task, unchanged.

Problems come from the experiment's ``problems.source``: ``synthetic`` (the generator of
:mod:`trace_assets.problems.synthetic`, set by ``problems.synthetic``), ``gsm8k`` (the hub,
``problems.gsm8k``) or ``jsonl`` (local files, ``problems.jsonl``); answers are read
by :mod:`trace_assets.answers` and compared as exact numbers; failures are classified by the rules
and judge of :mod:`trace_assets.reporting.failures`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, model_validator

from trace_assets.answers import (
    Extraction,
    count_reasoning_steps,
    extract_answer,
    parse_number,
    reference_answer,
    strip_calculator_annotations,
)
from trace_assets.problems.records import LoadReport, count_jsonl, json_object, problem_id, read_jsonl_splits
from trace_assets.problems.synthetic import generate_problems
from trace_assets.settings import MAX_SYNTHETIC_PROBLEMS, JsonlSource, Section, SettingsError
from trace_assets.tasks.base import Check

SYNTHETIC_SIZES = (32, 16)  # synthetic train and test problems when n_train / n_test are null


class SyntheticSource(Section):
    min_steps: int = Field(2, ge=1, le=12)
    max_steps: int = Field(5, ge=1, le=12)
    operations: list[Literal["find", "buy", "give", "gift_multiple", "share", "lose_fraction"]] = Field(
        ["find", "buy", "give", "gift_multiple", "share", "lose_fraction"],
        min_length=1,
        description="operations a step may use; add/subtract only ('find', 'give') makes problems a tiny model can solve",
    )
    max_number: int = Field(60, ge=4, le=10_000, description="largest starting amount (and added amount, up to 15)")

    @model_validator(mode="after")
    def _ordered(self) -> SyntheticSource:
        if self.min_steps > self.max_steps:
            raise ValueError(f"min_steps ({self.min_steps}) must be <= max_steps ({self.max_steps})")
        return self


class Gsm8kSource(Section):
    dataset: str = "openai/gsm8k"
    config: str = "main"


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


def read_gsm8k(dataset: str, config: str) -> dict[str, list[dict]]:
    """GSM8K train and test from the Hugging Face hub (needs network or a populated HF cache)."""
    from datasets import load_dataset

    loaded = load_dataset(dataset, config)
    return {
        split: [normalise_record(row["question"], row["answer"], split, "gsm8k") for row in loaded[split]]
        for split in ("train", "test")
    }


def synthetic_rows(settings: Any, seed: int) -> dict[str, list[dict]]:
    n_train, n_test = settings.n_train or SYNTHETIC_SIZES[0], settings.n_test or SYNTHETIC_SIZES[1]
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


class Gsm8kTask:
    name = "gsm8k"
    instruction = ""  # the style's instruction asks for `#### <number>`; questions are sent as written
    failure_categories: tuple[str, ...] = ()  # its categories are the shared ones
    reference_note = ""  # GSM8K's solutions are human-written
    numbers_matter = False
    judges_wrong_answers = True  # the shared rules propose, the judge decides
    numeric_answers = True
    settings: Mapping[str, tuple[Any, Any]] = {
        "source": (
            Literal["synthetic", "gsm8k", "jsonl"],
            Field("synthetic", description="where the gsm8k task's problems come from"),
        ),
        "synthetic": (SyntheticSource, SyntheticSource()),
        "jsonl": (JsonlSource | None, None),
        "gsm8k": (Gsm8kSource, Gsm8kSource()),
    }

    def check_settings(self, problems) -> None:
        if problems.source == "jsonl" and problems.jsonl is None:
            raise ValueError("source 'jsonl' needs a 'jsonl' section with 'train' and 'test' file paths")
        total = (problems.n_train or SYNTHETIC_SIZES[0]) + (problems.n_test or SYNTHETIC_SIZES[1])
        if problems.source == "synthetic" and total > MAX_SYNTHETIC_PROBLEMS:
            raise ValueError(f"n_train + n_test is at most {MAX_SYNTHETIC_PROBLEMS:,} synthetic problems (got {total:,})")

    def load(self, problems, seed: int, report: LoadReport) -> dict[str, list[dict]]:
        """The problems from the experiment's ``source``: synthetic, the hub, or local JSONL."""
        if problems.source == "synthetic":
            return synthetic_rows(problems, seed)
        if problems.source == "gsm8k":
            return read_gsm8k(problems.gsm8k.dataset, problems.gsm8k.config)
        return read_jsonl_splits(problems.jsonl, report, parse_record, GSM8K_RECORD)

    def check_problems(self, problems, seed: int) -> int:
        """The hub is not read here (it may need the network); the generator and local files are."""
        if problems.source == "gsm8k":
            return problems.n_train or self.full_sizes(problems)[0]
        if problems.source == "synthetic":
            try:
                return len(synthetic_rows(problems, seed)["train"])
            except RuntimeError as error:
                raise SettingsError(
                    "synthetic",
                    f"the generator cannot make the problems asked for: {error}; "
                    "allow more operations, steps or a larger max_number, or ask for fewer",
                ) from None
        return count_jsonl(problems.jsonl, "jsonl", problems.n_train, parse_record, GSM8K_RECORD)

    def full_sizes(self, problems) -> tuple[int, int]:
        return (7473, 1319) if problems.source == "gsm8k" else (1000, 500)  # the hub's; dry-run's guess otherwise

    def read(self, completion: str | None) -> Extraction:
        return extract_answer(completion)

    def check(self, answer: str | None, problem: Mapping) -> Check:
        if answer is None:
            return Check(False, "no_answer")
        predicted, reference = parse_number(answer), parse_number(problem["answer"])
        if predicted is None or reference is None:
            return Check(False, f"not_a_number: {answer[:60]}")
        if predicted != reference:
            return Check(False, f"wrong_value: {answer[:60]} != {problem['answer']}")
        return Check(True, "ok")

    def failure_rule(self, check: Check) -> tuple[str, str] | None:
        return None  # the arithmetic-slip / overwritten-answer rules and the judge decide
