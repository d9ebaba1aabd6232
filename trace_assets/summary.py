"""Print what a run produced, straight from DuckDB."""

from __future__ import annotations

from pathlib import Path

from trace_assets.experiment import database_path
from trace_assets.storage import connect, table_names

SUMMARY_QUERIES = {
    "problems per split": "SELECT split, count(*) AS n, round(avg(difficulty), 2) AS mean_difficulty FROM problems GROUP BY split ORDER BY split",
    "style versions": "SELECT style, version FROM style_prompts ORDER BY style",
    "teacher traces per style": "SELECT style, count(*) AS n, round(avg(is_correct::INT), 3) AS correct_rate, round(avg(n_tokens), 1) AS mean_tokens FROM teacher_traces GROUP BY style ORDER BY style",
    "judge verdicts per style": "SELECT style, count(*) AS n, round(avg(conforms::INT), 3) AS conformance, sum((verdict_source = 'unparsable')::INT) AS judge_unparsable FROM judged_traces GROUP BY style ORDER BY style",
    "datasets": "SELECT dataset, n_examples, total_tokens, round(correct_rate, 3) AS correct_rate, round(conformance_rate, 3) AS conformance_rate FROM trace_stats WHERE student = (SELECT min(student) FROM trace_stats) ORDER BY dataset",
    "accuracy": "SELECT dataset, student, n, round(accuracy, 3) AS accuracy, round(ci_low, 3) AS ci_low, round(ci_high, 3) AS ci_high FROM accuracy ORDER BY student, accuracy DESC",
}


def print_summary(folder: Path) -> None:
    with connect(database_path(folder), read_only=True) as connection:
        tables = table_names(connection)
        for title, query in SUMMARY_QUERIES.items():
            table = query.split(" FROM ")[1].split()[0]
            if table not in tables:
                continue
            print(f"\n== {title} ==")
            print(connection.sql(query))
