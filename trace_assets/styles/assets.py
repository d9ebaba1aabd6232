"""The ``style_prompts`` asset: one partition per style file, versioned by content hash."""

from pathlib import Path

import dagster as dg
import polars as pl

from trace_assets.assetdefs import asset_settings
from trace_assets.styles.library import load_style, style_row
from trace_assets.styles.schemas import StylePromptSchema


def build_style_asset(styles_dir: Path, partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(
        **asset_settings(
            "style_prompts", "styles", {"yaml", "duckdb"}, table=StylePromptSchema, partitions=partitions, partition_expr="style"
        )
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
