"""The shipped GPU study files, shrunk to test sizes, run through the whole graph on a CPU: every arm,
rule, replicate and planned contrast of the real file, with a scripted teacher and judge and a tiny
random-weight student (the real run needs a GPU: bench/gpu_study.py)."""

from __future__ import annotations

import re

import dagster as dg
import duckdb
import polars as pl
import pytest
import yaml

from trace_assets.experiment import PROJECT_ROOT, load_experiment
from trace_assets_tests.test_tasks_pipeline import run_scripted_graph

SIZES = {
    "problems": {"n_train": 6, "n_test": 4},
    "teacher": {"sampling": {"n": 2, "max_tokens": 24}},
    "judge": {"sampling": {"max_tokens": 32}},
    "training": {"seeds": [0, 1], "max_steps": 1, "batch_size": 2, "max_length": 256, "packing": False},
    "evaluation": {"max_tokens": 16, "few_shot_k": 1},
    "gpu": {"devices": []},
}


def shrunk(name: str, folder, model: str, spec: dict | None = None):
    """The shipped experiment file ``name`` (or ``spec``) at SIZES, with ``model`` in every role."""

    def merge(base: dict, change: dict) -> dict:
        return {**base, **{k: merge(base.get(k) or {}, v) if isinstance(v, dict) else v for k, v in change.items()}}

    spec = merge(spec or yaml.safe_load((PROJECT_ROOT / "experiments" / name).read_text()), SIZES)
    for role in ("teacher", "judge"):
        spec[role]["model"] = model
    spec["students"] = {student: {"model": model} for student in spec["students"]}
    path = folder / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return load_experiment(path)


@pytest.mark.parametrize("name", ["gpu_study.yaml"])
def test_gpu_study_file_runs_shrunk(tmp_path, tiny_model, instance, name):
    from trace_assets.inputs import check_inputs

    experiment = check_inputs(shrunk(name, tmp_path, tiny_model))
    _, database = run_scripted_graph(experiment, tmp_path / "data", instance)

    with duckdb.connect(str(database), read_only=True) as db:
        examples = db.sql("SELECT * FROM sft_examples").pl()
        checkpoints = db.sql("SELECT * FROM checkpoints").pl()
        accuracy = db.sql("SELECT * FROM accuracy").pl()
    sizes = dict(examples.group_by("dataset").len().iter_rows())
    assert set(sizes) == set(experiment.datasets)  # every arm has examples
    # the A/A replicate trains on its original's examples, under other seeds, as runs of its own
    same = lambda name: sorted(examples.filter(pl.col("dataset") == name)["completion"])  # noqa: E731
    assert same("H_aa") == same("H")
    runs = checkpoints.filter(pl.col("dataset").is_in(["H", "H_aa"]))
    # one model per task (training.per_task), each seed and arm its own run
    tasks = experiment.problems.tasks
    assert runs["path"].n_unique() == runs.height == 2 * len(experiment.training.seeds) * len(tasks)
    assert set(runs["task"]) == set(tasks)
    with duckdb.connect(str(database), read_only=True) as db:
        first_losses = db.sql("SELECT dataset, seed, train_loss FROM training_log WHERE step = 1 ORDER BY seed").pl()
    loss = lambda name: first_losses.filter(pl.col("dataset") == name)["train_loss"].to_list()  # noqa: E731
    assert loss("H_aa") != loss("H")  # other training seeds: other batches
    # G and W on the same problems (pair_correct_wrong)
    problems_of = lambda name: set(examples.filter(pl.col("dataset") == name)["problem_id"])  # noqa: E731
    assert problems_of("G_normal") == problems_of("W_normal")
    assert set(accuracy["dataset"]) >= {"base", "base_few_shot", *experiment.datasets}
    report = (tmp_path / "data" / "report" / "report.md").read_text()
    for a, b in experiment.planned_contrasts():
        assert f"{a}" in report and f"{b}" in report
    assert "A/A" in report
    # the UI shows the report with its plots embedded, not only the path of the Markdown file
    event = instance.get_latest_materialization_event(dg.AssetKey("report"))
    shown = event.asset_materialization.metadata["report"].value
    assert shown.count("](data:image/png;base64,") >= 2 and not re.search(r"\]\([^)]*\.png\)", shown)  # no link to a file
    if name == "gpu_study.yaml":
        assert_results_rebuild_without_the_last_stage(tmp_path, experiment)


def assert_results_rebuild_without_the_last_stage(tmp_path, experiment) -> None:
    """bench/gpu_study.py's export, then its results from the tables of a run cut off after
    eval_results (no accuracy, no failure modes): the finding is still written, accuracy computed
    from the answers as the accuracy asset computes it."""
    import json
    import tarfile

    from bench.gpu_study import export, results

    data = tmp_path / "data"
    (data / "study_times.json").write_text(json.dumps({"stages": {}, "steps": {}, "estimate_before_run_s": {}}))
    with tarfile.open(export(data, tmp_path / "out")) as tar:
        tar.extractall(tmp_path / "tables", filter="data")
    for table in ("accuracy", "failure_modes"):
        (tmp_path / "tables" / f"{table}.parquet").unlink()
    figures = results([tmp_path / "tables"], tmp_path / "results", str(experiment.source_path))
    assert {row["dataset"] for row in figures["accuracy"]} >= {"base", "H", "H_aa"}
    with duckdb.connect(str(data / "trace_assets.duckdb"), read_only=True) as db:
        asset = db.sql("SELECT dataset, accuracy FROM accuracy").pl()
    assert dict(asset.iter_rows()) == {row["dataset"]: row["accuracy"] for row in figures["accuracy"]}
    assert "## Planned contrasts" in (tmp_path / "results" / "report.md").read_text()
    # every planned contrast and the A/A control, with both intervals, as the report tests them
    aa = [row for row in figures["contrasts"] if row["aa_control"]]
    assert [(row["a"], row["b"]) for row in aa] == [("H_aa", "H")]
    assert len(figures["contrasts"]) > 1 and not all(row["aa_control"] for row in figures["contrasts"])
    for row in figures["contrasts"]:
        if row["ci_low"] is not None:
            assert row["family_ci_low"] <= row["ci_low"] and row["ci_high"] <= row["family_ci_high"]
    assert set(figures["seed_sd_vs_calibrate"]) >= {"declared_seed_sd_logit", "measured_pooled_logit", "measured_over_declared"}


def test_exports_of_one_study_merge_without_counting_an_arm_twice():
    """results --tables A B: a later session's export with more seeds of the A/A pair joins the first's;
    each arm x seed is taken once (the untrained answers are in both), the new arm's examples come in,
    the first export's problems stay, accuracy is left to be computed again from the merged answers."""
    from bench.gpu_study import merged_tables

    def answers(rows):
        schema = ["dataset", "student", "seed", "problem_id", "is_correct", "training"]
        return pl.DataFrame([(*row, "none" if row[0] == "base" else "per_task") for row in rows], schema=schema, orient="row")

    first = {
        "eval_results": answers(
            [
                ("base", "s", 0, "p1", False),
                ("base", "s", 1, "p1", False),
                ("H", "s", 0, "p1", True),
                ("H_aa", "s", 0, "p1", True),
            ]
        ),
        "sft_examples": pl.DataFrame({"dataset": ["H"], "completion": ["h"]}),
        "failure_modes": pl.DataFrame({"dataset": ["base", "base"], "student": "s", "seed": [0, 1], "category": "first"}),
        "problems": pl.DataFrame({"problem_id": ["p1"], "question": ["first"]}),
        "accuracy": pl.DataFrame({"dataset": ["H"], "accuracy": [1.0]}),
        "_times": {"which": "first"},
    }
    second = {
        # the untrained answers again, under the second session's seeds (answered again: another completion),
        # new seeds of H, a new arm
        "eval_results": answers([("base", "s", 3, "p1", True), ("H", "s", 3, "p1", False), ("G_checked", "s", 3, "p1", True)]),
        "sft_examples": pl.DataFrame({"dataset": ["H", "G_checked"], "completion": ["h again", "g"]}),
        "failure_modes": pl.DataFrame({"dataset": ["base", "H"], "student": "s", "seed": [3, 3], "category": "second"}),
        "problems": pl.DataFrame({"problem_id": ["p1"], "question": ["second"]}),
        "_times": {"which": "second"},
    }
    merged = merged_tables([first, second])
    got = sorted(merged["eval_results"].select("dataset", "seed", "is_correct").iter_rows())
    assert got == [
        ("G_checked", 3, True),
        ("H", 0, True),
        ("H", 3, False),
        ("H_aa", 0, True),
        ("base", 0, False),
        ("base", 1, False),
    ]
    assert sorted(merged["sft_examples"].iter_rows()) == [("G_checked", "g"), ("H", "h")]
    # every table keyed by arm takes the untrained rows from the first export: the failure modes of its answers
    failures = sorted(merged["failure_modes"].select("dataset", "seed", "category").iter_rows())
    assert failures == [("H", 3, "second"), ("base", 0, "first"), ("base", 1, "first")]
    # an export without eval_results' training column still knows the base arms by name
    bare = {**second, "eval_results": second["eval_results"].drop("training")}
    assert sorted(merged_tables([first, bare])["eval_results"]["seed"].to_list()) == sorted(
        merged["eval_results"]["seed"].to_list()
    )
    assert merged["problems"]["question"].to_list() == ["first"]
    assert "accuracy" not in merged and merged["_times"] == {"which": "second"}
    # the loop's tables are keyed by round too: a later export's new rounds come in
    rounds = lambda keys: pl.DataFrame({"dataset": ["G"] * len(keys), "student": "s", "seed": 0, "round_key": keys})  # noqa: E731
    loop = merged_tables([{**first, "round_evals": rounds(["r0"])}, {**second, "round_evals": rounds(["r0", "r1"])}])
    assert loop["round_evals"]["round_key"].to_list() == ["r0", "r1"]
    # exports of other problems are not one study
    other = {**second, "problems": pl.DataFrame({"problem_id": ["p9"], "question": ["?"]})}
    with pytest.raises(ValueError, match=r"later\.tar: its problems differ from first\.tar's"):
        merged_tables([first, other], ["first.tar", "later.tar"])


def test_an_export_holds_only_the_last_cuts_rows():
    """Countdown ran on the fifth run's data folder: the tables still held the word problems' answers of H
    (Countdown's evaluation had not run), the G_normal_checked arm Countdown does not have, and their accuracy.
    The export keeps the cut's arms and problems, and accuracy only where its arm still has answers."""
    from bench.gpu_study import current_rows

    experiment = load_experiment(PROJECT_ROOT / "bench" / "results" / "gpu_study" / "countdown_run" / "experiment.yaml")
    frames = {
        "problems": pl.DataFrame({"problem_id": ["c1", "c2"], "task": "countdown"}),
        "eval_results": pl.DataFrame(
            {"dataset": ["H", "base", "G_normal_checked", "base"], "student": "s", "problem_id": ["w1", "c1", "w1", "w2"]}
        ),
        "accuracy": pl.DataFrame({"dataset": ["H", "base", "G_normal_checked"], "student": "s", "accuracy": [0.6, 0.1, 0.05]}),
        "checkpoints": pl.DataFrame({"dataset": ["H", "G_normal_checked", "H_aa"], "student": "s", "seed": [0, 3, 0]}),
        "sft_examples": pl.DataFrame({"dataset": ["H", "G_normal_checked"], "problem_id": ["c2", "w1"]}),
        "trace_stats": pl.DataFrame({"dataset": ["H", "G_normal_checked", "W_normal"], "n_examples": [1, 380, 2]}),
    }
    kept = current_rows(frames, experiment)
    assert kept["problems"].equals(frames["problems"])
    assert kept["eval_results"]["problem_id"].to_list() == ["c1"]
    assert kept["accuracy"]["dataset"].to_list() == ["base"]  # H's accuracy was of its word-problem answers
    assert kept["checkpoints"]["dataset"].to_list() == ["H", "H_aa"]
    assert kept["trace_stats"]["dataset"].to_list() == ["H"]  # W_normal has no examples left here


def test_merged_exports_report_the_seeds_their_answers_come_from():
    """The file names seeds 3-5 (the later session's); merged with seeds 0-2, the report is of the seeds the
    trained arms' answers hold. A replicate's answers keep its nominal seed, as eval_results writes them
    (its checkpoint trained at seed + REPLICATE_SEED_OFFSET): the fourth run's and the A/A seeds run's
    H_aa rows are seeds 0-5, and read as offset they had made the merged report's seeds -1000...5."""
    from bench.gpu_study import trained_seeds

    experiment = load_experiment(PROJECT_ROOT / "experiments" / "gpu_study.yaml")
    answers = pl.DataFrame(
        {
            "dataset": ["base", "H", "H", "H_aa", "H_aa", "H"],
            "seed": [7, 0, 3, 1, 5, 5],
        }
    )
    assert trained_seeds(answers, experiment) == [0, 1, 3, 5]


# shape_of_thought.yaml's arms kept in its shrunk run: one of each kind the file sweeps (G, human,
# a completely flawed mixture, a ladder rung) and every planned contrast among them
SHAPE_ARMS = ["G", "H", "mix25", "deg50"]


def test_shape_of_thought_structure_runs_shrunk(tmp_path, tiny_model, instance):
    """shape_of_thought.yaml's structure at test sizes: its four tasks (MATH and MBPP from the local
    fixtures, as the file's offline option says), training per task, a completely flawed mixture and a
    degradation rung, and the contrasts planned among those arms, through every stage."""
    from trace_assets.inputs import check_inputs

    data = PROJECT_ROOT / "experiments" / "data"
    spec = yaml.safe_load((PROJECT_ROOT / "experiments" / "shape_of_thought.yaml").read_text())
    assert spec["training"]["per_task"] and spec["datasets"]["mix25"]["flaw"] == "complete"
    spec["problems"] = {
        "tasks": spec["problems"]["tasks"],
        "source": "synthetic",
        "n_train": 6,
        "n_test": 4,
        "synthetic": {"min_steps": 2, "max_steps": 3},
        "countdown": {"min_numbers": 3, "max_numbers": 4, "n_train": 6, "n_test": 4},
        "math": {"train": str(data / "math_train.jsonl"), "test": str(data / "math_test.jsonl")},
        "mbpp": {"train": str(data / "mbpp_train.jsonl"), "test": str(data / "mbpp_test.jsonl")},
    }
    spec["datasets"] = {name: spec["datasets"][name] for name in SHAPE_ARMS}
    spec["students"] = dict(list(spec["students"].items())[:2])  # two students: inputs span several dataset x student ranges
    planned = [c for c in spec["contrasts"] if set(c) <= {*SHAPE_ARMS, "baseline"}]
    spec["contrasts"] = planned
    spec["styles_dir"] = str(PROJECT_ROOT / "styles")
    experiment = check_inputs(shrunk("shape_of_thought.yaml", tmp_path, tiny_model, spec))
    assert {("mix25", "H"), ("deg50", "H"), ("G", "H")} <= set(experiment.planned_contrasts())
    _, database = run_scripted_graph(experiment, tmp_path / "data", instance)

    with duckdb.connect(str(database), read_only=True) as db:
        examples = db.sql("SELECT e.*, p.task FROM sft_examples e JOIN problems p USING (problem_id)").pl()
        checkpoints = db.sql("SELECT dataset, student, seed, task FROM checkpoints WHERE status = 'trained'").pl()
        accuracy = db.sql("SELECT dataset, training FROM accuracy").pl()
    flaws = examples.filter(pl.col("dataset").is_in(["mix25", "deg50"]))
    flaw_kinds = lambda name: set(flaws.filter(pl.col("dataset") == name)["flaw"]) - {"none"}  # noqa: E731
    assert flaw_kinds("deg50") == {"degraded"} and flaw_kinds("mix25") == {"complete"}
    # one model per task an arm has examples of, per student and seed
    assert checkpoints["student"].n_unique() == 2
    for (dataset, _), group in checkpoints.group_by("dataset", "student"):
        tasks = set(examples.filter(pl.col("dataset") == dataset)["task"])
        assert group.height == len(tasks) * len(experiment.training.seeds) and set(group["task"]) == tasks
    assert set(accuracy.filter(pl.col("dataset").is_in(SHAPE_ARMS))["training"]) == {"per_task"}
    report = (tmp_path / "data" / "report" / "report.md").read_text()
    assert all(f"{a} - {b}" in report or f"{a} vs {b}" in report for a, b in experiment.planned_contrasts())


def test_study_times_start_afresh_for_another_cut(tmp_path):
    """bench/study_run.py resumes a cut of the study where it stopped, and runs every stage again
    for another cut on the same data folder, keeping the earlier cut's times."""
    import json

    from bench.study_run import TIMES_FILE, times_for

    first, second = tmp_path / "first.yaml", tmp_path / "second.yaml"
    first.write_text("datasets: {H: {recipe: H}}\n")
    second.write_text("datasets: {H: {recipe: H}, G: {recipe: G}}\n")
    times = times_for(tmp_path, str(first))
    times["stages"]["problems"] = 1.5
    (tmp_path / TIMES_FILE).write_text(json.dumps(times))
    assert times_for(tmp_path, str(first))["stages"] == {"problems": 1.5}  # the same cut resumes
    again = times_for(tmp_path, str(second))
    assert again["stages"] == {} and again["earlier_runs"][0]["stages"] == {"problems": 1.5}


def test_study_of_human_solutions_alone_runs(tmp_path, tiny_model, instance):
    """A study with no styles (H and its A/A replicate against the untrained student, as the third
    GPU run cut gpu_study.yaml) needs no teacher: every stage runs, the teacher and judge steps have
    nothing to do, and the lineage views and the report are still built."""
    from bench.gpu_study import cut

    spec = cut(yaml.safe_load((PROJECT_ROOT / "experiments" / "gpu_study.yaml").read_text()), ["normal"], ["H", "H_aa"])
    spec["styles"] = []
    experiment = shrunk("gpu_study.yaml", tmp_path, tiny_model, spec)
    _, database = run_scripted_graph(experiment, tmp_path / "data", instance)

    with duckdb.connect(str(database), read_only=True) as db:
        assert db.sql("SELECT count(*) FROM teacher_traces").fetchone() == (0,)
        assert db.sql("SELECT count(*) FROM example_lineage WHERE dataset = 'H'").fetchone()[0] > 0
        datasets = set(db.sql("SELECT DISTINCT dataset FROM accuracy").pl()["dataset"])
    assert datasets == {"base", "base_few_shot", "H", "H_aa"}
    assert "A/A" in (tmp_path / "data" / "report" / "report.md").read_text()


def test_gpu_loop_file_plans_four_rounds_and_its_rehearsal_keeps_a_validation_split(tmp_path):
    """experiments/gpu_loop.yaml, without running it (a scripted run of four rounds costs a minute or
    more): it passes check_inputs, dry-run plans rounds r0..r3, and its stop rule runs all three
    revised rounds even when none gains (the likeliest outcome at this size) and stops after r3, within
    its GPU-hour guard. Its CPU rehearsal (bench/gpu_study.py --shrink) keeps a validation split and the
    file's one training seed; gpu_study.yaml's rehearsal still trains two of its three."""
    from bench.gpu_study import derived
    from trace_assets.cli import plan
    from trace_assets.inputs import check_inputs
    from trace_assets.loop.rounds import RoundOutcome, round_gpu_hours, stop_reason
    from trace_assets.problems.sources import load_problems
    from trace_assets.problems.validation import VALIDATION, carve_validation

    path = PROJECT_ROOT / "experiments" / "gpu_loop.yaml"
    experiment = check_inputs(load_experiment(path))
    assert [row["asset"] for row in plan(experiment) if row["asset"].startswith("round_")] == ["round_*[normal_r0..r3]"]
    revision, hours = experiment.revision, round_gpu_hours(experiment, "normal")
    outcomes = [RoundOutcome(0, None)]
    for number in range(1, 4):
        assert stop_reason(outcomes, revision, hours) is None, f"stopped before round {number}"
        outcomes.append(RoundOutcome(number, False))
    assert stop_reason(outcomes, revision, hours) == "all 3 revision rounds done"

    rehearsal = load_experiment(derived(str(path), tmp_path / "loop", shrink=True, styles=None))
    problems, _ = load_problems(rehearsal.problems, rehearsal.seed)
    split = carve_validation(problems, rehearsal.validation_fraction(), rehearsal.seed)["split"]
    assert (split == VALIDATION).sum() >= 2 and (split == "train").sum() > (split == VALIDATION).sum()
    assert rehearsal.training.seeds == [0] and rehearsal.training.max_steps > 0
    study = load_experiment(derived(str(PROJECT_ROOT / "experiments" / "gpu_study.yaml"), tmp_path / "study", True, None))
    assert study.training.seeds == [0, 1]


def test_results_carry_the_loops_rounds_and_its_last_round_against_round_0():
    """bench/gpu_study.py export brings round_styles and round_evals back, and results turns them into
    the loop's figures: accuracy per round and the last round against round 0 on test, paired."""
    from bench.gpu_study import TABLES, loop_figures

    assert {"round_styles", "round_evals"} <= set(TABLES)
    assert loop_figures({}) == {"loop_rounds": None, "loop_test_last_vs_round_0": None}
    keys = ["normal_r0", "normal_r1", "normal_r2"]
    styles = pl.DataFrame({"style": ["normal"] * 3, "round": [0, 1, 2], "round_key": keys, "version": ["a", "b", "c"]})
    styles = styles.with_columns(pl.Series("parent_key", [None, *keys[:2]], pl.Utf8), pl.lit("revised").alias("status"))
    # 20 test problems: round 2 right on all of them, round 0 on 5; validation alike in every round
    evals = pl.DataFrame(
        [
            {"round_key": key, "split": split, "dataset": "G_normal", "student": "s", "seed": 0, "problem_id": f"{split}{i}",
             "is_correct": (split == "validation" and i < 10) or (split == "test" and (key == "normal_r2" or i < 5))}
            for key in keys for split in ("validation", "test") for i in range(20)
        ]
    )  # fmt: skip
    figures = loop_figures({"round_styles": styles, "round_evals": evals})
    assert [row["test_accuracy"] for row in figures["loop_rounds"]] == [0.25, 0.25, 1.0]
    [last] = figures["loop_test_last_vs_round_0"]
    assert (last["a"], last["b"], last["diff"], last["n_problems"]) == ("normal_r2", "normal_r0", 0.75, 20)
    assert last["ci_low"] > 0 and last["distinguishable"]


def test_loop_steps_are_compared_with_dry_runs_estimate_of_its_rounds():
    """bench/study_run.py's time figures put the loop's GPU steps (every round) against dry-run's
    ``round_*`` row, and leave the row out for a study without the loop."""
    from bench.study_run import time_figures

    steps = {"teacher_traces": 100.0, "round_styles": 10.0, "round_traces": 50.0, "round_examples": 3.0, "round_evals": 20.0}
    times = {"stages": {"loop rounds": 90.0}, "steps": steps, "estimate_before_run_s": {"teacher_traces": 90.0, "round_*": 100.0}}
    figures = time_figures(times, "experiments/gpu_loop.yaml", PROJECT_ROOT)
    assert figures["per_step_vs_estimate"]["round_*"] == {"measured_s": 80.0, "estimate_s": 100.0, "estimate_over_measured": 1.25}
    assert figures["gpu_step_s"]["round_*"] == 80.0 and figures["estimate_over_gpu_steps"] == round(190 / 180, 3)
    # each finished round's steps, kept as it ended: they, not the loop stage's total (lost when a call is cut off
    # in a later round), are the rounds' seconds, each round beside its own estimate
    times["loop_round_steps"] = {
        "normal_r0": {"round_checkpoints": 30.0, "round_evals": 50.0, "round_examples": 8.0},
        "normal_r1": {"round_styles": 45.0, "round_traces": 65.0, "round_checkpoints": 44.0, "round_evals": 76.0},
    }
    times["round_estimate_before_run_s"] = {
        "normal_r0": {"round_checkpoints": 30.0, "round_evals": 45.0},
        "normal_r1": {"round_styles": 50.0},
    }
    figures = time_figures(times, "experiments/gpu_loop.yaml", PROJECT_ROOT)
    assert figures["gpu_step_s"]["round_*"] == 310.0
    # a round run again after a cut-off counts in the loop's seconds, but is no test of its round's estimate
    times["loop_round_steps_again"] = {"normal_r2": {"round_evals": 60.0, "round_failures": 5.0}}
    figures = time_figures(times, "experiments/gpu_loop.yaml", PROJECT_ROOT)
    assert figures["gpu_step_s"]["round_*"] == 375.0 and figures["rounds_run_again"] == ["normal_r2"]
    first, second = figures["rounds_vs_estimate"]
    assert first["round_key"] == "normal_r0" and first["estimate_over_measured"] == round(75 / 80, 3)
    assert first["measured_s"]["round_evals"] == 50.0 and "round_examples" not in first["measured_s"]  # a CPU step
    assert second["estimate_over_measured"] == round(50 / 230, 3)
    times["estimate_before_run_s"].pop("round_*")
    assert "round_*" not in time_figures(times, "experiments/gpu_study.yaml", PROJECT_ROOT)["per_step_vs_estimate"]


def test_the_round_estimates_are_made_for_every_round_of_every_revised_style():
    from bench.study_run import round_estimates
    from trace_assets.loop.rounds import round_steps

    experiment = load_experiment(PROJECT_ROOT / "experiments" / "gpu_loop.yaml")
    estimates = round_estimates(experiment)
    assert list(estimates) == ["normal_r0", "normal_r1", "normal_r2", "normal_r3"]
    assert estimates["normal_r0"]["round_styles"] == 0 < estimates["normal_r1"]["round_styles"]  # round 0 reads the file
    assert estimates["normal_r2"] == round_steps(experiment, "normal", number=2)
    assert round_estimates(load_experiment(PROJECT_ROOT / "experiments" / "gpu_study.yaml")) == {}


def test_a_call_stops_before_a_stage_its_time_left_cannot_hold_but_always_starts_one():
    """bench/study_run.over_budget: the fourth GPU run lost ~49 s of evaluation to a call's time limit.
    A stage whose dry-run estimate exceeds the time left is not started once another stage ran in the
    call; the first stage of a call always starts (a stage longer than any call must run somewhere)."""
    from bench.study_run import over_budget, stage_estimate_s

    estimated = {"teacher_traces": 240.0, "judged_traces": 60.0, "eval_results": 180.0, "round_*": 900.0}
    assert stage_estimate_s(["teacher_traces", "judged_traces"], estimated) == 300.0
    assert stage_estimate_s(["sft_examples", "trace_stats"], estimated) == 0.0  # CPU stages: nothing claimed
    assert stage_estimate_s("loop rounds", estimated) == 900.0
    assert over_budget(["eval_results"], estimated, 200.0, ran_this_call=True) is None
    reason = over_budget(["eval_results"], estimated, 120.0, ran_this_call=True)
    assert reason is not None and "180 s" in reason and "120 s" in reason
    assert over_budget(["eval_results"], estimated, 120.0, ran_this_call=False) is None
    assert over_budget("loop rounds", estimated, 599.0, ran_this_call=False) is None
    assert over_budget(["problems"], estimated, 5.0, ran_this_call=True) is None  # no estimate: CPU work goes on
    assert over_budget(["problems"], estimated, -5.0, ran_this_call=True) is not None  # ...while time is left


def test_the_seed_sd_against_calibrate_keeps_each_students_arms():
    """bench/gpu_study.seed_sd_against_calibrate: arms named by dataset for one student, dataset|student
    for several (one student's arm must not overwrite another's), untrained and one-seed arms left out."""
    from bench.gpu_study import seed_sd_against_calibrate

    def row(dataset, student, sd, seeds=(0, 1, 2)):
        return {"dataset": dataset, "student": student, "seeds": list(seeds), "seed_sd_logit": sd}

    one = seed_sd_against_calibrate([row("H", "s", 0.06), row("base", "s", 0.0), row("G", "s", 0.03, (0,))], 0.06)
    assert one["measured_over_declared"] == {"H": 1.0} and one["measured_pooled_logit"] == 0.06
    two = seed_sd_against_calibrate([row("H", "a", 0.03), row("H", "b", 0.09)], 0.06)
    assert two["measured_over_declared"] == {"H|a": 0.5, "H|b": 1.5} and two["largest_over_smallest"] == 3.0
    assert two["measured_pooled_logit"] == pytest.approx(((0.03**2 + 0.09**2) / 2) ** 0.5, abs=1e-3)


def test_the_rounds_report_comes_from_the_export_as_the_device_wrote_it(tmp_path):
    """The loop's rounds report (its revision diffs read round style files that stay on the device) is copied
    from the export's device_report/, from the tar or its extracted folder; a study without the loop has none."""
    import io
    import tarfile

    from bench.gpu_study import copy_rounds_report

    tar_path = tmp_path / "tables.tar"
    with tarfile.open(tar_path, "w") as tar:
        for name, data in {"device_report/rounds.md": b"# rounds\n", "device_report/report.md": b"# study\n"}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (out := tmp_path / "out").mkdir()
    copy_rounds_report(tar_path, out)
    assert sorted(p.name for p in out.iterdir()) == ["rounds.md"] and (out / "rounds.md").read_text() == "# rounds\n"
    (folder := tmp_path / "folder" / "device_report").mkdir(parents=True)
    (folder / "accuracy_by_round.png").write_bytes(b"png")
    (none := tmp_path / "none").mkdir()
    copy_rounds_report(tmp_path / "folder", none)
    assert (none / "accuracy_by_round.png").read_bytes() == b"png" and not (none / "rounds.md").exists()


def test_the_study_level_engine_and_busy_figures(tmp_path):
    """Issue 25's study-level figures from what a run records: engine starts per model (per step from the
    steps' metadata, over the calls the run took) and the GPU's busy share from nvidia-smi's samples."""
    from bench.study_run import busy_share, engine_figures, work_figures

    experiment = load_experiment(PROJECT_ROOT / "experiments" / "gpu_study.yaml")  # one model in every role
    engines = {
        "teacher_traces": {"engine_starts": 1, "engine_reuses": 0, "engine_wakes": 0},
        "judged_traces": {"engine_starts": 0, "engine_reuses": 1, "engine_wakes": 0},
        "eval_results": {"engine_starts": 1, "engine_reuses": 0, "engine_wakes": 0},
        "failure_modes": {"engine_starts": 0, "engine_reuses": 1, "engine_wakes": 0},
    }
    figures = engine_figures({"engines": engines, "engine_processes": ["call 1", "call 2"]}, experiment)
    assert (figures["engine_starts"], figures["models"], figures["starts_per_model"]) == (2, 1, 2.0)
    assert figures["starts_per_model_per_process"] == 1.0  # two device calls: an engine start each
    assert engine_figures({"stages": {}}, experiment) is None  # a run from before the figure was recorded
    samples = tmp_path / "gpu_util.csv"
    samples.write_text(
        "2026/12/07 19:03:09.278, 0, 0\n2026/12/07 19:03:10.283, 50, 900\n2026/12/07 19:03:11.283, 100, 900\nbad line\n"
    )
    assert busy_share(samples) == {"study_gpu_busy_share": 0.5, "seconds_with_a_kernel": 0.667, "samples": 3}
    assert busy_share(tmp_path / "missing.csv") is None
    # the share of the GPU steps' seconds spent generating and training (the steps' metadata, beside the counts)
    engines["teacher_traces"]["generate_s"] = 30.0
    engines["checkpoints"] = {"engine_starts": 0, "engine_reuses": 0, "engine_wakes": 0, "train_s": 50.0}
    engines["round_checkpoints"] = {"engine_starts": 0, "engine_reuses": 0, "engine_wakes": 0, "train_s": 10.0}
    steps = {"teacher_traces": 60.0, "checkpoints": 100.0, "problems": 5.0, "round_checkpoints": 40.0}
    work = work_figures({"engines": engines, "steps": steps, "stages": {"a": 250.0}})
    assert work["per_step"] == {
        "teacher_traces": {"work_s": 30.0, "step_s": 60.0, "share": 0.5},
        "checkpoints": {"work_s": 50.0, "step_s": 100.0, "share": 0.5},
        "round_checkpoints": {"work_s": 10.0, "step_s": 40.0, "share": 0.25},  # the loop's rounds count too
    }
    assert (work["share_of_gpu_steps"], work["share_of_wall"]) == (0.45, 0.36)
    assert work_figures({"engines": {}, "steps": {"teacher_traces": 60.0}, "stages": {}}) is None
