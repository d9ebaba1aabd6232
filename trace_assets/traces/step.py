"""The traces stage as one function, without Dagster: what ``teacher_traces`` and the loop's
``round_traces`` both run."""

from __future__ import annotations

from collections.abc import Callable

import polars as pl

from trace_assets.experiment import ConfidenceConfig, ModelConfig
from trace_assets.resources import GenerationResource
from trace_assets.styles.library import Style
from trace_assets.traces.build import teacher_requests
from trace_assets.traces.sampling import SampledTraces, sample_traces


def generate_traces(
    generation: GenerationResource,
    teacher: ModelConfig,
    styles: list[Style],
    problems: pl.DataFrame,
    paraphrase_styles: frozenset[str],
    confidence: ConfidenceConfig,
    log: Callable[[str], None] = print,
) -> tuple[SampledTraces, int]:
    """The teacher's samples of every train problem of ``problems`` under each style (through the
    generation cache), and how many samples were planned (early stopping's saved ones included)."""
    spec, sampling = generation.settings(teacher)
    train = problems.filter(pl.col("split") == "train")
    planned = teacher_requests(styles, train, teacher.model, sampling, paraphrase_styles)
    sampled = sample_traces(
        generation.generate, spec, sampling, planned, teacher.model, confidence.window, confidence.early_stop, log
    )
    return sampled, len(planned) * sampling.n
