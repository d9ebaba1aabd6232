"""Schemas of the closed loop's tables: each round's style version and what the round produced.

Every table carries ``round_key`` (``<style>_r<round>``, the dynamic partition); the round's traces,
examples, checkpoints and evaluations otherwise have the columns of their round-0 counterparts.
"""

import pandera.polars as pa

from trace_assets.datasets.schemas import SftExampleSchema
from trace_assets.evaluation.schemas import EvalResultSchema
from trace_assets.judging.schemas import JudgedTraceSchema
from trace_assets.reporting.failures import CATEGORIES, SOURCES
from trace_assets.styles.schemas import StylePromptSchema
from trace_assets.training.schemas import CheckpointSchema

REVISION_STATUSES = ["original", "revised", "kept_parent"]


class RoundStyleSchema(StylePromptSchema):
    """One style version of the loop: a style_prompts row (named as the chain's style; ``path`` is the
    user's file in round 0, <data>/styles/rounds/<style>-r<N>.yaml after) with its lineage: parent,
    round, and the failures that motivated it."""

    round_key: str = pa.Field(unique=True, description="<style>_r<round>: the dynamic partition")
    round: int = pa.Field(ge=0)
    parent_key: str = pa.Field(nullable=True, description="round_key of the version it was revised from; null in round 0")
    parent_version: str = pa.Field(nullable=True)
    status: str = pa.Field(isin=REVISION_STATUSES, description="kept_parent: no valid revision in max_attempts tries")
    note: str = pa.Field(description="why each rejected revision was rejected, or what the reviser said it changed")
    attempts: int = pa.Field(
        ge=0, description="reviser replies read, in order, up to the first accepted (all are sampled in one call)"
    )
    reviser_model: str = pa.Field(nullable=True)
    reviser_prompt_hash: str = pa.Field(nullable=True, description="hash of the messages sent to the reviser")
    motivating_failures: str = pa.Field(description="JSON list of round_failures.failure_id the reviser was shown")
    failure_counts: str = pa.Field(description="JSON {category: count} of the parent's validation failures")

    class Config:
        strict = True


class RoundTraceSchema(JudgedTraceSchema):
    """A teacher trace of a round's style with its verdict (the columns of judged_traces)."""

    round_key: str


class RoundExampleSchema(SftExampleSchema):
    """A training example of a round's dataset (the round-0 recipe of the style, rebuilt)."""

    round_key: str


class RoundCheckpointSchema(CheckpointSchema):
    """A student fine-tuned on a round's dataset."""

    round_key: str


class RoundEvalSchema(EvalResultSchema):
    """A round's checkpoint answering a validation (rounds) or test (report only) problem."""

    round_key: str
    split: str = pa.Field(isin=["validation", "test"])


class RoundFailureSchema(pa.DataFrameModel):
    """A wrong validation answer of a round's checkpoint, classified; what the next revision is shown."""

    failure_id: str = pa.Field(unique=True, description="<round_key>:<dataset>:<student>:<seed>:<problem_id>")
    round_key: str
    dataset: str
    student: str
    seed: int
    problem_id: str
    category: str = pa.Field(isin=CATEGORIES)
    source: str = pa.Field(isin=SOURCES)
    evidence: str

    class Config:
        strict = True
