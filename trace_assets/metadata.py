"""Asset metadata: tables as Markdown (for the Dagster UI and the report) and step timings read from Dagster events."""

from __future__ import annotations

import dagster as dg
import polars as pl

from trace_assets.generation.cached import ENGINE_COUNTS


def markdown_table(frame: pl.DataFrame, rows: int | None = None, width: int | None = None, digits: int | None = None) -> str:
    """A Markdown table of ``frame``: the first ``rows`` rows (all by default), cells cut to ``width``
    characters, floats with ``digits`` decimals; ``_(empty)_`` when there is nothing to show."""
    shown = frame if rows is None else frame.head(rows)
    if shown.is_empty():
        return "_(empty)_"

    def cell(value: object) -> str:
        if digits is not None and isinstance(value, float):
            return f"{value:.{digits}f}"
        text = str(value).replace("\n", " ⏎ ").replace("|", "\\|")
        return text if width is None or len(text) <= width else text[: width - 1] + "…"

    header = "| " + " | ".join(shown.columns) + " |"
    rule = "| " + " | ".join("---" for _ in shown.columns) + " |"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in shown.iter_rows()]
    return "\n".join([header, rule, *body])


def preview(frame: pl.DataFrame, columns: list[str] | None = None, rows: int = 5, width: int = 120) -> dg.MarkdownMetadataValue:
    """The first rows as UI metadata, long cells shortened so the UI stays readable."""
    return dg.MetadataValue.md(markdown_table(frame.select(columns) if columns else frame, rows=rows, width=width))


def counts_table(frame: pl.DataFrame, by: str | list[str]) -> dg.MarkdownMetadataValue:
    grouped = frame.group_by(by).len().sort(by)
    return preview(grouped, rows=len(grouped), width=60)


# the seconds a step spent on the GPU work itself, from its materializations' metadata: vLLM generating
# (generate_s, every generating asset) and the trainers training (train_s, checkpoints); the rest of a
# step's time is engine starts, compiles, loading and Python (issue 25's busy share)
WORK_SECONDS = ("generate_s", "train_s")


def step_figures(events) -> dict[str, dict[str, float]]:
    """Each step's vLLM engine starts, reuses and wakes in one run (ENGINE_COUNTS), and its work seconds
    (WORK_SECONDS), from its materializations' metadata; steps that record none are left out. A step over a
    range of partitions (single-run backfill) writes one materialization per partition, each with the step's
    own figures: they are the step's once, not summed."""
    counts: dict[str, dict[str, float]] = {}
    for event in events:
        if not event.is_step_materialization or event.step_key is None:
            continue
        metadata = event.event_specific_data.materialization.metadata
        found = {key: metadata[key].value for key in (*ENGINE_COUNTS, *WORK_SECONDS) if key in metadata}
        if found:
            step = counts.setdefault(event.step_key, dict.fromkeys(ENGINE_COUNTS, 0))
            for key, value in found.items():
                step[key] = max(step.get(key, 0), int(value) if key in ENGINE_COUNTS else float(value))
    return counts


def add_step_figures(total: dict[str, dict[str, float]], more: dict[str, dict[str, float]]) -> None:
    """``more`` (another run's :func:`step_figures`) added into ``total``, step by step."""
    for step, figures in more.items():
        into = total.setdefault(step, dict.fromkeys(ENGINE_COUNTS, 0))
        for key, value in figures.items():
            into[key] = into.get(key, 0) + value


def step_durations(events) -> dict[str, float]:
    """Each successful step's own seconds, as Dagster timed it (its step-success event)."""
    return {
        event.step_key: event.event_specific_data.duration_ms / 1000
        for event in events
        if event.is_step_success and event.step_key is not None
    }
