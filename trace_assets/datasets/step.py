"""The datasets stage as one function, without Dagster: what ``sft_examples`` and the loop's
``round_examples`` both run."""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from trace_assets.datasets.recipes import DatasetBuild, build_datasets
from trace_assets.experiment import DatasetRecipe, DatasetRules, StudentConfig
from trace_assets.resources import DataResource
from trace_assets.students import student_path, token_counter


def build_sft_datasets(
    data: DataResource,
    recipes: Mapping[str, DatasetRecipe],
    rules: DatasetRules,
    judged: pl.DataFrame,
    problems: pl.DataFrame,
    styles: pl.DataFrame,
    students: Mapping[str, StudentConfig],
    seed: int,
) -> DatasetBuild:
    """Every recipe of ``recipes`` built at once from ``judged`` (judged_traces rows) on the train
    problems, under one eligibility policy, with its exclusions; ``styles``: style_prompts rows of the
    recipes' styles (their answer formats)."""
    # token_counter is one callable per tokenizer path: students sharing a tokenizer share its counts.
    counters = {name: token_counter(student_path(student, data)) for name, student in students.items()}
    return build_datasets(
        recipes,
        rules.eligibility,
        judged,
        problems.filter(pl.col("split") == "train"),
        seed,
        counters,
        dict(zip(styles["style"], styles["answer_format"])),
        rules.comparisons,
        rules.token_matching,
    )
