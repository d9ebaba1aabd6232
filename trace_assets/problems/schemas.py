"""Schema of the ``problems`` table."""

import pandera.polars as pa


class ProblemSchema(pa.DataFrameModel):
    """One math word problem with its human reference solution."""

    problem_id: str = pa.Field(str_matches=r"^p_[0-9a-f]{12}$", description="hash of the normalised question")
    split: str = pa.Field(isin=["train", "validation", "test"], description="validation: train problems the loop holds out")
    question: str = pa.Field(str_length={"min_value": 1})
    reference_solution: str = pa.Field(description="GSM8K-format solution, calculator annotations removed")
    answer: str = pa.Field(str_matches=r"^-?\d+(\.\d+)?(/\d+)?$", description="canonical final answer")
    difficulty: int = pa.Field(ge=0, description="reasoning steps in the reference solution")
    source: str = pa.Field(isin=["synthetic", "gsm8k", "jsonl"])

    class Config:
        strict = True
