"""The tasks' problem sources and verifiers: right, wrong, malformed and hostile answers for each."""

from __future__ import annotations

import json
import threading
import time

import polars as pl
import pytest

from trace_assets.experiment import ProblemsConfig
from trace_assets.problems.sources import LoadReport, ProblemFileError, load_problems, read_jsonl
from trace_assets.reporting.failures import ALL_CATEGORIES, classify_task_failure
from trace_assets.tasks import TASK_NAMES, get_task, grade
from trace_assets.tasks.competition_math import equivalent, last_boxed, parse_math_record
from trace_assets.tasks.countdown import generate_problems, verify
from trace_assets.tasks.mbpp import parse_mbpp_record

FIXTURES = {
    "math": {"train": "experiments/data/math_train.jsonl", "test": "experiments/data/math_test.jsonl"},
    "mbpp": {"train": "experiments/data/mbpp_train.jsonl", "test": "experiments/data/mbpp_test.jsonl"},
}


@pytest.fixture(scope="module")
def problems() -> pl.DataFrame:
    settings = ProblemsConfig(tasks=list(TASK_NAMES), n_train=4, n_test=3, **FIXTURES)
    frame, _ = load_problems(settings, seed=0)
    return frame


def first(problems: pl.DataFrame, task: str) -> dict:
    return problems.filter(pl.col("task") == task).row(0, named=True)


def test_every_task_loads_and_its_reference_solutions_verify(problems):
    counts = dict(problems.group_by("task").len().iter_rows())
    assert counts == dict.fromkeys(TASK_NAMES, 7)
    for row in problems.iter_rows(named=True):
        _extraction, check, strict = grade(row["reference_solution"], row)
        assert check.correct and strict.correct, (row["task"], row["question"][:80], check)
        if row["task"] != "gsm8k":
            assert get_task(row["task"]).instruction in row["question"]  # every model sees the answer format


def test_gsm8k_problems_are_unchanged_by_tasks():
    settings = ProblemsConfig(n_train=5, n_test=4, synthetic={"min_steps": 1, "max_steps": 2})
    frame, _ = load_problems(settings, seed=3)
    assert set(frame["task"]) == {"gsm8k"} and set(frame["task_metadata"]) == {"{}"}
    assert "####" not in frame["question"][0] and not any("Give the final" in q for q in frame["question"])
    # ids are the hash of the question alone, as before tasks existed
    import hashlib

    from trace_assets.problems.sources import normalise_question

    row = frame.row(0, named=True)
    assert row["problem_id"] == "p_" + hashlib.sha1(normalise_question(row["question"]).encode()).hexdigest()[:12]


# ------------------------------------------------------------------------------------------------ countdown


def test_countdown_generator_is_seeded_solvable_and_difficulty_is_the_count_of_numbers():
    one = generate_problems(30, 7, 2, 6, 20, 500)
    assert one == generate_problems(30, 7, 2, 6, 20, 500)
    assert one != generate_problems(30, 8, 2, 6, 20, 500)
    assert {len(p["numbers"]) for p in one} <= set(range(2, 7)) and len({len(p["numbers"]) for p in one}) > 2
    for problem in one:
        assert verify(problem["expression"], problem["numbers"], problem["target"]).correct
        assert 1 <= problem["target"] <= 500 and problem["target"] not in problem["numbers"]
    with pytest.raises(RuntimeError, match="Countdown problems"):
        generate_problems(50, 0, 2, 2, 2, 3)  # two numbers up to 2 cannot make 50 distinct problems


@pytest.mark.parametrize(
    ("expression", "code"),
    [
        ("(6 - 2) * 5", "ok"),
        ("5 * (6 - 2) = 20", "ok"),  # the result after '=' is ignored
        ("(6 − 2) × 5", "ok"),  # Unicode minus and times
        ("\\left(6 - 2\\right) \\times 5", "ok"),  # LaTeX
        ("6 * 5 - 2 * 5", "number_misuse"),  # 5 used twice, given once
        ("20", "number_misuse"),  # 20 is not a given number
        ("6 * 2 + 5", "wrong_value"),
        ("6 / (5 - 5)", "number_misuse"),
        ("6 / (2 - 2)", "number_misuse"),
        ("", "no_answer"),
        ("(6 - 2 * 5", "invalid_expression"),
        ("6 - 2 5", "invalid_expression"),
        ("-6 + 2 * 5", "invalid_expression"),  # unary minus is not a Countdown operation
        ("6.0 * 2", "invalid_expression"),
        ("2 ** 5", "invalid_expression"),
        ("2 // 5", "invalid_expression"),
        ("__import__('os').system('true')", "invalid_expression"),
        ("open('/etc/passwd').read()", "invalid_expression"),
        ("x * 5", "invalid_expression"),
        ("(" * 150 + "6" + ")" * 150, "invalid_expression"),  # longer than 200 characters
        ("((((6))))", "wrong_value"),  # parentheses alone are fine
        ("9" * 5000, "invalid_expression"),
        ("2 ** 2 ** 2 ** 2 ** 99999", "invalid_expression"),
        ("lambda: 1", "invalid_expression"),
    ],
)
def test_countdown_verifier(expression, code):
    started = time.perf_counter()
    check = verify(expression, [2, 5, 6], 20)
    assert check.code == code, check
    assert check.correct == (code == "ok")
    assert time.perf_counter() - started < 0.5


def test_countdown_division_by_zero_and_exact_fractions():
    assert verify("6 / (3 - 3)", [6, 3, 3], 2).reason == "invalid_expression: division by zero"
    assert verify("(1 / 3 + 1) * 3", [1, 3, 1, 3], 4).correct  # intermediate fractions are exact
    assert not verify("8 / 3", [8, 3], 2).correct  # 2.666... is not 2


def test_countdown_completions_are_read_from_the_last_declaration(problems):
    row = first(problems, "countdown")
    fields = json.loads(row["task_metadata"])
    right = row["reference_solution"].splitlines()[-1].removeprefix("#### ")
    assert grade(f"Let me try.\n#### {fields['numbers'][0]}\nNo wait.\n#### {right}", row)[1].correct
    assert not grade(f"#### {right}\nActually:\n#### 1", row)[1].correct
    for text in (None, "", "I give up", "#### ", "x" * 200_000):
        extraction, check, _ = grade(text, row)
        assert not check.correct
    extraction, check, strict = grade(f"ANSWER: {right}", row)
    assert check.correct and not strict.correct and extraction.method == "label"


# ------------------------------------------------------------------------------------------------ math


@pytest.mark.parametrize(
    ("answer", "reference", "correct"),
    [
        ("\\frac{3}{4}", "\\frac{3}{4}", True),
        ("0.75", "\\frac{3}{4}", True),
        ("\\dfrac{6}{8}", "\\frac{3}{4}", True),
        ("9\\pi", "9\\pi", True),
        ("x^2 - x - 6", "x^2 - x - 6", True),
        ("(x-3)(x+2)", "x^2 - x - 6", True),
        ("\\sqrt{4}", "2", True),
        ("3", "\\frac{3}{4}", False),
        ("x^2 + x - 6", "x^2 - x - 6", False),
        ("9", "9\\pi", False),
    ],
)
def test_math_verifier_compares_symbolically(answer, reference, correct):
    assert equivalent(answer, reference).correct is correct


@pytest.mark.parametrize(
    "answer",
    [
        None,
        "",
        "\\frac{",
        "}}}{{{",
        "I don't know",
        "x" * 5000,
        "9^{9^{9^{9^{9}}}}",
        "\\__import__('os').system('true')",
        "__import__('os').system('touch /tmp/pwned_by_math')",
        "(" * 200,
    ],
)
def test_math_malformed_and_hostile_answers_fail_quickly(answer, tmp_path):
    started = time.perf_counter()
    assert not equivalent(answer, "3").correct
    assert time.perf_counter() - started < 5
    assert not (tmp_path / "pwned_by_math").exists()


def test_math_off_the_main_thread_refuses_what_could_hang_sympy():
    results = []
    worker = threading.Thread(target=lambda: results.extend([equivalent("9^{9^{9^{9}}}", "3"), equivalent("0.5", "\\frac12")]))
    started = time.perf_counter()
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive() and time.perf_counter() - started < 10
    assert results[0].code == "unparsable_answer" and results[1].correct


def test_math_reads_hash_lines_then_boxed(problems):
    row = first(problems, "math")
    answer = row["answer"]
    assert grade(f"so the answer is \\boxed{{{answer}}}", row)[1].correct  # flexible: the last \boxed{}
    extraction, check, _strict = grade(f"\\boxed{{{answer}}}\n#### 123456", row)
    assert extraction.method == "strict" and not check.correct  # the declared line wins over a box
    assert last_boxed("\\boxed{\\frac{1}{2}} then \\boxed{x^{2}}") == "x^{2}" and last_boxed("\\boxed{unclosed") is None


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("[1, 2]", "expected a JSON object"),
        ('{"problem": "p", "solution": "no box", "level": "Level 2", "type": "Algebra"}', "no \\\\boxed"),
        ('{"problem": "p", "solution": "\\\\boxed{1}", "level": "hard", "type": "Algebra"}', "'level' must be"),
        ('{"problem": "", "solution": "\\\\boxed{1}", "level": 2, "type": "Algebra"}', "'problem'"),
        ('{"problem": "p", "solution": "\\\\boxed{1}", "level": 2}', "'type'"),
        ("{not json", "not valid JSON"),
    ],
)
def test_math_bad_records_name_the_problem(line, message):
    with pytest.raises(ValueError, match=message):
        parse_math_record(line, "train")


def test_math_bad_file_names_file_and_line(tmp_path):
    path = tmp_path / "math.jsonl"
    good = json.dumps({"problem": "1+1?", "solution": "\\boxed{2}", "level": "Level 1", "type": "Prealgebra"})
    path.write_text(good + "\n" + '{"problem": "x"}\n')
    with pytest.raises(ProblemFileError, match=r"math\.jsonl:2: missing"):
        read_jsonl(path, "train", False, LoadReport(), parse_math_record)
    row = parse_math_record(good, "test")
    assert row["difficulty"] == 1 and json.loads(row["task_metadata"]) == {"level": 1, "type": "Prealgebra"}


# ------------------------------------------------------------------------------------------------ mbpp


def mbpp_row(problems) -> dict:
    return first(problems, "mbpp")


def test_mbpp_right_wrong_and_malformed_code(problems):
    row = mbpp_row(problems)
    right = row["reference_solution"]
    assert grade(f"Here it is:\n{right}", row)[1].correct
    _extraction, check, strict = grade("```\n" + right.split("\n", 1)[1], row)  # an untagged fence: flexible only
    assert check.correct and not strict.correct
    name = right.split("def ", 1)[1].split("(", 1)[0]
    cases = {
        f"```python\ndef {name}(*args):\n    return None\n```": "test_failed",
        f"```python\ndef {name}(*args)\n    return None\n```": "syntax_error",
        f"```python\ndef {name}(*args):\n    return 1 / 0\n```": "runtime_error",
        "```python\ndef something_else():\n    pass\n```": "runtime_error",  # NameError in the asserts
        "no code at all": "no_answer",
        "```python\nunclosed fence": "no_answer",
    }
    for text, code in cases.items():
        assert grade(text, row)[1].code == code, text


def test_mbpp_hostile_code_is_scored_failed(problems, tmp_path):
    row = mbpp_row(problems)
    secret = tmp_path / "secret.txt"
    secret.write_text("do not read")
    hostile = {
        "import os\nos.system('touch /tmp/pwned_by_mbpp')": "forbidden_operation",
        f"print(open({str(secret)!r}).read())": "forbidden_operation",
        "import sys\nsys.exit(0)": "exited_early",
        "import os\nos._exit(0)": "exited_early",  # skipping the tests does not pass them
    }
    for code, status in hostile.items():
        check = grade(f"```python\n{code}\n```", row)[1]
        assert not check.correct and check.code == status, (code, check)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"text": "t", "code": "def f(): pass"}, "'test_list' must be"),
        ({"text": "t", "code": "def f(): pass", "test_list": []}, "'test_list' must be"),
        ({"text": "t", "code": "def f(:", "test_list": ["assert f() is None"]}, "'code' is not valid Python"),
        ({"text": "t", "code": "def f(): pass", "test_list": ["assert ("]}, r"'test_list\[0\]' is not valid Python"),
        ({"code": "def f(): pass", "test_list": ["assert True"]}, "'text'"),
    ],
)
def test_mbpp_bad_records_name_the_problem(record, message):
    with pytest.raises(ValueError, match=message):
        parse_mbpp_record(json.dumps(record), "train")


# ------------------------------------------------------------------------------------------------ failures


def test_task_failures_are_decided_by_the_verifier(problems):
    countdown, mbpp, math = first(problems, "countdown"), mbpp_row(problems), first(problems, "math")
    assert classify_task_failure("#### 1 + 1 + 1 + 1", countdown, False, False).category == "number_misuse"
    assert classify_task_failure("#### import os", countdown, False, False).category == "invalid_expression"
    assert classify_task_failure("no answer", countdown, False, True).category == "no_answer_format"
    assert classify_task_failure("```python\ndef f(:\n```", mbpp, False, False).category == "syntax_error"
    assert classify_task_failure("word " * 100, mbpp, True, True).category == "loop_degeneration"
    assert classify_task_failure("#### \\frac{", math, False, False).category == "unparsable_answer"
    wrong = classify_task_failure("#### 123456", math, False, False)
    assert wrong.needs_judge and wrong.category in (None, *ALL_CATEGORIES)  # a wrong MATH value: the judge decides
    for proposal in (classify_task_failure("#### 1 + 1 + 1 + 1", countdown, False, False),):
        assert proposal.decisive and proposal.category in ALL_CATEGORIES


# ------------------------------------------------------------------------------------------------ experiments


@pytest.mark.parametrize("task", TASK_NAMES)
def test_the_smoke_experiment_runs_on_each_task(task):
    from trace_assets.experiment import PROJECT_ROOT, load_experiment
    from trace_assets.inputs import check_inputs

    smoke = load_experiment(PROJECT_ROOT / "experiments" / "smoke.yaml")
    assert smoke.problems.tasks == ["gsm8k"]
    experiment = smoke.model_copy(update={"problems": smoke.problems.model_copy(update={"tasks": [task]})})
    check_inputs(experiment)
    frame, _ = load_problems(experiment.problems, experiment.seed)
    assert set(frame["task"]) == {task} and frame.filter(pl.col("split") == "test").height > 0


def test_shape_of_thought_names_the_four_tasks_and_dry_run_counts_them():
    from trace_assets.cli import problem_counts
    from trace_assets.experiment import PROJECT_ROOT, load_experiment
    from trace_assets.inputs import check_inputs

    study = check_inputs(load_experiment(PROJECT_ROOT / "experiments" / "shape_of_thought.yaml"))
    assert study.problems.tasks == ["gsm8k", "countdown", "math", "mbpp"]
    assert problem_counts(study.problems) == (7473 + 2000 + 7500 + 374, 1319 + 500 + 5000 + 500)


def test_tasks_in_the_experiment_file_are_checked(tmp_path):
    from trace_assets.experiment import ExperimentError, load_experiment

    base = "name: t\nstyles: [normal]\nteacher: {model: m}\njudge: {model: m}\nstudents: {s: {model: m}}\ndatasets: {}\n"
    cases = {
        "problems: {tasks: [chess]}": "problems.tasks.0",
        "problems: {tasks: [math]}": "task 'math' needs a 'math' section",
        "problems: {tasks: [countdown, countdown]}": "tasks must be distinct",
        "problems: {tasks: [countdown], countdown: {min_numbers: 5, max_numbers: 3}}": "min_numbers",
    }
    for extra, message in cases.items():
        path = tmp_path / "exp.yaml"
        path.write_text(base + extra + "\n")
        with pytest.raises(ExperimentError, match=message):
            load_experiment(path)


# ------------------------------------------------------------------------------------------------ hub sources

MATH_ROWS = {
    "train": [
        {"problem": "What is $1+1$?", "solution": "$1+1=\\boxed{2}$.", "level": "Level 1", "type": "Algebra"},
        {"problem": "What is $2+2$?", "solution": "$2+2=\\boxed{4}$.", "level": "Level ?", "type": "Algebra"},
    ],
    "test": [{"problem": "What is $3 \\cdot 3$?", "solution": "$\\boxed{9}$", "level": "Level 2", "type": "Prealgebra"}],
}
MBPP_ROWS = {
    split: [
        {
            "task_id": number,
            "text": text,
            "code": f"def f(x):\r\n    return {body}",
            "test_list": [f"assert f(3) == {result}"],
            "test_setup_code": "",
            "challenge_test_list": [],
        }
    ]
    for split, number, text, body, result in (
        ("train", 601, "Write a function that doubles a number.", "2 * x", 6),
        ("test", 11, "Write a python function returning the square of its argument.", "x * x", 9),
        ("validation", 511, "Write a function that negates a number.", "-x", -3),
    )
}


@pytest.fixture
def hub(monkeypatch):
    """``datasets.load_dataset`` answering from these rows (CI has no hub); records each call."""
    import datasets

    calls = []

    def load_dataset(name, config=None):
        calls.append((name, config))
        return {"math/x": MATH_ROWS, "mbpp/x": MBPP_ROWS}[name]

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def test_math_and_mbpp_read_a_hub_dataset(hub):
    settings = ProblemsConfig(
        tasks=["math", "mbpp"],
        math={"dataset": "math/x", "config": "default", "skip_bad_rows": True},
        mbpp={"dataset": "mbpp/x", "config": "full"},
    )
    frame, report = load_problems(settings, seed=0)
    assert hub == [("math/x", "default"), ("mbpp/x", "full")]
    assert set(frame["source"]) == {"hub"}
    counts = {(task, split): n for task, split, n in frame.group_by("task", "split").len().iter_rows()}
    assert counts == {("math", "train"): 1, ("math", "test"): 1, ("mbpp", "train"): 1, ("mbpp", "test"): 1}
    # the row without a level is skipped and named; the validation split is not read
    assert report.skipped_lines == [
        "math/x (default), split 'train', row 1: 'level' must be 'Level N' or N with N a digit (got 'Level ?')"
    ]
    for row in frame.iter_rows(named=True):
        assert grade(row["reference_solution"], row)[1].correct, row
    # the same record from the hub and from JSONL is the same problem
    line = json.dumps(MATH_ROWS["test"][0])
    assert parse_math_record(line, "test")["problem_id"] in set(frame["problem_id"])


def test_hub_rows_in_another_format_and_missing_splits_are_named(hub):
    with pytest.raises(ProblemFileError, match=r"math/x, split 'train', row 1: 'level' must be"):
        load_problems(ProblemsConfig(tasks=["math"], math={"dataset": "math/x"}), seed=0)
    with pytest.raises(
        ProblemFileError, match=r"mbpp/x: no split 'dev' \(it has \['test', 'train', 'validation'\]\); set test_split"
    ):
        load_problems(ProblemsConfig(tasks=["mbpp"], mbpp={"dataset": "mbpp/x", "test_split": "dev"}), seed=0)


def test_hub_sources_are_not_read_when_an_experiment_is_checked(hub):
    settings = ProblemsConfig(tasks=["math", "mbpp"], n_train=50, math={"dataset": "math/x"}, mbpp={"dataset": "mbpp/x"})
    assert [get_task(name).check_problems(settings, 0) for name in ("math", "mbpp")] == [50, 50]
    assert hub == []  # no network before a run; the sizes are the releases' for dry-run
    with pytest.raises(ValueError, match="dataset"):
        ProblemsConfig(tasks=["math"], math={"dataset": "math/x", "train": "a.jsonl"})
