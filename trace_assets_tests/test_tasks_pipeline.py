"""The whole graph on Countdown, MATH and MBPP (and all four tasks at once), with a scripted generation
backend and a tiny random-weight student: the same assets, recipes and statistics as for GSM8K."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import ClassVar

import dagster as dg
import duckdb
import polars as pl
import pytest
import yaml

from trace_assets.demo import STAGES, run_stage
from trace_assets.experiment import PROJECT_ROOT, load_experiment
from trace_assets.generation.backends import Backend
from trace_assets.generation.types import Completion, GenerationStats
from trace_assets.project import build_definitions
from trace_assets.resources import GenerationResource
from trace_assets_tests.test_data_pipeline import assert_tables_match_models

WRONG = {
    "countdown": "I combine them.\n#### 1 + 1",
    "math": "I think it is this.\n#### 123456",
    "mbpp": "```python\ndef solution(*args):\n    return None\n```",
    "gsm8k": "2 + 2 = 4\n#### 4000",
}


class ScriptedTasks(Backend):
    """Solves with the reference solution (first sample, and half the students' answers) or a wrong
    answer in the task's format; judges approve; paraphrases copy the reference."""

    problems: ClassVar[dict[str, dict]] = {}  # question -> problems row

    def _problem(self, text: str) -> dict | None:
        hits = [(text.rfind(question), row) for question, row in self.problems.items() if question in text]
        return max(hits, key=lambda hit: hit[0])[1] if hits else None

    def generate(self, spec, sampling, requests, on_batch, log=print):
        batch = []
        for request in requests:
            prompt = request.prompt if request.prompt is not None else request.messages[-1]["content"]
            problem = self._problem(prompt)
            for index in range(sampling.n):
                schema = request.json_schema
                if schema and "faithful" in schema["properties"]:
                    text = '{"faithful": true, "reason": "same steps"}'
                elif schema and "conforms" in schema["properties"]:
                    text = '{"conforms": true, "failed_criteria": [], "reason": "ok"}'
                elif schema:
                    text = '{"category": "unclassified", "reason": "scripted"}'
                elif "Reference solution" in prompt:
                    text = prompt.split("Reference solution:\n", 1)[1]
                elif problem is None:
                    text = ""
                elif request.prompt is not None:  # a student: right on half the problems
                    text = problem["reference_solution"] if int(problem["problem_id"][-1], 16) % 2 else WRONG[problem["task"]]
                else:
                    text = problem["reference_solution"] if index == 0 else WRONG[problem["task"]]
                batch.append(Completion(request.key, index, text, "stop", 10, max(1, len(text.split()))))
        on_batch(batch)
        return GenerationStats(generate_s=1.0, output_tokens=sum(c.output_tokens for c in batch), completions=len(batch))


class ScriptedTasksGeneration(GenerationResource):
    def backend(self, config):
        return ScriptedTasks()


def run_scripted_graph(experiment, folder: Path, instance, monkeypatch=None) -> tuple[dg.Definitions, Path]:
    """Every stage of ``experiment`` in ``folder`` with the scripted backend (which learns the problems once
    they are materialized); returns the definitions and the DuckDB file. ``monkeypatch`` restores the
    backend's problems after the test."""
    defs = build_definitions(experiment, folder)
    resources = dict(defs.resources)
    resources["generation"] = ScriptedTasksGeneration(gpu=resources["gpu"], data=resources["data"])
    defs = dg.Definitions(assets=list(defs.assets), resources=resources)
    run_stage(defs, instance, STAGES[0])
    database = folder / "trace_assets.duckdb"
    with duckdb.connect(str(database), read_only=True) as db:
        problems = db.sql("SELECT * FROM problems").pl()
    by_question = {row["question"]: row for row in problems.iter_rows(named=True)}
    if monkeypatch is not None:
        monkeypatch.setattr(ScriptedTasks, "problems", by_question)
    else:
        ScriptedTasks.problems = by_question
    for stage in STAGES[1:]:
        run_stage(defs, instance, stage)
    return defs, database


def write_task_experiment(folder: Path, model: str, tasks: list[str]) -> Path:
    styles_dir = folder / "styles"
    if not styles_dir.exists():
        shutil.copytree(PROJECT_ROOT / "styles", styles_dir)
    data = PROJECT_ROOT / "experiments" / "data"
    text = f"""
name: tasks_{"_".join(tasks)}
seed: 0
problems:
  tasks: [{", ".join(tasks)}]
  source: synthetic
  n_train: 4
  n_test: 3
  synthetic: {{min_steps: 1, max_steps: 2}}
  countdown: {{min_numbers: 3, max_numbers: 4}}
  math: {{train: {data / "math_train.jsonl"}, test: {data / "math_test.jsonl"}}}
  mbpp: {{train: {data / "mbpp_train.jsonl"}, test: {data / "mbpp_test.jsonl"}}}
styles_dir: {styles_dir}
styles: [normal]
teacher: {{model: {model}, sampling: {{temperature: 0.7, max_tokens: 24, n: 2}}}}
judge: {{model: {model}, sampling: {{temperature: 0.0, max_tokens: 32}}}}
students: {{tiny: {{model: {model}}}}}
datasets:
  G: {{recipe: G, style: normal, pair_correct_wrong: true}}
  W: {{recipe: W, style: normal, pair_correct_wrong: true}}
  H: {{recipe: H}}
  mix50: {{recipe: mixture, style: normal, flawed_fraction: 0.5, flaw: both, pair_correct_wrong: true}}
contrasts: [[G, baseline], [W, G]]
comparisons: {{groups: [[G, W, mix50]]}}
training: {{max_steps: 1, batch_size: 2, max_length: 256, eval_fraction: 0.25}}
evaluation: {{max_tokens: 16, few_shot_k: 1}}
"""
    path = folder / "experiment.yaml"
    path.write_text(text)
    return path


def train_per_task(path: Path, dataset: str) -> Path:
    """The experiment file at ``path`` with ``dataset`` trained per task (the others stay pooled)."""
    spec = yaml.safe_load(path.read_text())
    spec["datasets"][dataset]["per_task"] = True
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


# All four tasks in one study (every task's path through every asset; G trained per task, the other arms
# pooled), and Countdown alone (a study without GSM8K).
@pytest.mark.parametrize("tasks", [["gsm8k", "countdown", "math", "mbpp"], ["countdown"]], ids="+".join)
def test_whole_graph_runs_on_each_task(tmp_path, tiny_model, instance, tasks):
    from trace_assets.inputs import check_inputs

    path = write_task_experiment(tmp_path, tiny_model, tasks)
    per_task = len(tasks) > 1
    experiment = check_inputs(load_experiment(train_per_task(path, "G") if per_task else path))
    defs, database = run_scripted_graph(experiment, tmp_path / "data", instance)

    with duckdb.connect(str(database), read_only=True) as db:
        assert_tables_match_models(db, defs)
        assert sorted(db.sql("SELECT DISTINCT task FROM problems").pl()["task"]) == sorted(tasks)
        traces = db.sql("SELECT t.*, p.task FROM teacher_traces t JOIN problems p USING (problem_id)").pl()
        solves = traces.filter(pl.col("kind") == "solve")
        # the task's verifier scored the traces: every reference-solution sample right, every other wrong
        assert solves.filter(pl.col("sample_index") == 0)["is_correct"].all()
        assert not solves.filter(pl.col("sample_index") == 1)["is_correct"].any()
        judged = db.sql("SELECT * FROM judged_traces").pl()
        assert judged["rules_pass"].all()  # the answer check follows the task's own answer format
        examples = db.sql("SELECT * FROM sft_examples").pl()
        sizes = dict(examples.group_by("dataset").len().iter_rows())
        n_train = 4 * len(tasks)
        assert sizes["H"] == sizes["G"] == sizes["W"] == sizes["mix50"] == n_train
        assert examples.filter(pl.col("dataset") == "G")["is_correct"].all()
        assert not examples.filter(pl.col("dataset") == "W")["is_correct"].any()
        assert examples.filter(pl.col("dataset") == "mix50")["flaw"].to_list().count("wrong") == n_train // 2
        evals = db.sql("SELECT * FROM eval_results").pl()
        assert set(evals["task"]) == set(tasks) and evals.filter(pl.col("dataset") == "base").height == 3 * len(tasks)
        scripted_right = evals["problem_id"].map_elements(lambda p: int(p[-1], 16) % 2 == 1, return_dtype=pl.Boolean)
        assert evals["is_correct"].to_list() == scripted_right.to_list()
        failures = db.sql("SELECT * FROM failure_modes").pl()
        assert failures.height == evals.filter(~pl.col("is_correct")).height
        categories = set(failures["category"])
        if "countdown" in tasks:
            assert "number_misuse" in categories  # "1 + 1" uses 1 twice or a number not given
        if "mbpp" in tasks:
            assert "runtime_error" in categories  # the asserts call a function the wrong code never defines
    report = (tmp_path / "data" / "report" / "report.md").read_text()
    assert "## Results per task" in report and all(f"### {task}: planned contrasts" in report for task in tasks)
    assert ("### math: accuracy per type" in report) == ("math" in tasks)
    assert ("**H on countdown** is the generator's step lines" in report) == ("countdown" in tasks)
    assert "| 2 Medium |" in report and "## Training and eval loss" in report
    if per_task:
        assert_trained_per_task(database, "G", tasks, report)


def assert_trained_per_task(database: Path, dataset: str, tasks: list[str], report: str) -> None:
    """``dataset`` trained one model per task, each answering only its own task's problems, and every
    table and the report say so; the pooled arms beside it trained one model each, as before."""
    with duckdb.connect(str(database), read_only=True) as db:
        checkpoints = db.sql("SELECT * FROM checkpoints WHERE status = 'trained'").pl()
        evals = db.sql(
            "SELECT e.*, c.task AS model_task FROM eval_results e JOIN checkpoints c ON c.content_hash = e.checkpoint_hash"
        ).pl()
        logs = db.sql("SELECT DISTINCT dataset, task FROM training_log").pl()
        accuracy = db.sql("SELECT dataset, training FROM accuracy").pl()
    runs = checkpoints.filter(pl.col("dataset") == dataset)
    assert sorted(runs["task"]) == sorted(tasks) and runs["content_hash"].n_unique() == len(tasks)
    assert checkpoints.filter(pl.col("dataset") != dataset)["task"].null_count() == checkpoints.height - len(tasks)
    answered = evals.filter(pl.col("dataset") == dataset)
    assert (answered["model_task"] == answered["task"]).all()  # each model answered its own task only
    assert answered.height == evals.filter(pl.col("dataset") == "W").height  # every problem once, as a pooled arm
    assert set(logs.filter(pl.col("dataset") == dataset)["task"]) == set(tasks)
    training = dict(accuracy.iter_rows())
    assert training[dataset] == "per_task" and training["W"] == training["H"] == "pooled" and training["base"] == "none"
    assert set(evals.filter(pl.col("dataset") == "W")["training"]) == {"pooled"}
    results = report.split("## Accuracy by student and dataset", 1)[1].split("##", 1)[0]
    assert f"| {dataset} | per_task |" in results and "| W | pooled |" in results and "| base | none |" in results
