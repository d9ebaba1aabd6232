"""The ``lineage_views`` asset: plain-SQL lineage over the tables of the graph."""

import dagster as dg

from trace_assets.assetdefs import TABLE_MODELS, asset_settings
from trace_assets.lineage.views import LINEAGE_VIEWS
from trace_assets.resources import DataResource
from trace_assets.storage import connect, create_empty_table, table_names
from trace_assets.tables import empty_frame

UPSTREAM = ["problems", "style_prompts", "teacher_traces", "judged_traces", "sft_examples", "checkpoints", "eval_results"]


@dg.asset(**asset_settings("lineage_views", "lineage", {"duckdb", "sql"}, deps=UPSTREAM))
def lineage_views(data: DataResource) -> dg.MaterializeResult:
    """Views answering lineage questions in SQL: example_lineage, eval_lineage, style_version_rows."""
    counts = {}
    with connect(data.database) as connection:
        create_missing_tables(connection, UPSTREAM)
        for name, query in LINEAGE_VIEWS.items():
            connection.execute(f"CREATE OR REPLACE VIEW {name} AS {query}")
            counts[name] = connection.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
    return dg.MaterializeResult(
        metadata={f"{name}_rows": count for name, count in counts.items()}
        | {"views": dg.MetadataValue.md("\n\n".join(f"**{n}**\n```sql\n{q.strip()}\n```" for n, q in LINEAGE_VIEWS.items()))}
    )


def create_missing_tables(connection, names: list[str]) -> None:
    """An upstream table a study never wrote (a study with no styles has no teacher traces) is created
    empty with its model's columns, so the views over it hold no rows instead of failing."""
    present = table_names(connection)
    for name in names:
        if name not in present and name in TABLE_MODELS:
            create_empty_table(connection, name, empty_frame(TABLE_MODELS[name]))
