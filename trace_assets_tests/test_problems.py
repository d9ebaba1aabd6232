import json

import polars as pl
import pytest

from trace_assets.experiment import PROJECT_ROOT, load_experiment
from trace_assets.problems.sources import ProblemFileError, contamination, load_problems, normalise_record
from trace_assets.problems.synthetic import generate_problems
from trace_assets.answers import reference_answer


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
