"""Schemas of the ``sft_examples`` and ``trace_stats`` tables."""

import pandera.polars as pa


class SftExampleSchema(pa.DataFrameModel):
    """One prompt/completion pair of a training dataset, with the ids it came from."""

    dataset: str
    example_id: str = pa.Field(unique=True)
    problem_id: str
    prompt: str = pa.Field(description="the question as the student sees it")
    completion: str = pa.Field(str_length={"min_value": 1})
    source: str = pa.Field(isin=["teacher", "human", "paraphrase"])
    trace_id: str = pa.Field(nullable=True, description="teacher_traces.trace_id; null for human solutions")
    style: str = pa.Field(nullable=True)
    style_version: str = pa.Field(nullable=True)
    is_correct: bool
    conforms: bool = pa.Field(nullable=True)
    flaw: str = pa.Field(isin=["none", "wrong", "corrupted"])
    trimmed_chars: int = pa.Field(ge=0)
    n_tokens: int = pa.Field(ge=0, description="completion tokens in the first student's tokenizer")

    class Config:
        strict = True


class TraceStatsSchema(pa.DataFrameModel):
    """Statistics of one dataset as seen by one student, before training."""

    dataset: str
    student: str
    n_examples: int = pa.Field(ge=0)
    total_tokens: int = pa.Field(ge=0)
    mean_tokens: float = pa.Field(nullable=True)
    correct_rate: float = pa.Field(nullable=True)
    conformance_rate: float = pa.Field(nullable=True)
    flawed_rate: float = pa.Field(nullable=True)
    gzip_ratio: float = pa.Field(nullable=True)
    template_line_share: float = pa.Field(nullable=True)
    nll_before: float = pa.Field(nullable=True, description="student's mean per-token NLL on the completions")

    class Config:
        strict = True
