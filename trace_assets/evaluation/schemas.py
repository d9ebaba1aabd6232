"""Schema of the ``eval_results`` table."""

import pandera.polars as pa
import polars as pl
from pandera.api.polars.types import PolarsData

from trace_assets.tasks.registry import TASKS


class EvalResultSchema(pa.DataFrameModel):
    """A student's greedy answer to one test problem."""

    dataset: str = pa.Field(description="training dataset; 'base' for the untrained student")
    student: str
    seed: int
    checkpoint_hash: str = pa.Field(description="checkpoints.content_hash of the model that answered")
    problem_id: str
    difficulty: int
    completion: str
    strict_answer: str = pa.Field(nullable=True)
    flexible_answer: str = pa.Field(nullable=True)
    extracted_answer: str = pa.Field(nullable=True)
    reference_answer: str
    is_correct: bool
    is_correct_strict: bool
    output_tokens: int = pa.Field(ge=0)
    finish_reason: str
    hit_length_limit: bool
    degenerate_loop: bool
    task: str = pa.Field(description="the problem's task (problems.task)")

    @pa.check("task")
    @classmethod
    def registered_task(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col(data.key).is_in(list(TASKS)))

    class Config:
        strict = True
