"""An experiment is one YAML file; this module loads and validates it.

Every section is a pydantic model with ``extra="forbid"``, so a misspelt key is an error that
names the key, its place in the file and what was expected.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_EXPERIMENT = "experiments/smoke.yaml"
_PARTITION_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
# The dataset partition of the untrained students: no examples, evaluated as they are.
BASE_DATASET = "base"


def resolve_path(path: str) -> Path:
    """A path from an experiment file: absolute as given, else relative to the project root."""
    candidate = Path(path)
    return candidate if candidate.is_absolute() else PROJECT_ROOT / candidate


class ExperimentError(ValueError):
    """The experiment file is missing, not YAML, or does not match the expected structure."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SyntheticSource(_Section):
    min_steps: int = Field(2, ge=1, le=12)
    max_steps: int = Field(5, ge=1, le=12)
    operations: list[Literal["find", "buy", "give", "gift_multiple", "share", "lose_fraction"]] = Field(
        ["find", "buy", "give", "gift_multiple", "share", "lose_fraction"], min_length=1,
        description="operations a step may use; add/subtract only ('find', 'give') makes problems a tiny model can solve",
    )
    max_number: int = Field(60, ge=4, le=10_000, description="largest starting amount (and added amount, up to 15)")

    @model_validator(mode="after")
    def _ordered(self) -> "SyntheticSource":
        if self.min_steps > self.max_steps:
            raise ValueError(f"min_steps ({self.min_steps}) must be <= max_steps ({self.max_steps})")
        return self


class JsonlSource(_Section):
    train: str
    test: str
    skip_bad_lines: bool = False


class Gsm8kSource(_Section):
    dataset: str = "openai/gsm8k"
    config: str = "main"


class ProblemsConfig(_Section):
    source: Literal["synthetic", "gsm8k", "jsonl"] = "synthetic"
    n_train: int | None = Field(32, ge=1, description="train problems to sample; null keeps all")
    n_test: int | None = Field(16, ge=1, description="test problems to sample; null keeps all")
    synthetic: SyntheticSource = SyntheticSource()
    jsonl: JsonlSource | None = None
    gsm8k: Gsm8kSource = Gsm8kSource()

    @model_validator(mode="after")
    def _source_settings(self) -> "ProblemsConfig":
        if self.source == "jsonl" and self.jsonl is None:
            raise ValueError("source 'jsonl' needs a 'jsonl' section with 'train' and 'test' file paths")
        return self


class SamplingConfig(_Section):
    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(256, ge=1)
    n: int = Field(1, ge=1, description="samples per prompt")
    seed: int = 0


class ModelConfig(_Section):
    model: str = Field(description="HF id, local folder, or local:smollm2-135m-instruct")
    backend: Literal["vllm", "openai", "transformers"] = "vllm"
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    max_concurrency: int = Field(8, ge=1)
    timeout_s: float = Field(120, gt=0)
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs one vLLM engine spans")
    data_parallel_size: int = Field(1, ge=1, description="independent vLLM engines, each on its own GPUs and share of prompts")
    dtype: str = Field("auto", description="auto: bfloat16 on GPUs, float32 on CPUs (2x faster there without bf16 units)")
    max_model_len: int = Field(2048, ge=128)
    sampling: SamplingConfig = SamplingConfig()

    @property
    def gpus(self) -> int:
        """GPUs one step serving this model holds: every card of every engine."""
        return self.tensor_parallel_size * self.data_parallel_size


class StudentConfig(_Section):
    model: str
    dtype: str = "auto"


RecipeKind = Literal["G", "W", "H", "H_style", "mixture"]


class DatasetRecipe(_Section):
    recipe: RecipeKind
    style: str | None = None
    flawed_fraction: float = Field(0.0, ge=0, le=1)
    flaw: Literal["wrong", "corrupted", "both"] = "wrong"
    trim_after_answer: bool = False
    match_tokens_with: str | None = None
    per_problem: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _style_needed(self) -> "DatasetRecipe":
        if self.recipe != "H" and self.style is None:
            raise ValueError(f"recipe '{self.recipe}' needs a 'style'")
        return self


class TrainingConfig(_Section):
    seeds: list[int] = [0]
    epochs: float = Field(1.0, gt=0)
    max_steps: int = Field(-1, description="-1: run the full epochs")
    learning_rate: float = Field(2e-5, gt=0)
    batch_size: int = Field(8, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    max_length: int = Field(1024, ge=16)
    packing: bool = False
    eval_fraction: float = Field(0.1, ge=0, lt=1)
    curriculum: bool = False
    processes: int = Field(1, ge=1, description="data-parallel SFT processes (one GPU each), launched with torchrun")


class EvaluationConfig(_Section):
    prompt_format: Literal["zero_shot", "few_shot"] = "zero_shot"
    few_shot_k: int = Field(4, ge=0)
    max_tokens: int = Field(256, ge=1)
    schedule: str | None = Field(None, description="cron string; null disables the schedule")


class ThresholdsConfig(_Section):
    min_conformance_rate: float = Field(0.5, ge=0, le=1)
    min_correct_rate: float = Field(0.3, ge=0, le=1)


class GpuConfig(_Section):
    devices: list[int] = []
    memory_fraction: float = Field(0.85, gt=0, le=1)
    cpu_memory_fraction: float = Field(0.3, gt=0, le=1)


class Experiment(_Section):
    name: str
    seed: int = 0
    problems: ProblemsConfig = ProblemsConfig()
    styles_dir: str = "styles"
    styles: list[str]
    teacher: ModelConfig
    judge: ModelConfig
    students: dict[str, StudentConfig]
    datasets: dict[str, DatasetRecipe]
    training: TrainingConfig = TrainingConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    thresholds: ThresholdsConfig = ThresholdsConfig()
    gpu: GpuConfig = GpuConfig()

    # Where the file was loaded from; relative paths inside it resolve against the project root.
    source_path: str = ""

    @field_validator("styles")
    @classmethod
    def _style_names(cls, styles: list[str]) -> list[str]:
        for name in styles:
            if not _PARTITION_NAME.match(name):
                raise ValueError(f"style name '{name}' must match {_PARTITION_NAME.pattern}")
        if len(set(styles)) != len(styles):
            raise ValueError("style names must be unique")
        return styles

    @field_validator("datasets")
    @classmethod
    def _base_is_reserved(cls, entries: dict) -> dict:
        if BASE_DATASET in entries:
            raise ValueError(f"'{BASE_DATASET}' is reserved for the untrained students; name the dataset differently")
        return entries

    @field_validator("datasets", "students")
    @classmethod
    def _partition_names(cls, entries: dict) -> dict:
        for name in entries:
            if not _PARTITION_NAME.match(name):
                raise ValueError(f"name '{name}' must match {_PARTITION_NAME.pattern} (it becomes a partition key)")
        return entries

    @model_validator(mode="after")
    def _references(self) -> "Experiment":
        for name, recipe in self.datasets.items():
            if recipe.style is not None and recipe.style not in self.styles:
                raise ValueError(f"datasets.{name}.style: '{recipe.style}' is not one of styles {self.styles}")
            if recipe.match_tokens_with is not None and recipe.match_tokens_with not in self.datasets:
                raise ValueError(
                    f"datasets.{name}.match_tokens_with: '{recipe.match_tokens_with}' is not a dataset of this experiment"
                )
        return self

    def resolve(self, path: str) -> Path:
        return resolve_path(path)

    def datasets_using_style(self, style: str) -> list[str]:
        return [name for name, recipe in self.datasets.items() if recipe.style == style]

    def paraphrase_styles(self) -> frozenset[str]:
        """Styles the teacher must also paraphrase the human solutions into (for ``H_style`` recipes)."""
        return frozenset(recipe.style for recipe in self.datasets.values() if recipe.recipe == "H_style")

    def token_counting_student(self) -> StudentConfig:
        """The student whose tokenizer counts a dataset's training tokens (token matching, budgets)."""
        return next(iter(self.students.values()))

    def dataset_keys(self) -> list[str]:
        """Dataset partitions: every recipe, plus the untrained students' ``base``."""
        return [BASE_DATASET, *self.datasets]


def _format_validation_error(path: Path, error: ValidationError) -> str:
    lines = [f"{path}: invalid experiment file"]
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        if item["type"] == "extra_forbidden":
            lines.append(f"  - unknown key '{key}' (not part of the experiment format; check its spelling)")
        elif item["type"] == "missing":
            lines.append(f"  - missing required key '{key}'")
        else:
            got = item.get("input")
            got_text = "" if isinstance(got, dict) else f" (got {got!r})"
            lines.append(f"  - key '{key}': {item['msg']}{got_text}")
    return "\n".join(lines)


def load_experiment(path: str | os.PathLike | None = None) -> Experiment:
    """Load and validate an experiment; default from ``TRACE_ASSETS_EXPERIMENT`` or experiments/smoke.yaml."""
    raw_path = Path(path or os.environ.get("TRACE_ASSETS_EXPERIMENT") or DEFAULT_EXPERIMENT)
    file_path = raw_path if raw_path.is_absolute() else (Path.cwd() / raw_path)
    if not file_path.exists() and not raw_path.is_absolute():
        file_path = PROJECT_ROOT / raw_path
    if not file_path.exists():
        raise ExperimentError(f"{raw_path}: experiment file not found")
    try:
        data = yaml.safe_load(file_path.read_text())
    except yaml.YAMLError as error:
        raise ExperimentError(f"{file_path}: not valid YAML: {error}") from error
    if not isinstance(data, dict):
        raise ExperimentError(f"{file_path}: expected a mapping of experiment settings at the top level")
    data.setdefault("source_path", str(file_path))
    try:
        return Experiment.model_validate(data)
    except ValidationError as error:
        raise ExperimentError(_format_validation_error(file_path, error)) from None


def data_dir() -> Path:
    """The run-output folder: ``TRACE_ASSETS_DATA_DIR`` or ``data/`` in the project."""
    configured = os.environ.get("TRACE_ASSETS_DATA_DIR")
    return Path(configured).resolve() if configured else PROJECT_ROOT / "data"


def database_path(folder: Path | None = None) -> Path:
    return (folder or data_dir()) / "trace_assets.duckdb"
