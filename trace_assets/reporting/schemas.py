"""Schemas of the ``failure_modes`` and ``accuracy`` tables."""

import pandera.polars as pa
import polars as pl
from pandera.api.polars.types import PolarsData

from trace_assets.reporting.failures import SOURCES, all_categories


class FailureModeSchema(pa.DataFrameModel):
    """The failure category of one wrong answer."""

    dataset: str
    student: str
    seed: int
    problem_id: str
    category: str = pa.Field(description="a shared category or one a registered task's verifier decides")
    source: str = pa.Field(isin=SOURCES, description="rules (decisive, or no judge), judge, rules+judge (agreed), unparsable")
    evidence: str

    @pa.check("category")
    @classmethod
    def known_category(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col(data.key).is_in(all_categories()))

    class Config:
        strict = True


class AccuracySchema(pa.DataFrameModel):
    """Accuracy of one student trained on one dataset: mean over seeds, noise floor and 95% interval."""

    dataset: str
    student: str
    n: int = pa.Field(ge=0, description="test problems")
    n_seeds: int = pa.Field(ge=1)
    accuracy: float = pa.Field(ge=0, le=1, description="mean over training seeds and problems")
    sd_seeds: float = pa.Field(
        nullable=True, description="standard deviation of the per-seed accuracies (noise floor); null with one seed"
    )
    ci_low: float = pa.Field(nullable=True, description="95% interval: see trace_assets.reporting.stats.METHOD")
    ci_high: float = pa.Field(nullable=True)
    accuracy_strict: float = pa.Field(
        ge=0, le=1, nullable=True, description="accuracy counting only the `#### N` line the prompt asks for"
    )
    training: str = pa.Field(
        nullable=True,
        description="pooled: one model per seed trained on every task; per_task: one per task and seed, each answering "
        "its own task's problems; none: untrained (eval_results.training)",
    )

    class Config:
        strict = True
