"""Style files: a teacher instruction, a judge rubric and optional rule-based format checks.

A style is ``<styles_dir>/<name>.yaml``. Its version is a hash of the file's parsed content, so
reformatting whitespace in the YAML does not change it but any change to the text does.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from trace_assets.errors import InputError, read_yaml


class StyleError(InputError):
    """A style file is missing or malformed."""


def _not_blank(value: str | None) -> str | None:
    if value is not None and not value.strip():
        raise ValueError("is empty; write the text")
    return value


def _distinct_ids(items: list, section: str) -> list:
    ids = [item.id for item in items]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise ValueError(f"{section} ids must be distinct; repeated: {repeated}")
    return items


class FormatCheck(BaseModel):
    """A rule a conforming trace must satisfy, checked without a model.

    - ``required``: ``pattern`` matches at least one line.
    - ``forbidden``: ``pattern`` matches no line.
    - ``all_lines``: every non-empty line matches ``pattern``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str
    kind: Literal["required", "forbidden", "all_lines"]
    pattern: str
    description: str = ""

    _filled = field_validator("id", "pattern")(_not_blank)


class RubricItem(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str
    text: str

    _filled = field_validator("id", "text")(_not_blank)


class WorkedExample(BaseModel):
    """One solved problem in the style, shown to the teacher before the real question."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    question: str
    solution: str

    _filled = field_validator("question", "solution")(_not_blank)


class StyleFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    description: str
    answer_format: Literal["hash", "label"] = "hash"
    instruction: str
    paraphrase_instruction: str | None = None
    example: WorkedExample | None = None
    rubric: list[RubricItem]
    format_checks: list[FormatCheck] = []

    _filled = field_validator("description", "instruction", "paraphrase_instruction")(_not_blank)

    @field_validator("rubric")
    @classmethod
    def _rubric(cls, rubric: list[RubricItem]) -> list[RubricItem]:
        if not rubric:
            raise ValueError("needs at least one item: the judge grades conformance against it")
        return _distinct_ids(rubric, "rubric")

    @field_validator("format_checks")
    @classmethod
    def _checks(cls, checks: list[FormatCheck]) -> list[FormatCheck]:
        for check in checks:
            try:
                re.compile(check.pattern)
            except (re.error, RecursionError, OverflowError) as error:
                raise ValueError(f"format check '{check.id}' has an invalid regex {check.pattern!r}: {error}") from None
        return _distinct_ids(checks, "format_checks")

    @model_validator(mode="after")
    def _example_conforms(self) -> StyleFile:
        if self.example is not None:
            failed = failed_format_checks(self.example.solution, self.format_checks)
            if failed:
                raise ValueError(
                    f"example.solution fails the style's own format checks {failed}; "
                    "the teacher would imitate a non-conforming trace"
                )
        return self


@dataclass(frozen=True)
class Style:
    name: str
    path: Path
    version: str
    spec: StyleFile

    def system_prompt(self) -> str:
        return self.spec.instruction.strip()

    def paraphrase_prompt(self) -> str:
        default = (
            "Rewrite the reference solution below in the required style. Keep every number and every "
            "calculation of the reference; do not add or change any step."
        )
        return (self.spec.paraphrase_instruction or default).strip()


def style_version(spec: StyleFile) -> str:
    canonical = json.dumps(spec.model_dump(), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def load_style(styles_dir: Path, name: str) -> Style:
    path = styles_dir / f"{name}.yaml"
    if not styles_dir.is_dir():
        raise StyleError(f"{styles_dir}: styles folder not found (style '{name}' is read from {path})")
    if not path.is_file():
        available = sorted(p.stem for p in styles_dir.glob("*.yaml"))
        raise StyleError(f"{path}: style file not found (styles in {styles_dir}: {available})")
    raw = read_yaml(path, StyleError, "style file")
    if raw is None:
        raise StyleError(f"{path}: the style file is empty; expected the sections description, instruction and rubric")
    try:
        spec = StyleFile.model_validate(raw)
    except ValidationError as error:
        problems = "; ".join(_describe(item) for item in error.errors())
        raise StyleError(f"{path}: invalid style file: {problems}") from None
    return Style(name=name, path=path, version=style_version(spec), spec=spec)


def _describe(item) -> str:
    key = ".".join(str(p) for p in item["loc"]) or "(top level)"
    if item["type"] == "missing":
        return f"missing section '{key}'"
    if item["type"] == "extra_forbidden":
        return f"unknown section '{key}' (check its spelling)"
    return f"{key}: {item['msg'].removeprefix('Value error, ')}"


def failed_format_checks(text: str, checks: list[FormatCheck]) -> list[str]:
    """Ids of the format checks ``text`` fails; pure, so the judge and tests share it."""
    lines = [line for line in (text or "").splitlines() if line.strip()]
    failed = []
    for check in checks:
        pattern = re.compile(check.pattern)
        if check.kind == "required":
            ok = any(pattern.search(line) for line in lines)
        elif check.kind == "forbidden":
            ok = not any(pattern.search(line) for line in lines)
        else:
            ok = bool(lines) and all(pattern.search(line) for line in lines)
        if not ok:
            failed.append(check.id)
    return failed


def style_row(style: Style) -> dict:
    """A style as a ``style_prompts`` row (what :func:`style_from_row` reads back)."""
    return {
        "style": style.name,
        "version": style.version,
        "path": str(style.path),
        "description": style.spec.description,
        "answer_format": style.spec.answer_format,
        "instruction": style.spec.instruction,
        "paraphrase_instruction": style.spec.paraphrase_instruction or "",
        "example": json.dumps(style.spec.example.model_dump()) if style.spec.example else "",
        "rubric": json.dumps([item.model_dump() for item in style.spec.rubric]),
        "format_checks": json.dumps([check.model_dump() for check in style.spec.format_checks]),
    }


def style_from_row(row: dict) -> Style:
    """Rebuild a Style from a ``style_prompts`` row, so downstream assets use the materialised version."""
    spec = StyleFile(
        description=row["description"],
        answer_format=row["answer_format"],
        instruction=row["instruction"],
        paraphrase_instruction=row.get("paraphrase_instruction") or None,
        example=WorkedExample(**json.loads(row["example"])) if row.get("example") else None,
        rubric=[RubricItem(**item) for item in json.loads(row["rubric"])],
        format_checks=[FormatCheck(**item) for item in json.loads(row["format_checks"])],
    )
    return Style(name=row["style"], path=Path(row["path"]), version=row["version"], spec=spec)
