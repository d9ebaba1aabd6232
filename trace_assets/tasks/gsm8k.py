"""GSM8K-format arithmetic word problems: the project's original task, unchanged.

Problems come from the experiment's ``source`` (synthetic, the hub, local JSONL); answers are read
by :mod:`trace_assets.answers` and compared as exact numbers; failures are classified by the rules
and judge of :mod:`trace_assets.reporting.failures`.
"""

from __future__ import annotations

from collections.abc import Mapping

from trace_assets.answers import Extraction, extract_answer, parse_number
from trace_assets.tasks.base import Check


class Gsm8kTask:
    name = "gsm8k"
    instruction = ""  # the style's instruction asks for `#### <number>`; questions are sent as written
    failure_categories: tuple[str, ...] = ()  # its categories are the shared ones
    numbers_matter = False

    def load(self, settings, seed: int, report) -> dict[str, list[dict]]:
        from trace_assets.problems.sources import gsm8k_rows

        return gsm8k_rows(settings, seed, report)

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
