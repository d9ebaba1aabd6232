"""The reviser: a style's text and its students' validation failures in, a revised style out. Pure.

The reviser's reply is untrusted model output. It is asked for as guided JSON
``{"instruction": ..., "changes": ...}`` (:data:`REVISION_SCHEMA`, with room for it in
:func:`revision_request`'s token budget) and accepted only if the instruction is new and of sane
length, and the style built from it (same answer format, rubric, format checks and worked example)
passes the style file's own validation and loads back from the file written for it. Anything else
is a rejected attempt with its reason (a reply cut off at the token limit says so); after the
experiment's attempts the round keeps its parent's text.

The answer-format line is the system's, not the reviser's: the reviser writes the guidance, and the
system's line (:data:`ANSWER_LINES`) always ends the instruction, whatever the reviser wrote about the
answer form (a small model writing ``"#### <number>"`` inside a JSON string ends the string at the first
quote). The first GPU loop's 135M reviser wrote "Correctly avoid the last line with the number of the end
of the instruction: #### (You must add a new line ...", which the earlier test "the instruction mentions
####" took as an answer line, and that round's teacher was never told how to end. The reviser's own
sentences stay as written (the styles' instructions are hard-wrapped, so the marker's line is often the
end of a sentence that also says something else).

A round's style file is its parent's file text: byte for byte when the round keeps its parent, with
only the instruction's value replaced when it is revised, so a diff against the parent shows only
what changed (:func:`round_style_text`).

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

from trace_assets.evaluation.degeneration import is_degenerate_loop
from trace_assets.generation.cached import request_key
from trace_assets.generation.types import Completion, Request, Sampling
from trace_assets.judging.verdicts import json_reply
from trace_assets.reporting.failures import CATEGORY_DESCRIPTIONS
from trace_assets.styles.library import Style, StyleError, StyleFile, load_style

MAX_INSTRUCTION_CHARS = 3000  # the shipped styles' instructions are 150-800 characters
MIN_INSTRUCTION_CHARS = 40  # shorter is a placeholder or a fragment, not guidance
MAX_CHANGES_CHARS = 300
# The grammar bounds both strings, so a guided reply closes its JSON within this many tokens (at
# about 3 characters a token) unless the model's context ends first.
REVISION_MAX_TOKENS = (MAX_INSTRUCTION_CHARS + MAX_CHANGES_CHARS) // 3 + 100
REVISION_SCHEMA = {
    "type": "object",
    "properties": {
        "instruction": {"type": "string", "maxLength": MAX_INSTRUCTION_CHARS},
        "changes": {"type": "string", "maxLength": MAX_CHANGES_CHARS},
    },
    "required": ["instruction", "changes"],
    "additionalProperties": False,
}
EXCERPT_CHARS = 600
ANSWER_MARKERS = {"hash": "####", "label": "ANSWER:"}
# What the system appends to a revised instruction that no longer asks for the style's answer form.
ANSWER_LINES = {"hash": "End with a last line: #### <number>", "label": "End with a last line: ANSWER: <number>"}


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


# what the reviser is told instead of failures when the parent round trained no student
NOTHING_TRAINED = (
    "none: no student could be trained, because none of the teacher's solutions written with this "
    "instruction reached the right answer. Rewrite it so that the solutions come out right."
)


def reviser_messages(
    style: Style, counts: Mapping[str, int], examples: Iterable[FailureExample], trained: bool = True
) -> list[dict]:
    """The chat sent to the reviser: the style as it is, failure counts by category, and examples;
    ``trained=False``: the parent round trained nothing (:data:`NOTHING_TRAINED` instead of failures)."""
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
        f"Failures by category:\n" + ("\n".join(lines) if trained else NOTHING_TRAINED) + "\n\n" + "\n\n".join(shown) + "\n\n"
        f"Rewrite the instruction so that the teacher's solutions teach students to avoid these failures. Keep what "
        f"works; change the guidance. Write only the guidance: you need not say how the final answer is written, "
        f"because the system itself ends the instruction with the answer-format line ({ANSWER_LINES[style.spec.answer_format]}), "
        f"whatever yours says about {marker}.\n"
        f"Reply in JSON with two fields: instruction, the whole new instruction (at most {MAX_INSTRUCTION_CHARS} "
        f"characters), and changes, one sentence on what you changed."
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


def revision_request(messages: list[dict], model: str, sampling: Sampling, attempt: int) -> tuple[Sampling, Request]:
    """Attempt ``attempt``'s sampling (one sample, its own seed, at least :data:`REVISION_MAX_TOKENS`:
    the reviser is often the teacher, whose budget is sized for solutions, not for a whole instruction
    in JSON) and its guided-JSON request."""
    sampling = Sampling(
        **{
            **sampling.__dict__,
            "n": 1,
            "seed": sampling.seed + attempt,
            "max_tokens": max(sampling.max_tokens, REVISION_MAX_TOKENS),
        }
    )
    return sampling, Request(request_key(messages, model, sampling, REVISION_SCHEMA), messages, REVISION_SCHEMA)


def with_answer_line(instruction: str, answer_format: str) -> str:
    """The reviser's instruction ended by the system's answer-format line (not added twice)."""
    line = ANSWER_LINES[answer_format]
    text = instruction.rstrip()
    return text if text.endswith(line) else f"{text}\n{line}"


def _without_answer_line(instruction: str, answer_format: str) -> str:
    """The instruction less the system's answer line at its end: what "unchanged" compares."""
    return _normal(instruction.rstrip().removesuffix(ANSWER_LINES[answer_format]))


def _unreadable(completion: Completion) -> str:
    if completion.finish_reason == "length":
        return (
            f"the reply was cut off at the token limit ({completion.output_tokens} tokens) before its JSON closed "
            f"(raise the reviser's sampling.max_tokens or max_model_len)"
        )
    if completion.error:
        return f"the reviser's request failed: {completion.error}"
    if completion.text.lstrip().startswith("{"):
        return "the reply's JSON object is incomplete or malformed"
    return "the reply is not a JSON object"


def parse_revision(completion: Completion | None, parent: Style) -> Revision:
    """The revised style the reviser's reply describes, or why it can't be used."""
    if completion is None:
        return Revision(None, "the reviser gave no reply")
    data = json_reply(completion.text)
    if data is None:
        return Revision(None, _unreadable(completion))
    instruction = data.get("instruction")
    if not isinstance(instruction, str) or not instruction.strip():
        return Revision(None, "the reply has no instruction text")
    instruction = instruction.strip()
    if len(instruction) > MAX_INSTRUCTION_CHARS:
        return Revision(None, f"the instruction is {len(instruction)} characters, over {MAX_INSTRUCTION_CHARS}")
    if len(instruction) < MIN_INSTRUCTION_CHARS:
        return Revision(None, f"the instruction is {len(instruction)} characters, too short to be guidance: {instruction!r}")
    if is_degenerate_loop(instruction):  # a small reviser stuck repeating itself, as a student can be
        return Revision(None, "the instruction repeats itself verbatim (a degenerate loop)")
    answer_format = parent.spec.answer_format
    if _without_answer_line(instruction, answer_format) == _without_answer_line(parent.spec.instruction, answer_format):
        return Revision(None, "the instruction is unchanged")
    instruction = with_answer_line(instruction, answer_format)
    try:
        spec = parent.spec.model_copy(update={"instruction": instruction + "\n"})
        spec = StyleFile.model_validate(spec.model_dump())  # every check a style file gets
    except ValidationError as error:
        return Revision(None, f"the revised style is invalid: {error.errors()[0]['msg']}")
    changes = data.get("changes")
    return Revision(
        spec, _normal(changes)[:MAX_CHANGES_CHARS] if isinstance(changes, str) and changes.strip() else "no summary given"
    )


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings as block scalars, and no line ever rewrapped."""


_BlockDumper.add_representer(
    str, lambda dumper, value: dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)
)


def _dump(data: dict) -> str:
    return yaml.dump(data, Dumper=_BlockDumper, sort_keys=False, allow_unicode=True, width=float("inf"))


def _loads(text: str):
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return None


def round_style_text(parent_text: str, spec: StyleFile) -> str:
    """The file text of a round whose style is ``spec``, written from its parent's file text.

    Only the instruction may differ from the parent (the reviser changes nothing else), so the text is
    the parent's with the instruction's value replaced in place, every other byte kept: a round that
    keeps its parent's instruction gets its parent's text unchanged. A parent file that can't be
    edited in place (a flow mapping, say) is written out whole in its own key order, never rewrapped.
    """
    parent = yaml.safe_load(parent_text)
    if parent.get("instruction") == spec.instruction:
        return parent_text
    node = yaml.compose(parent_text)
    value = next((v for k, v in node.value if k.value == "instruction"), None) if isinstance(node, yaml.MappingNode) else None
    if value is not None:
        start, end = value.start_mark.index, value.end_mark.index
        replacement = _dump({"instruction": spec.instruction}).removeprefix("instruction: ")
        if not parent_text[start:end].endswith("\n"):  # a one-line scalar: the line's own break follows it
            replacement = replacement.removesuffix("\n")
        text = parent_text[:start] + replacement + parent_text[end:]
        if _loads(text) == {**parent, "instruction": spec.instruction}:
            return text
    return _dump({**parent, "instruction": spec.instruction})


def write_round_style(folder: Path, style: str, number: int, parent_text: str, spec: StyleFile) -> Style:
    """Write round ``number``'s style file ``<folder>/<style>-r<number>.yaml`` from its parent's file text
    (:func:`round_style_text`) and load it back: what is written must be a valid style that reads as ``spec``."""
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{style}-r{number}"
    (folder / f"{name}.yaml").write_text(round_style_text(parent_text, spec), encoding="utf-8")
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
