"""Schema of the ``judged_traces`` table."""

import pandera.polars as pa


class JudgedTraceSchema(pa.DataFrameModel):
    """A verdict on one teacher trace: rule-based format checks plus the LLM judge."""

    trace_id: str = pa.Field(unique=True)
    problem_id: str
    style: str
    kind: str = pa.Field(isin=["solve", "paraphrase"])
    style_version: str
    completion: str
    finish_reason: str
    n_tokens: int = pa.Field(ge=0)
    extracted_answer: str = pa.Field(nullable=True)
    is_correct: bool
    step_confidence: float = pa.Field(nullable=True, description="from teacher_traces: the least confident step")
    mean_logprob: float = pa.Field(nullable=True, description="from teacher_traces: mean token log-probability")
    rules_failed: str = pa.Field(description="comma-separated ids of failed format checks")
    rules_pass: bool
    judge_parsed: bool
    judge_conforms: bool = pa.Field(nullable=True)
    judge_failed: str = pa.Field(description="comma-separated rubric ids the judge says failed")
    judge_reason: str
    judge_faithful: bool = pa.Field(
        nullable=True,
        description="paraphrases: the judge says it follows the human solution's steps; null for solves and unparsable replies",
    )
    judge_truncated: bool = pa.Field(description="the trace was longer than the judge's context allows; it cannot pass")
    judge_error: str = pa.Field(nullable=True)
    judge_model: str
    verdict_source: str = pa.Field(isin=["rules", "judge", "both"])
    conforms: bool

    class Config:
        strict = True
