"""Schema of the ``teacher_traces`` table."""

import pandera.polars as pa


class TeacherTraceSchema(pa.DataFrameModel):
    """One teacher completion for one problem under one style."""

    trace_id: str = pa.Field(unique=True, description="request hash + sample index")
    problem_id: str
    style: str
    kind: str = pa.Field(isin=["solve", "paraphrase"], description="solve the problem, or paraphrase its human solution")
    style_version: str = pa.Field(description="content hash of the style file that prompted it")
    prompt_hash: str = pa.Field(description="hash of the chat messages sent to the teacher")
    request_hash: str = pa.Field(description="hash of messages + model + sampling: the cache key")
    model: str
    sampling: str = pa.Field(description="JSON of the sampling parameters")
    sample_index: int = pa.Field(ge=0)
    completion: str
    finish_reason: str
    prompt_tokens: int = pa.Field(ge=0)
    n_tokens: int = pa.Field(ge=0, description="output tokens in the teacher's tokenizer")
    strict_answer: str = pa.Field(nullable=True)
    label_answer: str = pa.Field(nullable=True)
    flexible_answer: str = pa.Field(nullable=True)
    extracted_answer: str = pa.Field(nullable=True, description="declared answer, else the flexible fallback")
    extraction_method: str = pa.Field(isin=["strict", "label", "flexible", "none"])
    reference_answer: str
    is_correct: bool
    step_confidence: float = pa.Field(
        nullable=True, description="lowest windowed mean token log-probability over the trace's steps; null: none recorded"
    )
    mean_logprob: float = pa.Field(nullable=True, description="mean token log-probability of the whole trace")

    class Config:
        strict = True
