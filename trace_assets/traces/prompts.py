"""Chat messages sent to the teacher; pure, so tests and the benchmark build the same prompts."""

from __future__ import annotations

import hashlib
import json

from trace_assets.styles.library import Style


def teacher_messages(style: Style, question: str) -> list[dict]:
    return [
        {"role": "system", "content": style.system_prompt()},
        {"role": "user", "content": question.strip()},
    ]


def paraphrase_messages(style: Style, question: str, reference_solution: str) -> list[dict]:
    return [
        {"role": "system", "content": style.system_prompt()},
        {
            "role": "user",
            "content": f"{style.paraphrase_prompt()}\n\nProblem:\n{question.strip()}\n\n"
            f"Reference solution:\n{reference_solution.strip()}",
        },
    ]


def prompt_hash(messages: list[dict]) -> str:
    return hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()[:20]
