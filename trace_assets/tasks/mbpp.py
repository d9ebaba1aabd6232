"""MBPP: short Python functions from a description, checked by running their test asserts.

Problems come from local JSONL or a hub dataset with MBPP's columns (``google-research-datasets/mbpp``,
config ``full``). A record is ``{"text": <description>, "code": <reference solution>, "test_list": [<assert>, ...]}``
(optionally ``"test_setup_code"`` and ``"task_id"``). The question shows the description and the
asserts, as MBPP's prompts do, and asks for the solution as a fenced Python block; the last
```` ```python ```` block of a completion is its answer (``strict``; the last fence of any language
is the ``flexible`` reading). The answer is right when the solution and every assert run without
error in the sandbox (:mod:`trace_assets.tasks.sandbox`): a separate process with time, memory and
file limits, no network and a scratch directory that is removed afterwards.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from typing import Any

from trace_assets.answers import Extraction
from trace_assets.problems.records import (
    LoadReport,
    count_jsonl,
    json_object,
    problem_id,
    read_hub_splits,
    read_jsonl_splits,
)
from trace_assets.settings import HubSource, JsonlSource
from trace_assets.tasks.base import Check, metadata, require_section
from trace_assets.tasks.sandbox import STATUSES, run_tests

INSTRUCTION = "Reason briefly, then give the complete solution as one Python code block (```python ... ```) at the end."
MAX_CODE_CHARS = 20_000
_FENCE = re.compile(r"```[ \t]*(?P<lang>[A-Za-z0-9_+-]*)[ \t]*\n(?P<code>.*?)```", re.DOTALL)


def code_blocks(text: str | None) -> list[tuple[str, str]]:
    """``(language, code)`` of every fenced block, in order (an unclosed last fence is not a block)."""
    return [(m["lang"].lower(), m["code"]) for m in _FENCE.finditer((text or "")[-100_000:]) if m["code"].strip()]


def question_text(description: str, tests: list[str]) -> str:
    listed = "\n".join(tests)
    return f"{description.strip()}\nYour code should pass these tests:\n\n{listed}\n\n{INSTRUCTION}"


def mbpp_row(record: dict, split: str, source: str) -> dict:
    """One MBPP-format record (a JSONL line's object or a hub row) as a problem row; ValueError saying what is
    wrong with it."""
    missing = [key for key in ("text", "code") if not isinstance(record.get(key), str) or not record[key].strip()]
    if missing:
        raise ValueError(f"missing, empty or non-string key(s) {missing}; expected 'text', 'code' and 'test_list'")
    tests = record.get("test_list")
    if not isinstance(tests, list) or not tests or not all(isinstance(t, str) and t.strip() for t in tests):
        raise ValueError("'test_list' must be a non-empty list of assert statements (strings)")
    setup = record.get("test_setup_code") or ""
    if not isinstance(setup, str):
        raise ValueError("'test_setup_code' must be a string")
    for number, text in enumerate([record["code"], setup, *tests]):
        try:
            compile(text, "record", "exec")
        except SyntaxError as error:
            what = "code" if number == 0 else "test_setup_code" if number == 1 else f"test_list[{number - 2}]"
            raise ValueError(f"'{what}' is not valid Python ({error.msg}, line {error.lineno})") from None
    code = record["code"].replace("\r\n", "\n").strip()
    question = question_text(record["text"], tests)
    fields = {"test_list": tests, "test_setup_code": setup, "task_id": record.get("task_id")}
    return {
        "problem_id": problem_id(question, "mbpp"),
        "split": split,
        "question": question,
        "reference_solution": f"```python\n{code}\n```",
        "answer": "\n".join(tests),
        "difficulty": sum(1 for line in code.splitlines() if line.strip()),
        "source": source,
        "task": "mbpp",
        "task_metadata": json.dumps(fields),
    }


def parse_mbpp_record(text: str, split: str) -> dict:
    """One MBPP-format JSONL line as a problem row; ValueError saying what is wrong with it."""
    return mbpp_row(json_object(text, "'text', 'code' and 'test_list'"), split, "jsonl")


@functools.lru_cache(maxsize=8192)
def _run(code: str, tests: tuple[str, ...], setup: str) -> Check:
    result = run_tests(code, list(tests), setup)
    return Check(True, "ok") if result.passed else Check(False, f"{result.status}: {result.detail}")


class MbppTask:
    name = "mbpp"
    instruction = INSTRUCTION
    failure_categories: tuple[str, ...] = tuple(status for status in STATUSES if status != "passed")
    reference_note = "the bare reference code, without any explanation"
    numbers_matter = False
    judges_wrong_answers = False  # the sandbox's outcome is the category
    numeric_answers = False
    # MBPP-format train and test files, or a hub dataset of MBPP's columns
    settings: Mapping[str, tuple[Any, Any]] = {"mbpp": (JsonlSource | HubSource | None, None)}

    def check_settings(self, problems) -> None:
        require_section(problems, self.name)

    def load(self, problems, seed: int, report: LoadReport) -> dict[str, list[dict]]:
        if isinstance(problems.mbpp, HubSource):
            return read_hub_splits(problems.mbpp, report, functools.partial(mbpp_row, source="hub"))
        return read_jsonl_splits(problems.mbpp, report, parse_mbpp_record, "'text', 'code' and 'test_list' (MBPP format)")

    def check_problems(self, problems, seed: int) -> int:
        """The hub is not read here (it may need the network); local files are."""
        if isinstance(problems.mbpp, HubSource):
            return problems.n_train or self.full_sizes(problems)[0]
        return count_jsonl(problems.mbpp, "mbpp", problems.n_train, parse_mbpp_record, "the MBPP format's keys")

    def full_sizes(self, problems) -> tuple[int, int]:
        return 374, 500  # the MBPP release

    def read(self, completion: str | None) -> Extraction:
        blocks = code_blocks(completion)
        python = [code for lang, code in blocks if lang in ("python", "py", "python3")]
        return Extraction(
            strict=python[-1].strip() if python else None,
            label=None,
            flexible=blocks[-1][1].strip() if blocks else None,
            declared_answers=(python[-1].strip(),) if python else (),  # a draft before the final block is not a changed answer
        )

    def check(self, answer: str | None, problem: Mapping) -> Check:
        if answer is None or not answer.strip():
            return Check(False, "no_answer")
        if len(answer) > MAX_CODE_CHARS:
            return Check(False, f"syntax_error: longer than {MAX_CODE_CHARS:,} characters")
        fields = metadata(problem)
        return _run(answer, tuple(fields["test_list"]), fields.get("test_setup_code") or "")

    def failure_rule(self, check: Check) -> tuple[str, str] | None:
        return (check.code, check.reason) if check.code in self.failure_categories else None
