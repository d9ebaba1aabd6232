"""The reviser: a style's text and its students' validation failures in, a revised style out. Pure.

The reviser's reply is untrusted model output. It is read as JSON ``{"instruction": ..., "changes": ...}``
and accepted only if the instruction is new, of sane length, still asks for the style's answer
format, and the style built from it (same answer format, rubric, format checks and worked example)
passes the style file's own validation and loads back from the file written for it. Anything else is
a rejected attempt with its reason; after the experiment's attempts the round keeps its parent's text.

The reviser only ever sees validation problems. :func:`check_no_test_text` refuses to send a prompt
that contains a test question, whatever built it.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import yaml
from pydantic import ValidationError

from trace_assets.judging.verdicts import json_reply
from trace_assets.reporting.failures import CATEGORY_DESCRIPTIONS
from trace_assets.styles.library import Style, StyleError, StyleFile, load_style

REVISION_SCHEMA = {
    "type": "object",
    "properties": {"instruction": {"type": "string"}, "changes": {"type": "string"}},
    "required": ["instruction", "changes"],
}
MAX_INSTRUCTION_CHARS = 6000
EXCERPT_CHARS = 600
ANSWER_MARKERS = {"hash": "####", "label": "ANSWER:"}


class LeakedTestQuestion(RuntimeError):
    """A reviser prompt contained a test question."""


@dataclass(frozen=True)
class FailureExample:
    failure_id: str
    category: str
    question: str
    completion: str
    reference_answer: str
    extracted_answer: str | None
    evidence: str


@dataclass(frozen=True)
class Revision:
    spec: StyleFile | None  # None: rejected
    reason: str  # why it was rejected, or the reviser's summary of its changes


def pick_examples(failures: pl.DataFrame, per_category: int, seed: int) -> list[FailureExample]:
    """Up to ``per_category`` failures of each category, chosen by a seeded hash of their ids (so the same
    failures give the same prompt), most frequent category first. ``failures``: round_failures rows joined
    with the failing answer (completion, extracted_answer, reference_answer) and the question."""
    counts = failures.group_by("category").len().sort(["len", "category"], descending=[True, False])
    chosen = []
    for category in counts["category"]:
        rows = sorted(
            failures.filter(pl.col("category") == category).iter_rows(named=True),
            key=lambda row: hashlib.sha256(f"{seed}:{row['failure_id']}".encode()).hexdigest(),
        )
        for row in rows[:per_category]:
            chosen.append(
                FailureExample(
                    row["failure_id"],
                    category,
                    row["question"],
                    row["completion"],
                    row["reference_answer"],
                    row["extracted_answer"],
                    row["evidence"],
                )
            )
    return chosen


def _excerpt(text: str) -> str:
    text = (text or "").strip()
    return text if len(text) <= EXCERPT_CHARS else text[: EXCERPT_CHARS - 1] + "…"


def reviser_messages(style: Style, counts: Mapping[str, int], examples: Iterable[FailureExample]) -> list[dict]:
    """The chat sent to the reviser: the style as it is, failure counts by category, and examples."""
    marker = ANSWER_MARKERS[style.spec.answer_format]
    lines = [f"- {category}: {count} ({CATEGORY_DESCRIPTIONS.get(category, '')})" for category, count in counts.items()]
    shown = []
    for number, example in enumerate(examples, 1):
        shown.append(
            f"Example {number} ({example.category}).\nProblem: {example.question.strip()}\n"
            f"Student's answer:\n{_excerpt(example.completion)}\n"
            f"Student's final answer: {example.extracted_answer or 'none'}; correct answer: {example.reference_answer}\n"
            f"Why it failed: {example.evidence or CATEGORY_DESCRIPTIONS.get(example.category, '')}"
        )
    example_text = ""
    if style.spec.example is not None:
        example_text = (
            f"\n\nThe teacher also sees this worked example, which stays as it is:\n{style.spec.example.solution.strip()}"
        )
    user = (
        f"A teacher model writes worked solutions following the instruction below. Small student models were "
        f"fine-tuned on those solutions, and on held-out problems they still fail like this.\n\n"
        f"Current instruction:\n<<<\n{style.system_prompt()}\n>>>{example_text}\n\n"
        f"Failures by category:\n" + "\n".join(lines) + "\n\n" + "\n\n".join(shown) + "\n\n"
        f"Rewrite the instruction so that the teacher's solutions teach students to avoid these failures. Keep what "
        f'works; change the guidance. The solutions must still end with the final answer in the form "{marker} <number>". '
        f'Reply with JSON: {{"instruction": "<the full new instruction>", "changes": "<one sentence on what you changed>"}}.'
    )
    return [
        {"role": "system", "content": "You revise the instructions a teacher model follows when writing worked solutions."},
        {"role": "user", "content": user},
    ]


def check_no_test_text(messages: list[dict], test_questions: Iterable[str]) -> None:
    """Refuse a reviser prompt that contains any test question (the test split is the report's alone)."""
    text = "\n".join(str(message.get("content", "")) for message in messages)
    for question in test_questions:
        if question.strip() and question.strip() in text:
            raise LeakedTestQuestion(f"a reviser prompt contains the test question {question.strip()[:80]!r}; nothing was sent")


def _normal(text: str) -> str:
    return " ".join(text.split())


def parse_revision(text: str | None, parent: Style) -> Revision:
    """The revised style the reply describes, or why it can't be used."""
    data = json_reply(text)
    if data is None:
        return Revision(None, "the reply is not a JSON object")
    instruction = data.get("instruction")
    if not isinstance(instruction, str) or not instruction.strip():
        return Revision(None, "the reply has no instruction text")
    instruction = instruction.strip()
    if len(instruction) > MAX_INSTRUCTION_CHARS:
        return Revision(None, f"the instruction is {len(instruction)} characters, over {MAX_INSTRUCTION_CHARS}")
    if _normal(instruction) == _normal(parent.spec.instruction):
        return Revision(None, "the instruction is unchanged")
    marker = ANSWER_MARKERS[parent.spec.answer_format]
    if marker in parent.spec.instruction and marker not in instruction:
        return Revision(None, f"the instruction no longer asks for the answer format '{marker} <number>'")
    try:
        spec = parent.spec.model_copy(update={"instruction": instruction + "\n"})
        spec = StyleFile.model_validate(spec.model_dump())  # every check a style file gets
    except ValidationError as error:
        return Revision(None, f"the revised style is invalid: {error.errors()[0]['msg']}")
    changes = data.get("changes")
    return Revision(spec, _normal(changes)[:300] if isinstance(changes, str) and changes.strip() else "no summary given")


def style_yaml(spec: StyleFile) -> str:
    """A style file's text: block scalars for multi-line strings, keys in the file format's order."""

    class _Dumper(yaml.SafeDumper):
        pass

    def text(dumper, value: str):
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)

    _Dumper.add_representer(str, text)
    return yaml.dump(spec.model_dump(exclude_none=True), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


def write_style(folder: Path, style: str, number: int, spec: StyleFile) -> Style:
    """Write round ``number``'s style as ``<folder>/<style>-r<number>.yaml`` and load it back: what is
    written must be a valid style whose version is that of ``spec``."""
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{style}-r{number}"
    (folder / f"{name}.yaml").write_text(style_yaml(spec), encoding="utf-8")
    try:
        loaded = load_style(folder, name)
    except StyleError as error:
        raise RuntimeError(f"the revised style written to {folder / name}.yaml does not load back: {error}") from None
    if loaded.spec != spec:
        raise RuntimeError(f"{folder / name}.yaml does not read back as the revision that was written")
    return loaded


def style_diff(parent_text: str, child_text: str, parent_name: str, child_name: str) -> str:
    """A unified diff of two style files' text."""
    return "".join(
        difflib.unified_diff(
            parent_text.splitlines(keepends=True), child_text.splitlines(keepends=True), fromfile=parent_name, tofile=child_name
        )
    )


def prompt_hash(messages: list[dict]) -> str:
    return hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()[:20]
