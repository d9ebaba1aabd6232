"""Helpers that turn tables into Dagster UI metadata."""

from __future__ import annotations

import dagster as dg
import polars as pl


def preview(frame: pl.DataFrame, columns: list[str] | None = None, rows: int = 5, width: int = 120) -> dg.MarkdownMetadataValue:
    """A markdown table of the first rows, long cells shortened so the UI stays readable."""
    shown = frame.select(columns) if columns else frame
    shown = shown.head(rows)
    if shown.is_empty():
        return dg.MetadataValue.md("_(empty)_")

    def cell(value: object) -> str:
        text = str(value).replace("\n", " ⏎ ").replace("|", "\\|")
        return text if len(text) <= width else text[: width - 1] + "…"

    header = "| " + " | ".join(shown.columns) + " |"
    rule = "| " + " | ".join("---" for _ in shown.columns) + " |"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in shown.iter_rows()]
    return dg.MetadataValue.md("\n".join([header, rule, *body]))


def counts_table(frame: pl.DataFrame, by: str | list[str]) -> dg.MarkdownMetadataValue:
    grouped = frame.group_by(by).len().sort(by)
    return preview(grouped, rows=len(grouped), width=60)
