"""Chat messages sent to the teacher; pure, so tests and the benchmark build the same prompts."""

from __future__ import annotations

import hashlib
import json

from trace_assets.styles.library import Style


def _example_turns(style: Style) -> list[dict]:
    example = style.spec.example
    if example is None:
        return []
    return [
        {"role": "user", "content": example.question.strip()},
        {"role": "assistant", "content": example.solution.strip()},
    ]


def teacher_messages(style: Style, question: str) -> list[dict]:
    """System instruction, the style's worked example as a prior exchange (if any), then the question."""
    return [
        {"role": "system", "content": style.system_prompt()},
        *_example_turns(style),
        {"role": "user", "content": question.strip()},
    ]


def paraphrase_messages(style: Style, question: str, reference_solution: str) -> list[dict]:
    return [
        {"role": "system", "content": style.system_prompt()},
        *_example_turns(style),
        {
            "role": "user",
            "content": f"{style.paraphrase_prompt()}\n\nProblem:\n{question.strip()}\n\n"
            f"Reference solution:\n{reference_solution.strip()}",
        },
    ]


def prompt_hash(messages: list[dict]) -> str:
    return hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()[:20]
