"""How many of the fourth GPU run's correct teacher traces are also free of arithmetic slips: what a
checked G arm (``exclude_arithmetic_slips``) would keep. CPU only, about half a minute:

    python bench/checked_traces.py

Reads the run's committed tables (tables.tar: judged_traces, problems, sft_examples) and its generation
cache (the traces' text: trace_id is ``request_hash-sample_index``), rebuilds the normal-style arms with
the project's own ``build_datasets`` under the run's eligibility policy (checking first that G_normal comes
out as the run built it), and adds checked arms beside them. A slip is what
``reporting.failures.arithmetic_slips`` finds: a calculation ``a op b = c`` whose stated result is wrong.
Writes bench/results/gpu_study/fourth_run/checked_traces.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.gpu_study import cache_parts, read_cache_part, read_tables  # noqa: E402
from trace_assets.datasets.recipes import build_datasets, exclusion_counts  # noqa: E402
from trace_assets.datasets.selection import paraphrase_coverage  # noqa: E402
from trace_assets.experiment import ComparisonsConfig, DatasetRecipe, load_experiment  # noqa: E402
from trace_assets.reporting.failures import arithmetic_slips, equations  # noqa: E402

RUN = ROOT / "bench" / "results" / "gpu_study" / "fourth_run"
STYLE = "normal"


def judged_with_text(judged: pl.DataFrame) -> pl.DataFrame:
    cache = pl.concat([read_cache_part(path) for path in cache_parts(RUN / "generation_cache")])
    text = cache.select(
        trace_id=pl.col("request_hash") + "-" + pl.col("sample_index").cast(pl.Utf8), completion=pl.col("text")
    ).unique("trace_id")
    joined = judged.join(text, on="trace_id", how="left")
    missing = joined["completion"].null_count()
    if missing:
        raise SystemExit(f"{missing} judged traces have no text in the generation cache")
    return joined


def trace_figures(frame: pl.DataFrame, problems: dict[str, dict]) -> dict:
    """Traces, slip-free ones, and the problems with at least one slip-free trace; and, as a stricter
    reading, slip-free traces with a calculation, and those writing every quantity the human solution computes."""
    rows = frame.iter_rows(named=True)
    slip_free, with_calculation, covering = [], [], []
    for row in rows:
        text = row["completion"]
        if arithmetic_slips(text):
            continue
        slip_free.append(row["problem_id"])
        if equations(text):
            with_calculation.append(row["problem_id"])
        problem = problems[row["problem_id"]]
        if paraphrase_coverage(text, problem["reference_solution"], problem["question"])[0] == 1.0:
            covering.append(row["problem_id"])
    return {
        "traces": frame.height,
        "problems": frame["problem_id"].n_unique(),
        "slip_free_traces": len(slip_free),
        "problems_with_a_slip_free_trace": len(set(slip_free)),
        "slip_free_traces_with_a_calculation": len(with_calculation),
        "problems_with_a_slip_free_trace_with_a_calculation": len(set(with_calculation)),
        "slip_free_traces_writing_every_human_quantity": len(covering),
        "problems_with_a_slip_free_trace_writing_every_human_quantity": len(set(covering)),
    }


def main() -> None:
    tables = read_tables(RUN / "tables.tar")  # the run's tables, as gpu_study.py results reads them
    experiment = load_experiment(RUN / "experiment.yaml")
    judged = judged_with_text(tables["judged_traces"]).filter(pl.col("style") == STYLE)
    train = tables["problems"].filter(pl.col("split") == "train")
    problems = {row["problem_id"]: row for row in train.iter_rows(named=True)}
    kept = tables["sft_examples"].filter(pl.col("dataset") == "G_normal")

    # 1. The run's G_normal examples (answer right, both a right and a wrong eligible trace of the problem).
    g_normal = trace_figures(kept, problems)

    # 2. Every normal-style trace the task's answer check passes (any reading of the answer), train problems.
    correct = judged.filter(pl.col("is_correct") & pl.col("problem_id").is_in(list(problems)))
    all_correct = trace_figures(correct, problems)

    # 3. The arms rebuilt by the project's code, checked ones beside the run's.
    run_recipes = {name: experiment.datasets[name] for name in ("G_normal", "W_normal", "mix25_normal")}
    recipes = {
        **run_recipes,
        "G_normal_all": DatasetRecipe(recipe="G", style=STYLE),
        "G_normal_checked": DatasetRecipe(recipe="G", style=STYLE, exclude_arithmetic_slips=True),
        "G_normal_checked_pair": DatasetRecipe(recipe="G", style=STYLE, pair_correct_wrong=True, exclude_arithmetic_slips=True),
        "G_normal_both": DatasetRecipe(recipe="G", style=STYLE),
        "G_normal_both_checked": DatasetRecipe(recipe="G", style=STYLE, exclude_arithmetic_slips=True),
    }
    groups = [["G_normal", "W_normal", "mix25_normal"], ["G_normal_both", "G_normal_both_checked"]]
    build = build_datasets(
        recipes,
        experiment.eligibility,
        judged,
        train,
        experiment.seed,
        {"words": lambda text: len(text.split())},
        {STYLE: "hash"},
        ComparisonsConfig(groups=groups),
        [],
    )
    examples = build.examples
    rebuilt = set(examples.filter(pl.col("dataset") == "G_normal")["trace_id"])
    if rebuilt != set(kept["trace_id"]):
        raise SystemExit(f"the rebuild's G_normal differs from the run's ({len(rebuilt)} against {kept.height} traces)")
    sizes = {row["dataset"]: row["problems"] for row in build.summary.iter_rows(named=True)}
    slips = exclusion_counts(build.exclusions).select("dataset", "arithmetic_slip")
    both = examples.filter(pl.col("dataset") == "G_normal_both").select("problem_id", "trace_id")
    both_checked = examples.filter(pl.col("dataset") == "G_normal_both_checked").select("problem_id", "trace_id")
    same_trace = both.join(both_checked, on=["problem_id", "trace_id"]).height
    # G_normal_all's eligible correct traces: those it took and those a better-ranked one beat
    not_selected = build.exclusions.filter((pl.col("dataset") == "G_normal_all") & (pl.col("reason") == "not_selected")).height
    eligible = sizes["G_normal_all"] + not_selected
    slipped = int(slips.filter(pl.col("dataset") == "G_normal_checked")["arithmetic_slip"][0])
    result = {
        "what": "fourth GPU run (experiments/gpu_study.yaml cut, 8 samples a problem, 2,020 train problems): how many "
        "correct normal-style teacher traces have no arithmetic slip (reporting.failures.arithmetic_slips)",
        "made_by": "python bench/checked_traces.py",
        "G_normal_kept_examples": g_normal,
        "all_correct_normal_traces": all_correct,
        "rebuilt_arms_problems": {name: sizes[name] for name in recipes},
        "eligible_correct_traces": {
            "traces": eligible,
            "slip_free": eligible - slipped,
            "note": "correct normal traces that pass the run's eligibility policy (not truncated, an answer declared "
            "and never changed), counted from G_normal_all's selections and not_selected exclusions",
        },
        "arithmetic_slip_exclusions": dict(zip(slips["dataset"], slips["arithmetic_slip"])),
        "same_problems_pair": {
            "problems": sizes["G_normal_both"],
            "same_trace_in_both": same_trace,
            "note": "G_normal_both and G_normal_both_checked in one comparison group, so both on the problems with a "
            "slip-free eligible correct trace: the unchecked arm takes the best-ranked correct trace, slips or not",
        },
        "arms": {
            "G_normal_all": "G, normal, every problem with an eligible correct trace (no pair)",
            "G_normal_checked": "G_normal_all with exclude_arithmetic_slips",
            "G_normal_checked_pair": "the run's G_normal (pair_correct_wrong) with exclude_arithmetic_slips: the wrong partner must be slip-free too",
        },
    }
    out = RUN / "checked_traces.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"G_normal's {g_normal['traces']} kept examples: {g_normal['slip_free_traces']} without an arithmetic slip "
        f"({g_normal['slip_free_traces_with_a_calculation']} of them with a calculation, "
        f"{g_normal['slip_free_traces_writing_every_human_quantity']} writing every quantity the human solution computes)"
    )
    print(
        f"correct normal traces (answer check): {all_correct['traces']} on {all_correct['problems']} problems; "
        f"slip-free {all_correct['slip_free_traces']} on {all_correct['problems_with_a_slip_free_trace']} problems "
        f"({all_correct['problems_with_a_slip_free_trace_with_a_calculation']} with a calculation, "
        f"{all_correct['problems_with_a_slip_free_trace_writing_every_human_quantity']} writing every human quantity)"
    )
    print(f"eligible correct traces (the run's policy): {eligible}, slip-free {eligible - slipped}")
    print("rebuilt arms (problems):", json.dumps(result["rebuilt_arms_problems"]))
    print("arithmetic_slip exclusions:", json.dumps(result["arithmetic_slip_exclusions"]))
    print(f"same-problems pair: {sizes['G_normal_both']} problems, the same trace in both on {same_trace}")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
