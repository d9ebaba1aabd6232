"""What the experiment's sections and the tasks' own settings share, below both: the project root,
how a path in an experiment file resolves, and the strict pydantic base of every section."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def resolve_path(path: str) -> Path:
    """A path from an experiment file: absolute as given, else relative to the project root."""
    candidate = Path(path)
    return candidate if candidate.is_absolute() else PROJECT_ROOT / candidate


class Section(BaseModel):
    """A section of the experiment file: a misspelt key is an error, values are frozen and finite."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class JsonlSource(Section):
    train: str = Field(min_length=1, description="path of the train split's JSONL file")
    test: str = Field(min_length=1, description="path of the test split's JSONL file")
    skip_bad_lines: bool = False


class HubSource(Section):
    """A task's problems from a Hugging Face hub dataset (needs network or a populated HF cache)."""

    dataset: str = Field(min_length=1, description="hub dataset id, e.g. 'google-research-datasets/mbpp'")
    config: str | None = Field(None, description="the dataset's config (subset) name; null: its default")
    train_split: str = Field("train", min_length=1, description="the hub split read as the train problems")
    test_split: str = Field("test", min_length=1, description="the hub split read as the test problems")
    skip_bad_rows: bool = Field(False, description="skip (and list in the load report) rows not in the task's format")


# The synthetic generators run when an experiment is checked (trace_assets/inputs.py); past this many
# problems they take seconds, and no study here needs more than GSM8K's 8,792.
MAX_SYNTHETIC_PROBLEMS = 100_000


class SettingsError(ValueError):
    """A task's setting that cannot work; ``key`` is where it is under the experiment's ``problems``."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key
