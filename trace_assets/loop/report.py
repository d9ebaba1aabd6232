"""The loop's report: accuracy by round with intervals and each round's change, and each revision's diff."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from trace_assets.loop.revision import style_diff
from trace_assets.loop.rounds import round_change
from trace_assets.metadata import markdown_table
from trace_assets.reporting.stats import METHOD, accuracy_summary

# One query: a round's style back through its parents, with the failure examples each revision was shown.
ROUNDS_VIEW = """
    WITH RECURSIVE chain AS (
        SELECT round_key AS of_round, round_key, parent_key, 0 AS depth FROM round_styles
        UNION ALL
        SELECT c.of_round, s.round_key, s.parent_key, c.depth + 1
        FROM chain c JOIN round_styles s ON s.round_key = c.parent_key
    ),
    shown AS (
        SELECT round_key, unnest(from_json(motivating_failures, '["VARCHAR"]')) AS failure_id FROM round_styles
    )
    SELECT c.of_round, c.depth, s.round_key, s.round, s.version, s.parent_key, s.parent_version, s.status, s.path,
           f.failure_id, f.category, f.dataset, f.student, f.problem_id, f.evidence
    FROM chain c
    JOIN round_styles s ON s.round_key = c.round_key
    LEFT JOIN shown ON shown.round_key = s.round_key
    LEFT JOIN round_failures f ON f.failure_id = shown.failure_id
"""

ROUNDS_COLUMNS = {
    "style": pl.Utf8,
    "round": pl.Int64,
    "round_key": pl.Utf8,
    "version": pl.Utf8,
    "status": pl.Utf8,
    "dataset": pl.Utf8,
    "student": pl.Utf8,
    "validation_accuracy": pl.Float64,
    "validation_ci_low": pl.Float64,
    "validation_ci_high": pl.Float64,
    "test_accuracy": pl.Float64,
    "test_ci_low": pl.Float64,
    "test_ci_high": pl.Float64,
    "change": pl.Float64,
    "change_ci_low": pl.Float64,
    "change_ci_high": pl.Float64,
    "p_adjusted": pl.Float64,
    "distinguishable": pl.Boolean,
}


@dataclass
class RoundsReport:
    text: str
    table: pl.DataFrame
    png: bytes | None
    test_change: pl.DataFrame  # last_against_first's rows


def last_against_first(styles: pl.DataFrame, evals: pl.DataFrame) -> pl.DataFrame:
    """Each chain's last round evaluated on test against its round 0, per dataset x student, paired by
    problem as a round is against its parent (``round_change``, here on the test split): what the loop
    gained, for the report only (no round is chosen on it). Columns of ``round_change``; ``a`` is the
    last round's key, ``b`` round 0's; empty when no chain has two rounds evaluated on test."""
    if evals.is_empty():
        return pl.DataFrame()
    test = evals.filter(pl.col("split") == "test")
    frames = []
    for _, chain in styles.filter(pl.col("round_key").is_in(test["round_key"].unique())).group_by("style"):
        keys = chain.sort("round")["round_key"].to_list()
        if len(keys) > 1 and (change := round_change(test, keys[-1], keys[0])).height:
            frames.append(change)
    return pl.concat(frames) if frames else pl.DataFrame()


def _per_round(evals: pl.DataFrame, split: str) -> dict[tuple[str, str, str], dict]:
    """(round_key, dataset, student) -> accuracy with interval on ``split``, the rounds pooled as arms."""
    rows = evals.filter(pl.col("split") == split)
    if rows.is_empty():
        return {}
    arms = rows.with_columns((pl.col("round_key") + "|" + pl.col("dataset")).alias("dataset"))
    out = {}
    for row in accuracy_summary(arms).iter_rows(named=True):
        key, dataset = row["dataset"].split("|", 1)
        out[(key, dataset, row["student"])] = row
    return out


def rounds_table(styles: pl.DataFrame, evals: pl.DataFrame) -> pl.DataFrame:
    """One row per round x dataset x student: validation and test accuracy with 95% intervals, and the
    change from the parent round on validation (paired, Holm over the round's rows)."""
    validation, test = _per_round(evals, "validation"), _per_round(evals, "test")
    changes = {}
    for style in styles.iter_rows(named=True):
        if style["parent_key"] is None:
            continue
        pair = evals.filter(
            (pl.col("split") == "validation") & pl.col("round_key").is_in([style["round_key"], style["parent_key"]])
        )
        table = round_change(pair, style["round_key"], style["parent_key"])
        for row in table.iter_rows(named=True):
            changes[(style["round_key"], row["dataset"], row["student"])] = row
    rows = []
    for style in styles.sort("style", "round").iter_rows(named=True):
        # a round that trained nothing (its datasets empty) is a row of its own, with no accuracy
        keys = sorted({k for k in [*validation, *test] if k[0] == style["round_key"]}) or [(style["round_key"], None, None)]
        for key in keys:
            v, t, c = validation.get(key, {}), test.get(key, {}), changes.get(key, {})
            rows.append(
                {
                    "style": style["style"],
                    "round": style["round"],
                    "round_key": style["round_key"],
                    "version": style["version"],
                    "status": style["status"],
                    "dataset": key[1],
                    "student": key[2],
                    "validation_accuracy": v.get("accuracy"),
                    "validation_ci_low": v.get("ci_low"),
                    "validation_ci_high": v.get("ci_high"),
                    "test_accuracy": t.get("accuracy"),
                    "test_ci_low": t.get("ci_low"),
                    "test_ci_high": t.get("ci_high"),
                    "change": c.get("diff"),
                    "change_ci_low": c.get("ci_low"),
                    "change_ci_high": c.get("ci_high"),
                    "p_adjusted": c.get("p_adjusted"),
                    "distinguishable": c.get("distinguishable"),
                }
            )
    return pl.DataFrame(rows, schema=ROUNDS_COLUMNS)


def _cell(value, low, high) -> str:
    if value is None:
        return "–"
    interval = f" [{low:.3f}, {high:.3f}]" if low is not None and high is not None else ""
    return f"{value:.3f}{interval}"


def _test_change_text(change: pl.DataFrame) -> str:
    if change.is_empty():
        return "_(no chain has a revised round evaluated on test yet)_"
    shown = change.select(
        "dataset",
        "student",
        pl.col("a").alias("last round"),
        pl.col("b").alias("round 0"),
        pl.col("accuracy_a").round(3).alias("last"),
        pl.col("accuracy_b").round(3).alias("round 0 accuracy"),
        pl.struct("diff", "ci_low", "ci_high")
        .map_elements(lambda r: _cell(*r.values()), return_dtype=pl.Utf8)
        .alias("change (95% CI)"),
        "n_problems",
        pl.col("p_adjusted").round(4),
        "distinguishable",
    )
    return markdown_table(shown) + "\n\nPaired by test problem, Holm over each chain's datasets x students."


def rounds_report_text(name: str, styles: pl.DataFrame, evals: pl.DataFrame) -> RoundsReport:
    table = rounds_table(styles, evals)
    test_change = last_against_first(styles, evals)
    shown = table.select(
        "style",
        "round",
        "status",
        "dataset",
        "student",
        pl.struct("validation_accuracy", "validation_ci_low", "validation_ci_high")
        .map_elements(lambda r: _cell(*r.values()), return_dtype=pl.Utf8)
        .alias("validation (95% CI)"),
        pl.struct("test_accuracy", "test_ci_low", "test_ci_high")
        .map_elements(lambda r: _cell(*r.values()), return_dtype=pl.Utf8)
        .alias("test (95% CI)"),
        pl.struct("change", "change_ci_low", "change_ci_high")
        .map_elements(lambda r: _cell(*r.values()), return_dtype=pl.Utf8)
        .alias("change vs parent (validation)"),
        pl.col("p_adjusted").round(4),
        "distinguishable",
    )
    lines = [
        f"# {name}: rounds of style revision",
        "",
        "Round 0 is each style file as written; round N is the reviser's rewrite of round N-1 from round N-1's "
        "failures on the validation split (train problems held out; the reviser never sees test problems). "
        "Validation accuracy decides the loop; test accuracy is reported here only.",
        "",
        "## Accuracy by round",
        "",
        markdown_table(shown) if shown.height else "_(no round evaluated yet)_",
        "",
        f"Method: {METHOD}. The change is round N minus its parent on validation, paired by problem; Holm over each "
        "round's datasets x students.",
        "",
        "## Test: the last round against round 0",
        "",
        _test_change_text(test_change),
        "",
        "## Revisions",
    ]
    by_key = {row["round_key"]: row for row in styles.iter_rows(named=True)}
    for row in styles.sort("style", "round").iter_rows(named=True):
        if row["parent_key"] is None:
            continue
        parent = by_key.get(row["parent_key"])
        lines += ["", f"### {row['round_key']} ({row['status']})", "", f"{row['note']}", ""]
        lines.append(f"Failures it was given: {row['failure_counts']}")
        if parent is not None:
            texts = [Path(version["path"]).read_text(encoding="utf-8") for version in (parent, row)]
            diff = style_diff(*texts, parent["path"], row["path"])
            lines += ["", "```diff", diff.rstrip() or "(no change)", "```"]
    png = None
    if table.filter(pl.col("validation_accuracy").is_not_null()).height:
        from trace_assets.plots import accuracy_by_round_png

        png = accuracy_by_round_png(
            table.filter(pl.col("validation_accuracy").is_not_null() & pl.col("test_accuracy").is_not_null())
        )
        lines += ["", "![accuracy by round](accuracy_by_round.png)"]
    return RoundsReport("\n".join(lines) + "\n", table, png, test_change)
