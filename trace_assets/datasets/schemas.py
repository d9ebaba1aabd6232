"""Schemas of the ``sft_examples``, ``dataset_exclusions`` and ``trace_stats`` tables."""

import pandera.polars as pa
import polars as pl

# Why an arm did not use a trace (or, with a null trace_id, a problem). The first failing check is recorded.
EXCLUSION_REASONS = (
    "not_a_train_problem",  # the trace's problem is not in the train split (e.g. removed as contaminated)
    # the eligibility policy, the same for every synthetic arm:
    "truncated",  # finish reason 'length': cut off at max_tokens
    "no_declared_answer",  # no final answer in the style's own format (at most one the fallback extractor finds)
    "answer_changed",  # declares one answer, then another
    "judge_unparsable",  # the judge's reply was not a parseable verdict
    "not_conforming",  # fails the style's rules or the judge (when the experiment requires conformance)
    # what the arm is made of:
    "wrong_answer",  # G, mixture, H_style: the declared answer is wrong
    "right_answer",  # W: the declared answer is right
    "unfaithful_paraphrase",  # H_style: misses intermediate quantities of the human solution, or the judge says so
    "arithmetic_slip",  # exclude_arithmetic_slips: otherwise usable, but a calculation's stated result is wrong
    "not_selected",  # eligible, but a better-ranked sample of the same problem was taken
    "no_correct_wrong_pair",  # pair_correct_wrong: the problem lacks an eligible right or wrong trace of the style
    "no_flawed_version",  # mixture: no flawed version of the problem's trace passes the flaw check
    "control_span_too_short",  # trim control: the reasoning before the conclusion is shorter than the tail
    "not_in_common_problems",  # another arm of the comparison group has no eligible trace for the problem
    "replaced_by_flawed",  # mixture: the problem's correct trace gave way to its flawed version
    "over_token_budget",  # token matching dropped it (per student)
    "no_logprobs",  # keep_by: the trace has no recorded token log-probabilities to rank it by
    "low_confidence",  # keep_by: outside the kept fraction of the arm's problems by confidence
)


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
    flaw: str = pa.Field(isin=["none", "wrong", "corrupted", "complete", "degraded"])
    trimmed_chars: int = pa.Field(ge=0, description="characters trimming (or its control) removed")
    n_tokens: int = pa.Field(ge=0, description="completion tokens in the tokenizer of `student` (the first student's if null)")
    removed_tokens: int = pa.Field(ge=0, description="tokens trimming or its control removed (first student's tokenizer)")
    student: str = pa.Field(
        nullable=True, description="null: the same rows for every student; set: this student's token-matched rows"
    )

    class Config:
        strict = True


class DatasetExclusionSchema(pa.DataFrameModel):
    """A trace (or, with a null trace_id, a problem) that a dataset did not use, and why."""

    dataset: str
    student: str = pa.Field(nullable=True, description="set for token-matching drops, which differ per student")
    problem_id: str
    trace_id: str = pa.Field(nullable=True, description="judged_traces.trace_id; null for a problem without a trace")
    reason: str = pa.Field(isin=list(EXCLUSION_REASONS))
    detail: str = pa.Field(nullable=True)

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


def student_rows(examples: pl.DataFrame, dataset: str, student: str) -> pl.DataFrame:
    """The examples ``student`` trains on from ``dataset``: shared rows, or its own token-matched ones."""
    return examples.filter((pl.col("dataset") == dataset) & (pl.col("student").is_null() | (pl.col("student") == student)))
