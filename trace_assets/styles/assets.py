"""The ``style_prompts`` asset: one partition per style file, versioned by content hash."""

import json

import dagster as dg
import polars as pl

from trace_assets.experiment import Experiment
from trace_assets.styles.library import Style, load_style
from trace_assets.styles.schemas import StylePromptsType


def style_row(style: Style) -> dict:
    return {
        "style": style.name,
        "version": style.version,
        "path": str(style.path),
        "description": style.spec.description,
        "answer_format": style.spec.answer_format,
        "instruction": style.spec.instruction,
        "paraphrase_instruction": style.spec.paraphrase_instruction or "",
        "example": json.dumps(style.spec.example.model_dump()) if style.spec.example else "",
        "rubric": json.dumps([item.model_dump() for item in style.spec.rubric]),
        "format_checks": json.dumps([check.model_dump() for check in style.spec.format_checks]),
    }


def build_style_asset(experiment: Experiment, partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    styles_dir = experiment.resolve(experiment.styles_dir)

    @dg.asset(
        name="style_prompts",
        group_name="styles",
        kinds={"yaml", "duckdb"},
        code_version="1",
        partitions_def=partitions,
        dagster_type=StylePromptsType,
        metadata={"partition_expr": "style"},
        description="Teacher instruction, judge rubric and format checks of each style file, with its content hash.",
    )
    def style_prompts(context: dg.AssetExecutionContext):
        """Teacher instruction, judge rubric and format checks of each style file, with its content hash."""
        # One partition per run (no single-run backfill): each style gets its own data version.
        style = load_style(styles_dir, context.partition_key)
        yield dg.Output(
            pl.DataFrame([style_row(style)]),
            data_version=dg.DataVersion(style.version),
            metadata={
                "version": style.version,
                "path": str(style.path),
                "rubric_items": len(style.spec.rubric),
                "format_checks": len(style.spec.format_checks),
                "instruction": dg.MetadataValue.md(f"```\n{style.system_prompt()}\n```"),
            },
        )

    return style_prompts
