"""Schema of the ``problems`` table."""

import pandera.polars as pa
import polars as pl
from pandera.api.polars.types import PolarsData

from trace_assets.tasks.registry import TASKS

NUMERIC_ANSWER = r"^-?\d+(\.\d+)?(/\d+)?$"


class ProblemSchema(pa.DataFrameModel):
    """One problem of one task with its human reference solution."""

    problem_id: str = pa.Field(str_matches=r"^p_[0-9a-f]{12}$", description="hash of the normalised question (and task)")
    split: str = pa.Field(isin=["train", "validation", "test"], description="validation: train problems the loop holds out")
    question: str = pa.Field(
        str_length={"min_value": 1}, description="as every model sees it, with the task's answer instruction"
    )
    reference_solution: str = pa.Field(description="the human solution, ending in the task's answer format")
    answer: str = pa.Field(
        str_length={"min_value": 1},
        description="reference answer in the task's form (a canonical number where the task's answers are numbers)",
    )
    difficulty: int = pa.Field(
        ge=0, description="the task's difficulty measure (gsm8k: reasoning steps, countdown: numbers, ...)"
    )
    source: str = pa.Field(isin=["synthetic", "gsm8k", "jsonl", "hub"])
    task: str = pa.Field(description="the task whose verifier scores answers to it (a registered task)")
    task_metadata: str = pa.Field(description="JSON of task-specific fields (countdown numbers, math level/type, mbpp tests)")

    @pa.check("task")
    @classmethod
    def registered_task(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col(data.key).is_in(list(TASKS)))

    @pa.dataframe_check
    @classmethod
    def numeric_answers(cls, data: PolarsData) -> pl.LazyFrame:
        """Tasks with numeric answers (``Task.numeric_answers``) store them canonical."""
        other = [name for name, task in TASKS.items() if not task.numeric_answers]
        return data.lazyframe.select(pl.col("task").is_in(other) | pl.col("answer").str.contains(NUMERIC_ANSWER))

    class Config:
        strict = True
