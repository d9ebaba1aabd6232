"""The validation split: a seeded share of the train problems, set aside for the closed loop.

The loop revises styles from the students' failures on these problems; the test split is seen only
by the final report. Membership depends on the seed and the problem's id alone (a hash), so it is
the same however the train problems are ordered or how many others there are.
"""

from __future__ import annotations

import hashlib

import polars as pl

VALIDATION = "validation"


def in_validation(problem_id: str, seed: int, fraction: float) -> bool:
    digest = hashlib.sha256(f"{seed}:validation:{problem_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def carve_validation(problems: pl.DataFrame, fraction: float, seed: int) -> pl.DataFrame:
    """``problems`` with a seeded ``fraction`` of its train rows relabelled ``split = 'validation'``
    (at least one, and never every train problem). Test rows are never touched."""
    if fraction <= 0:
        return problems
    train_ids = problems.filter(pl.col("split") == "train")["problem_id"].to_list()
    chosen = {p for p in train_ids if in_validation(p, seed, fraction)}
    if train_ids and not chosen:  # a tiny train split: take the problem the hash ranks first
        chosen = {min(train_ids, key=lambda p: hashlib.sha256(f"{seed}:validation:{p}".encode()).hexdigest())}
    if len(chosen) >= len(train_ids):
        chosen = set(sorted(chosen)[: max(0, len(train_ids) - 1)])
    return problems.with_columns(
        pl.when((pl.col("split") == "train") & pl.col("problem_id").is_in(sorted(chosen)))
        .then(pl.lit(VALIDATION))
        .otherwise(pl.col("split"))
        .alias("split")
    )
