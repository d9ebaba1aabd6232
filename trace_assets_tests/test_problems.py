import json

import polars as pl
import pytest

from trace_assets.answers import reference_answer
from trace_assets.experiment import PROJECT_ROOT, load_experiment
from trace_assets.problems.sources import ProblemFileError, contamination, load_problems, normalise_record
from trace_assets.problems.synthetic import generate_problems


def test_synthetic_problems_are_reproducible_and_correct():
    first = generate_problems(20, seed=3, min_steps=2, max_steps=5)
    again = generate_problems(20, seed=3, min_steps=2, max_steps=5)
    other = generate_problems(20, seed=4, min_steps=2, max_steps=5)
    assert [p.question for p in first] == [p.question for p in again]
    assert [p.question for p in first] != [p.question for p in other]
    for problem in first:
        assert 2 <= problem.steps <= 5
        assert reference_answer(problem.solution) == str(problem.answer)
        # Replaying the annotations reproduces the answer: the reference solution is self-consistent.
        annotations = [a.split("=") for a in __import__("re").findall(r"<<([^>]*)>>", problem.solution)]
        for expression, result in annotations:
            assert eval(expression) == float(result)


def test_synthetic_source_splits_and_difficulty(tmp_path):
    experiment = load_experiment(PROJECT_ROOT / "experiments" / "smoke.yaml")
    frame, report = load_problems(experiment.problems, experiment.seed)
    assert frame.filter(pl.col("split") == "train").height == experiment.problems.n_train
    assert frame.filter(pl.col("split") == "test").height == experiment.problems.n_test
    steps = experiment.problems.synthetic
    assert frame["difficulty"].min() >= steps.min_steps and frame["difficulty"].max() <= steps.max_steps
    assert not contamination(frame)
    assert report.skipped_lines == []


def test_jsonl_experiment_loads_every_problem_with_the_right_answer():
    experiment = load_experiment(PROJECT_ROOT / "experiments" / "jsonl_example.yaml")
    frame, _ = load_problems(experiment.problems, experiment.seed)
    answers = dict(zip(frame["question"], frame["answer"]))
    assert frame.height == 8
    assert answers["A jacket costs $80. It is on sale for 25% off. What is the sale price?"] == "60"
    assert any(a == "2.25" for a in answers.values())
    assert any(a == "-7" for a in answers.values())
    assert any(a == "700" for a in answers.values())
    assert all("<<" not in s for s in frame["reference_solution"])


def _jsonl_experiment(tmp_path, lines, skip=False):
    train = tmp_path / "train.jsonl"
    train.write_text("\n".join(lines) + "\n")
    test = tmp_path / "test.jsonl"
    test.write_text(json.dumps({"question": "Q test?", "answer": "1+1=2\n#### 2"}) + "\n")
    config = (PROJECT_ROOT / "experiments" / "jsonl_example.yaml").read_text()
    config = config.replace("experiments/data/gsm8k_format_train.jsonl", str(train))
    config = config.replace("experiments/data/gsm8k_format_test.jsonl", str(test))
    config = config.replace("skip_bad_lines: false", f"skip_bad_lines: {str(skip).lower()}")
    path = tmp_path / "exp.yaml"
    path.write_text(config)
    return load_experiment(path), train


GOOD = json.dumps({"question": "Q one?", "answer": "2*3=6\n#### 6"})


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ("{not json", "Expecting property name"),
        (json.dumps({"question": "Q?"}), "missing or non-string key"),
        (json.dumps({"question": "Q?", "answer": "no final answer"}), "####"),
        (json.dumps(["a", "b"]), "expected a JSON object"),
    ],
)
def test_bad_jsonl_line_names_file_and_line(tmp_path, bad_line, message):
    experiment, train = _jsonl_experiment(tmp_path, [GOOD, bad_line])
    with pytest.raises(ProblemFileError) as info:
        load_problems(experiment.problems, experiment.seed)
    assert f"{train}:2:" in str(info.value)
    assert message in str(info.value)


def test_bad_lines_can_be_skipped_and_counted(tmp_path):
    experiment, train = _jsonl_experiment(tmp_path, [GOOD, "{oops", json.dumps({"question": "Q?"})], skip=True)
    frame, report = load_problems(experiment.problems, experiment.seed)
    assert frame.filter(pl.col("split") == "train").height == 1
    assert len(report.skipped_lines) == 2
    assert report.skipped_lines[0].startswith(f"{train}:2:")


def test_contamination_is_detected_across_splits():
    rows = [
        normalise_record("Same question?", "#### 1", "train", "jsonl"),
        normalise_record("  same   QUESTION? ", "#### 1", "test", "jsonl"),
        normalise_record("Other?", "#### 2", "test", "jsonl"),
    ]
    assert contamination(pl.DataFrame(rows)) == [rows[0]["problem_id"]]


@pytest.mark.parametrize("operations", [("share",), ("give",), ("lose_fraction",), ("share", "give")])
def test_generator_ends_when_only_some_operations_are_allowed(operations):
    import signal

    def too_slow(*_):
        raise TimeoutError(f"generate_problems looped with operations {operations}")

    previous = signal.signal(signal.SIGALRM, too_slow)
    signal.alarm(10)
    try:
        problems = generate_problems(30, seed=0, min_steps=2, max_steps=6, operations=operations, max_number=60)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert len(problems) == 30
    for problem in problems:
        assert reference_answer(problem.solution) == str(problem.answer)
        assert 2 <= problem.steps <= 6


def test_generator_fix_keeps_the_problems_it_made_before():
    # Recorded before the dead-end fix: the same seed still gives the same problems.
    import hashlib

    problems = generate_problems(20, 3, 2, 5)
    digest = hashlib.sha1("\n".join(p.question + p.solution for p in problems).encode()).hexdigest()
    assert digest == "09de98dd152ed016f56b7f3cc15c9defb351c6bc"


def test_near_duplicate_with_other_numbers_is_contamination():
    from trace_assets.problems.sources import near_duplicates

    test = {
        "t1": "Ava has 12 apples. She buys 3 boxes with 4 apples in each box. How many apples does she have now?",
        "t2": "A train travels 60 miles per hour for 3 hours. How far does it go?",
    }
    train = {
        "variant": "Ava has 20 apples. She buys 5 boxes with 6 apples in each box. How many apples does she have now?",
        "reworded": "ava has 12 apples!  she buys 3 boxes with 4 apples in each box - how many apples does she have now",
        "unrelated": "Ben reads 30 pages a day. How many pages does he read in 7 days?",
        "same_frame": "Ava has 12 pears. She sells 3 crates with 4 pears in each crate. How many pears are left?",
    }
    hits = {hit.train_id: hit for hit in near_duplicates(train, test)}
    assert set(hits) == {"variant", "reworded"}
    assert hits["variant"].test_id == "t1" and hits["variant"].similarity == 1.0


def test_contaminated_train_problems_are_removed_and_reported(tmp_path):
    test_question = "A shop sells 14 pens a day. How many pens does it sell in 6 days?"
    lines = [
        GOOD,
        json.dumps(
            {"question": "A shop sells 20 pens a day. How many pens does it sell in 3 days?", "answer": "20*3=60\n#### 60"}
        ),
    ]
    experiment, _ = _jsonl_experiment(tmp_path, lines)
    test_file = experiment.resolve(experiment.problems.jsonl.test)
    test_file.write_text(json.dumps({"question": test_question, "answer": "14*6=84\n#### 84"}) + "\n")
    frame, report = load_problems(experiment.problems, experiment.seed)
    assert frame.filter(pl.col("split") == "train")["question"].to_list() == ["Q one?"]
    assert [hit.similarity for hit in report.contaminated] == [1.0]
    assert report.contaminated[0].test_id == frame.filter(pl.col("split") == "test")["problem_id"][0]
    assert not contamination(frame)
