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

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError


class StyleError(ValueError):
    """A style file is missing or malformed."""


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


class RubricItem(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str
    text: str


class WorkedExample(BaseModel):
    """One solved problem in the style, shown to the teacher before the real question."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    question: str
    solution: str


class StyleFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    description: str
    answer_format: Literal["hash", "label"] = "hash"
    instruction: str
    paraphrase_instruction: str | None = None
    example: WorkedExample | None = None
    rubric: list[RubricItem]
    format_checks: list[FormatCheck] = []


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
    if not path.exists():
        available = sorted(p.stem for p in styles_dir.glob("*.yaml"))
        raise StyleError(f"{path}: style file not found (styles in {styles_dir}: {available})")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        spec = StyleFile.model_validate(raw)
    except yaml.YAMLError as error:
        raise StyleError(f"{path}: not valid YAML: {error}") from error
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in item['loc']) or '(top level)'}: {item['msg']}" for item in error.errors()
        )
        raise StyleError(f"{path}: invalid style file: {problems}") from None
    for check in spec.format_checks:
        try:
            re.compile(check.pattern)
        except re.error as error:
            raise StyleError(f"{path}: format check '{check.id}' has an invalid regex: {error}") from None
    return Style(name=name, path=path, version=style_version(spec), spec=spec)


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
