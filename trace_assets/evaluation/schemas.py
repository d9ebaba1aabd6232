"""Schema of the ``eval_results`` table."""

import pandera.polars as pa
import polars as pl
from pandera.api.polars.types import PolarsData

from trace_assets.tasks.registry import TASKS

# How the model that answered was fine-tuned (eval_results.training, accuracy.training).
POOLED = "pooled"  # one model trained on every task's examples
PER_TASK = "per_task"  # one model per task, trained on that task's examples alone, answering only that task
UNTRAINED = "none"  # the base student as it is
TRAINING_KINDS = (POOLED, PER_TASK, UNTRAINED)


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
    training: str = pa.Field(
        isin=list(TRAINING_KINDS),
        description="pooled: one model trained on every task; per_task: a model trained on this row's task alone; none: untrained",
    )

    @pa.check("task")
    @classmethod
    def registered_task(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col(data.key).is_in(list(TASKS)))

    class Config:
        strict = True
