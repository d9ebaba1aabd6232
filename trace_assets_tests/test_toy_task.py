"""Adding a task is one module and one registry line: this test module is that module. It defines a
toy task (add two numbers, with its own settings section and failure category), registers it, and
runs the whole graph on it with the scripted generation backend of test_tasks_pipeline.py."""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from typing import Any

import duckdb
import polars as pl
import pytest
from pydantic import Field

from trace_assets.answers import Extraction
from trace_assets.experiment import ExperimentError, ProblemsConfig, load_experiment
from trace_assets.problems.records import LoadReport, problem_id
from trace_assets.problems.sources import load_problems
from trace_assets.settings import Section
from trace_assets.tasks import TASKS, Check, grade, register
from trace_assets.tasks.base import line_extraction
from trace_assets_tests.test_data_pipeline import assert_tables_match_models
from trace_assets_tests.test_tasks_pipeline import WRONG

INSTRUCTION = 'Give the sum on its own last line as "#### <number>".'


class AddingSettings(Section):
    max_number: int = Field(50, ge=2, le=1000, description="largest addend")


class AddingTask:
    """Add two whole numbers; the answer is right when it is their sum."""

    name = "adding"
    instruction = INSTRUCTION
    failure_categories: tuple[str, ...] = ("wrong_sum",)
    reference_note = ""
    numbers_matter = True
    judges_wrong_answers = False  # failure_rule names every wrong sum
    numeric_answers = True
    settings: Mapping[str, tuple[Any, Any]] = {"adding": (AddingSettings, AddingSettings())}

    def check_settings(self, problems) -> None:
        n_train, n_test = problems.n_train or 20, problems.n_test or 10
        if n_train + n_test > problems.adding.max_number**2:
            raise ValueError(f"max_number {problems.adding.max_number} allows too few sums for {n_train + n_test} problems")

    def full_sizes(self, problems) -> tuple[int, int]:
        return 20, 10

    def load(self, problems, seed: int, report: LoadReport) -> dict[str, list[dict]]:
        rng = random.Random(f"adding:{seed}")
        n_train, n_test = problems.n_train or 20, problems.n_test or 10
        pairs: list[tuple[int, int]] = []
        while len(pairs) < n_train + n_test:
            pair = (rng.randint(1, problems.adding.max_number), rng.randint(1, problems.adding.max_number))
            pairs += [pair] if pair not in pairs else []
        rows: dict[str, list[dict]] = {"train": [], "test": []}
        for index, (a, b) in enumerate(pairs):
            split = "train" if index < n_train else "test"
            question = f"What is {a} plus {b}?\n\n{INSTRUCTION}"
            rows[split].append(
                {
                    "problem_id": problem_id(question, self.name),
                    "split": split,
                    "question": question,
                    "reference_solution": f"{a} + {b} = {a + b}\n#### {a + b}",
                    "answer": str(a + b),
                    "difficulty": len(str(a + b)),
                    "source": "synthetic",
                    "task": self.name,
                    "task_metadata": json.dumps({"addends": [a, b]}),
                }
            )
        return rows

    def check_problems(self, problems, seed: int) -> int:
        return len(self.load(problems, seed, LoadReport())["train"])

    def read(self, completion: str | None) -> Extraction:
        return line_extraction(completion)

    def check(self, answer: str | None, problem: Mapping) -> Check:
        if answer is None:
            return Check(False, "no_answer")
        if answer.strip() != problem["answer"]:
            return Check(False, f"wrong_sum: {answer[:20]} != {problem['answer']}")
        return Check(True, "ok")

    def failure_rule(self, check: Check) -> tuple[str, str] | None:
        return (check.code, check.reason) if check.code == "wrong_sum" else None


@pytest.fixture
def adding():
    task = register(AddingTask())
    yield task
    del TASKS[task.name]


def test_the_toy_task_is_a_task_like_the_others(adding):
    problems = ProblemsConfig(tasks=["adding", "countdown"], n_train=3, n_test=2, adding={"max_number": 9})
    assert problems.adding == AddingSettings(max_number=9) and problems.countdown.n_train == 32
    frame, _ = load_problems(problems, seed=0)
    assert dict(frame.group_by("task").len().iter_rows()) == {"adding": 5, "countdown": 5}
    row = frame.filter(pl.col("task") == "adding").row(0, named=True)
    _, right, _ = grade(row["reference_solution"], row)
    _, wrong, _ = grade("#### 1000", row)
    assert right.correct and not wrong.correct and wrong.code == "wrong_sum"
    with pytest.raises(ValueError, match="too few sums"):
        ProblemsConfig(tasks=["adding"], n_train=3, n_test=2, adding={"max_number": 2})


def test_its_settings_are_checked_in_the_experiment_file(adding, tmp_path):
    base = "name: t\nstyles: [normal]\nteacher: {model: m}\njudge: {model: m}\nstudents: {s: {model: m}}\ndatasets: {}\n"
    path = tmp_path / "exp.yaml"
    path.write_text(base + "problems: {tasks: [adding], adding: {max_number: 1}}\n")
    with pytest.raises(ExperimentError, match=r"problems\.adding\.max_number"):
        load_experiment(path)
    path.write_text(base + "problems: {tasks: [adding], adding: {max_numbr: 5}}\n")
    with pytest.raises(ExperimentError, match=r"unknown key 'problems\.adding\.max_numbr'"):
        load_experiment(path)


def test_unregistered_it_is_unknown():
    with pytest.raises(ValueError, match="adding"):
        ProblemsConfig(tasks=["adding"])


def test_a_task_cannot_take_another_tasks_name_or_settings(adding):
    with pytest.raises(ValueError, match="already registered"):
        register(AddingTask())
    thief = AddingTask()
    thief.name, thief.settings = "thief", {"countdown": (AddingSettings, AddingSettings())}
    with pytest.raises(ValueError, match=r"\['countdown'\] belong to \['countdown'\]"):
        register(thief)
    assert "thief" not in TASKS


def test_whole_graph_runs_on_the_toy_task(adding, tmp_path, tiny_model, instance, monkeypatch):
    from trace_assets.inputs import check_inputs
    from trace_assets_tests.test_tasks_pipeline import run_scripted_graph, write_task_experiment

    monkeypatch.setitem(WRONG, "adding", "I add them.\n#### 1000")
    path = write_task_experiment(tmp_path, tiny_model, ["adding"])
    path.write_text(path.read_text().replace("  source: synthetic\n", "  adding: {max_number: 40}\n"))
    experiment = check_inputs(load_experiment(path))
    defs, database = run_scripted_graph(experiment, tmp_path / "data", instance, monkeypatch)

    with duckdb.connect(str(database), read_only=True) as db:
        assert_tables_match_models(db, defs)
        problems = db.sql("SELECT * FROM problems").pl()
        assert set(problems["task"]) == {"adding"} and problems.height == 7
        traces = db.sql("SELECT * FROM teacher_traces WHERE kind = 'solve'").pl()
        assert traces.filter(pl.col("sample_index") == 0)["is_correct"].all()  # the toy task's checker scored them
        assert not traces.filter(pl.col("sample_index") == 1)["is_correct"].any()
        assert db.sql("SELECT * FROM judged_traces").pl()["rules_pass"].all()  # its own answer format
        examples = db.sql("SELECT * FROM sft_examples").pl()
        assert examples.filter(pl.col("dataset") == "G")["is_correct"].all() and examples.height > 0
        evals = db.sql("SELECT * FROM eval_results").pl()
        assert set(evals["task"]) == {"adding"}
        scripted_right = evals["problem_id"].map_elements(lambda p: int(p[-1], 16) % 2 == 1, return_dtype=pl.Boolean)
        assert evals["is_correct"].to_list() == scripted_right.to_list()
        failures = db.sql("SELECT * FROM failure_modes").pl()
        assert failures.height == evals.filter(~pl.col("is_correct")).height > 0
        assert set(failures["category"]) == {"wrong_sum"}  # decided by the toy task's verifier
    report = (tmp_path / "data" / "report" / "report.md").read_text()
    assert "### adding: planned contrasts" in report
